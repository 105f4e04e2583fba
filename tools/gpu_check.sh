#!/usr/bin/env bash
# Every GPU check in one call, for the device machine (torch 2.11 + CUDA there), most important first:
#   1. GPU tests: CUDA graphs of the exact and the fused forward vs eager vs the CPU runner, a compiled
#      fused graph, no host synchronisation in a replay;
#   2. `poyo-rt bench forward` on CUDA, both configs: eager, CUDA graph (exact), fused graph, fused graph
#      compiled by inductor (default mode), fused graph with TF32, with kernel counts and errors;
#   3. the same for poyo_1.3M compiled in max-autotune-no-cudagraphs mode (slow to compile);
#   4. `poyo-rt bench e2e` on CUDA (LSL player process -> engine with CUDA graphs -> ZeroMQ), when the
#      carried wheels of tools/gpu_wheels.sh are there (run that here first, then carry ".whl").
# Run from the repo root: bash tools/gpu_check.sh  (JSON results go to $OUT when OUT is set)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
T0=$SECONDS
stamp() { echo "== [$((SECONDS - T0)) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # no install needed: torch, numpy, yaml, einops are there
# torch_brain is not on the GPU machine: the parity suite runs in CI; here GPU vs eager vs CPU.
stamp "GPU tests"
timeout 200 python3 -m pytest -q tests/test_gpu.py tests/test_static.py -p no:cacheprovider \
  2>&1 | tail -15
stamp "forward bench: exact, fused, fused compiled (default mode), fused TF32"
timeout 200 python3 -m poyo_rt.cli bench forward --device cuda --iters 500 --compile default --tf32 \
  --json "$OUT/bench_gpu.json"
stamp "forward bench: poyo_1.3M fused, compiled max-autotune-no-cudagraphs"
timeout 150 python3 -m poyo_rt.cli bench forward --device cuda --iters 500 --config poyo_1.3M \
  --compile max-autotune-no-cudagraphs --json "$OUT/bench_gpu_autotune.json"
if python3 -c "import pylsl, zmq" 2>/dev/null; then
  stamp "end to end, 60 s"
  LSLAPICFG=$PWD/poyo_rt/stream/loopback.cfg timeout 100 python3 -m poyo_rt.cli bench e2e --device cuda \
    --duration 60 --baseline-duration 0 --json "$OUT/e2e_gpu.json"
else
  echo "pylsl/pyzmq absent: e2e skipped (bash tools/gpu_wheels.sh here, then carry .whl)"
fi
stamp "done"

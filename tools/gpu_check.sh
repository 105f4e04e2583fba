#!/usr/bin/env bash
# Every GPU check in one call, for the device machine (torch 2.11 + CUDA there):
#   1. GPU tests (CUDA-graph capture vs eager vs CPU);
#   2. `poyo-rt bench forward` on CUDA: torch_brain-free rows (eager, CUDA graph) and the FLOP bound;
#   3. `poyo-rt bench e2e` on CUDA (LSL player process -> engine with CUDA graphs -> ZeroMQ), when the
#      carried wheels of tools/gpu_wheels.sh are there (run that here first, then carry ".whl").
# Run from the repo root: bash tools/gpu_check.sh  (JSON results go to $OUT when OUT is set)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # no install needed: torch, numpy, yaml, einops are there
# torch_brain is not on the GPU machine: the parity suite runs in CI; here GPU vs eager vs CPU.
timeout 240 python3 -m pytest -q tests/test_gpu.py tests/test_static.py -p no:cacheprovider 2>&1 | tail -15
timeout 180 python3 -m poyo_rt.cli bench forward --device cuda --iters 500 --json "$OUT/bench_gpu.json"
if python3 -c "import pylsl, zmq" 2>/dev/null; then
  LSLAPICFG=$PWD/poyo_rt/stream/loopback.cfg timeout 120 python3 -m poyo_rt.cli bench e2e --device cuda \
    --duration 60 --baseline-duration 0 --json "$OUT/e2e_gpu.json"
else
  echo "pylsl/pyzmq absent: e2e skipped (bash tools/gpu_wheels.sh here, then carry .whl)"
fi

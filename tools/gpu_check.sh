#!/usr/bin/env bash
# Every GPU check in one call, for the device machine (torch 2.11 + CUDA there):
#   GPU tests (CUDA-graph capture vs eager), then the forward bench with the CUDA-graph column.
# Run from the repo root: bash tools/gpu_check.sh  (writes $OUT/bench_gpu.json when OUT is set)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # no install needed: torch is there, nothing else is imported
# torch_brain is not on the GPU machine: the parity suite runs in CI; here GPU vs eager vs CPU.
python3 -m pytest -q tests/test_gpu.py tests/test_static.py -p no:cacheprovider 2>&1 | tail -15
python3 -m poyo_rt.cli bench forward --device cuda --iters 500 --json "$OUT/bench_gpu.json"

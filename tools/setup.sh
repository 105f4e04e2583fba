#!/usr/bin/env bash
# One-step set-up for poyo-rt on a fresh machine.
#   bash tools/setup.sh          install poyo-rt (and a CPU torch if no torch is installed)
#   bash tools/setup.sh --test   also install what the test suite needs (torch-brain reference, pytest)
# A machine that already has torch (e.g. a CUDA build on a GPU box) keeps it: poyo-rt only asks for torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] no torch found: installing the CPU build torch==2.13.0"
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
echo "[setup] installing poyo-rt${extras} (editable)"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".${extras}"
"$PY" -c "import torch, poyo_rt; print(f'[setup] ok: poyo_rt {poyo_rt.__version__}, torch {torch.__version__}')"

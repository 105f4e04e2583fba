#!/usr/bin/env bash
# The lent GPU machine's Python stack, mirrored here on the CPU, so that a device run (15 minutes in all) does
# not find an incompatibility first. The device has Python 3.12, torch 2.11 (CUDA 13), triton 3.6 and numpy 2.x
# (/work/.library/device/KINDS.md); CI and this machine run Python 3.11, torch 2.13 (CPU) and triton 3.9.
#
#   bash tools/device_stack.sh [VENV]     (default VENV: /tmp/poyo-device-stack)
#
# 1. a venv with Python 3.12, torch==2.11.0 (PyPI's CUDA build: ~5 GB, it runs on the CPU), triton==3.6.0,
#    numpy 2.4 and the test dependencies; poyo-rt installed editable;
# 2. the test suite without the Triton interpreter tests (the GPU tests skip);
# 3. the Triton kernels under triton 3.6's interpreter and compiled ahead of time for sm_90 by its compiler
#    (register and spill report, tests/test_triton_aot.py). Triton 3.6's interpreter needs numpy < 2.3
#    (it converts 1-element arrays to Python ints), so this step installs numpy 2.2 into the venv first.
# Needs python3.12 on PATH or under pyenv, and the package registry. LSL stays on this machine (loopback.cfg).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/poyo-device-stack}
PY312=$(command -v python3.12 || ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1 || true)
if [ -z "$PY312" ]; then echo "device_stack: no python3.12 found (PATH or ~/.pyenv)" >&2; exit 2; fi
export LSLAPICFG=$PWD/poyo_rt/stream/loopback.cfg
pins=(torch==2.11.0 triton==3.6.0)
deps=(einops pylsl pyzmq pyyaml matplotlib pytest pytest-timeout torch-brain==0.2.1 pyxdf pynwb h5py scipy)
if [ ! -x "$VENV/bin/python" ]; then
  echo "[device_stack] creating $VENV with $PY312"
  "$PY312" -m venv "$VENV"
fi
constraints=$(mktemp)
printf '%s\n' "${pins[@]}" > "$constraints"
echo "[device_stack] installing ${pins[*]} numpy==2.4.6 and the test dependencies (first run: ~5 GB)"
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$constraints" "${pins[@]}" numpy==2.4.6 "${deps[@]}"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
rm -f "$constraints"
"$VENV/bin/python" -c "import sys, torch, triton, numpy; print('[device_stack] python', sys.version.split()[0],
'torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
echo "[device_stack] test suite (without the Triton interpreter tests)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --ignore tests/test_triton_kernels.py \
  --ignore tests/test_triton_aot.py
echo "[device_stack] Triton kernels: triton 3.6's interpreter (numpy 2.2) and its sm_90 compiler"
"$VENV/bin/pip" install -q --disable-pip-version-check numpy==2.2.6
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_triton_kernels.py \
  tests/test_triton_aot.py
TRITON_INTERPRET=1 "$VENV/bin/python" -W ignore -m poyo_rt.kernels.aot --config poyo_1.3M --residuals both
TRITON_INTERPRET=1 "$VENV/bin/python" -W ignore -m poyo_rt.kernels.aot --config dim512_depth2 --residuals both
echo "[device_stack] all passed"

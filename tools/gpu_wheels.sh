#!/usr/bin/env bash
# Fetch (here, where pip reaches the registries) the wheels the device machine lacks for the LSL/ZeroMQ
# end-to-end check: pylsl (the manylinux_2_35 wheel bundles liblsl) and pyzmq, for its Python 3.12.
# They land in .whl/ (git-ignored locally); name ".whl" in the device run's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "$@" -d .whl; }
dl --platform manylinux_2_35_x86_64 pylsl==1.18.6
dl --platform manylinux_2_28_x86_64 --platform manylinux_2_26_x86_64 pyzmq==27.3.0
rm -f .whl/pylsl-*-none-any.whl
ls -la .whl

#!/usr/bin/env python3
"""Batch-1 POYO forward latency, poyo_rt against torch_brain, side by side in one process.

    python tools/bench_forward.py                 # both configs, CPU (or CUDA if present)
    python tools/bench_forward.py --quick         # a short smoke run
    python tools/bench_forward.py --json out.json

Same as ``poyo-rt bench forward``.
"""

import sys

from poyo_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "forward", *sys.argv[1:]]))

#!/usr/bin/env python3
"""End-to-end latency: LSL push -> engine -> ZeroMQ receipt, torch_brain forward as the baseline phase.

    python tools/bench_engine.py --duration 30                       # poyo_1.3M, 50 Hz, 100 units, 2,000 spikes/s
    python tools/bench_engine.py --duration 600 --baseline-duration 60 --json e2e.json   # the 10-minute run
    python tools/bench_engine.py --units 1024 --rate 100000 --baseline-duration 0         # 100k spikes/s ingest

Same as ``poyo-rt bench e2e`` (see ``poyo-rt bench --help``).
"""

import sys

from poyo_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "e2e", *sys.argv[1:]]))

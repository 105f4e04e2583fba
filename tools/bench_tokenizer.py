#!/usr/bin/env python3
"""Incremental tokenizer cost per tick against torch_brain's tokenize+collate, windows 0.5-4 s.

    python tools/bench_tokenizer.py [--ticks 3000] [--units 100] [--json out.json]

Same as ``poyo-rt bench tokenizer`` (see ``poyo-rt bench --help``).
"""

import sys

from poyo_rt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "tokenizer", *sys.argv[1:]]))

"""Benchmarks behind ``poyo-rt bench``, each with torch_brain as the same-process baseline.

* :mod:`~poyo_rt.bench.forward`: one fixed window per call (the issue's anchor table, FLOP bound),
  and per tick of a sliding stream (exact forward and encoder key/value cache);
* :mod:`~poyo_rt.bench.tokenizer`: the incremental tokenizer against re-tokenizing each window;
* :mod:`~poyo_rt.bench.e2e`: LSL push -> engine -> ZeroMQ receipt with real processes, plus ingest
  accounting (pushed = taken in, nothing dropped).

Every benchmark prints medians, p99 and ratios against its baseline and can write JSON. Import the
modules themselves (they import torch; this file imports nothing, so ``poyo-rt --help`` stays fast).
"""

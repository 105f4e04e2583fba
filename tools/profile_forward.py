#!/usr/bin/env python3
"""Where one batch-1 POYO forward spends its time on the CPU (torch.profiler, ops by self time).

    python tools/profile_forward.py                       # poyo_1.3M, 1 thread, 2,200 tokens
    python tools/profile_forward.py --config dim512_depth2 --threads 2
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model
from poyo_rt.model.static import static_forward

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--config", default="poyo_1.3M", choices=sorted(BENCH_CONFIGS))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--iters", type=int, default=10)
args = ap.parse_args()
torch.set_num_threads(args.threads)
model = build_model(BENCH_CONFIGS[args.config], n_units=100)
buf = bench_inputs(model, n_spikes=2000, device=torch.device("cpu"))
with torch.inference_mode():
    for _ in range(5):
        static_forward(model, buf)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.iters):
            static_forward(model, buf)
print(f"{args.config}, {args.threads} thread(s), {args.iters} forwards (divide totals by {args.iters}):")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

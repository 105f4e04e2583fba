#!/usr/bin/env python3
"""Where one batch-1 POYO forward spends its time on the CPU: torch.profiler ops by self time, then wall
time per block (module hooks; "rest" = encoder attention, rotations, embeddings).

    python tools/profile_forward.py                       # poyo_1.3M, exact forward, 1 thread, 2,200 tokens
    python tools/profile_forward.py --kv-cache            # the per-tick forward with the encoder key/value cache
    python tools/profile_forward.py --config dim512_depth2 --threads 2
"""

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model
from poyo_rt.model.kvcache import EncoderKVCache
from poyo_rt.model.static import static_forward

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--config", default="poyo_1.3M", choices=sorted(BENCH_CONFIGS))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--iters", type=int, default=10)
ap.add_argument("--kv-cache", action="store_true", help="profile the cached forward (keys/values already in the cache)")
args = ap.parse_args()
torch.set_num_threads(args.threads)
model = build_model(BENCH_CONFIGS[args.config], n_units=100)
buf = bench_inputs(model, n_spikes=2000, device=torch.device("cpu"))
if args.kv_cache:
    n = int(buf.input_mask.sum())
    cache = EncoderKVCache(model, buf.input_mask.shape[1], buf.latent_index[0].numpy())
    cache.update(buf.input_unit_index[0].numpy(), buf.input_token_type[0].numpy(), buf.input_timestamps[0].numpy(), n)

    def forward():
        return cache.forward(buf.latent_timestamps, buf.output_session_index, buf.output_timestamps)
else:
    def forward():
        return static_forward(model, buf)

with torch.inference_mode():
    for _ in range(5):
        forward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.iters):
            forward()
what = "cached forward" if args.kv_cache else "exact forward"
print(f"{args.config}, {what}, {args.threads} thread(s), {args.iters} forwards (divide totals by {args.iters}):")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

# wall time per block, with forward hooks (no profiler overhead)
blocks = {"enc_ffn": model.enc_ffn, "dec (attention + ffn)": [model.dec_atn, model.dec_ffn]}
for i, (attn, ffn) in enumerate(model.proc_layers):
    blocks[f"self-attention x{len(model.proc_layers)}"] = blocks.get(f"self-attention x{len(model.proc_layers)}", []) + [attn]
    blocks[f"ffn x{len(model.proc_layers)}"] = blocks.get(f"ffn x{len(model.proc_layers)}", []) + [ffn]
spent = defaultdict(float)
started = {}
for label, mods in blocks.items():
    for mod in mods if isinstance(mods, list) else [mods]:
        mod.register_forward_pre_hook(lambda m, a: started.__setitem__(id(m), time.perf_counter()))
        mod.register_forward_hook(lambda m, a, o, label=label: spent.__setitem__(label, spent[label] + time.perf_counter() - started[id(m)]))
totals = []
with torch.inference_mode():
    for _ in range(args.iters * 5):
        t0 = time.perf_counter()
        forward()
        totals.append(time.perf_counter() - t0)
k = args.iters * 5
total = float(np.sum(totals)) / k * 1e3
print(f"wall time per forward, {k} forwards: {total:.2f} ms (median {np.median(totals) * 1e3:.2f})")
for label, t in spent.items():
    print(f"  {label:<24} {t / k * 1e3:7.2f} ms")
print(f"  {'rest':<24} {total - sum(spent.values()) / k * 1e3:7.2f} ms  (encoder attention, rotations, embeddings, readout)")

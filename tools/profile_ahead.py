#!/usr/bin/env python3
"""What stays on the tick's path when the next tick's encoder attention was prepared between ticks
(EncoderKVCache.prepare), stage by stage, on a 2,000 spikes/s stream at 50 Hz, medians in µs:

    python tools/profile_ahead.py                  # poyo_1.3M, 1 thread, 200 ticks
    python tools/profile_ahead.py --threads 2

Rows: the whole cached forward (update + forward) with and without the preparation, on the same ticks (two
caches, alternating order), and the update (recomputing the rewritten slots) of each; then the prepared path's
stages, repeated on the state its forward saw: matching the window's tokens against the prepared set (the
slots left to attend), gathering their keys/values, their attention, the merge; the preparation itself.
"""

import argparse
import time

import numpy as np
import torch

from poyo_rt.bench.common import poisson_spikes
from poyo_rt.bench.forward import BENCH_CONFIGS, build_model
from poyo_rt.model.kvcache import EncoderKVCache, _attention_lse, _merge
from poyo_rt.runtime.runner import trimmed_views
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--config", default="poyo_1.3M", choices=sorted(BENCH_CONFIGS))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--ticks", type=int, default=200)
args = ap.parse_args()
torch.set_num_threads(args.threads)
model = build_model(BENCH_CONFIGS[args.config], n_units=100)
tok = IncrementalTokenizer(window_s=model.sequence_length, latent_step_s=model.latent_step,
                           num_latents_per_step=model.num_latents_per_step, unit_vocab_index=np.arange(1, 101),
                           session_vocab_index=1, max_spikes=3256)
buf = SpikeBuffer(capacity=1 << 16, n_units=100)
plain = EncoderKVCache(model, tok.n_in, tok.latent_index)
ahead = EncoderKVCache(model, tok.n_in, tok.latent_index)
t0, warmup = 10_000.0, 20
times, units = poisson_spikes(np.random.default_rng(0), 2000.0, 2.0 + args.ticks / 50, 100, t0=t0)
arrays, sent, spent = tok.arrays(), 0, {}


def timed(stage, fn, k):
    a = time.perf_counter_ns()
    out = fn()
    if k >= warmup:
        spent.setdefault(stage, []).append((time.perf_counter_ns() - a) / 1e3)
    return out


with torch.inference_mode():
    for k in range(args.ticks):
        t_end = t0 + model.sequence_length + k / 50
        upto = int(np.searchsorted(times, t_end))
        buf.append(times[sent:upto], units[sent:upto])
        sent = upto
        info = tok.update(t_end, buf)
        v = trimmed_views(arrays, -(-info.n_input_tokens // 8) * 8)
        tokens = (arrays["input_unit_index"][0], arrays["input_token_type"][0], arrays["input_timestamps"][0],
                  info.n_input_tokens)
        prepared = ahead._ahead
        forwards = [("forward, cache", plain), ("forward, cache + prepared", ahead)]
        for label, cache in forwards if k % 2 else forwards[::-1]:  # each: update, then forward
            update = "update, cache" + (" + prepared" if cache is ahead else "")
            timed(label, lambda: (timed(update, lambda: cache.update(*tokens), k),
                                  cache.forward(v["latent_timestamps"], v["output_session_index"],
                                                v["output_timestamps"])), k)
        if prepared is not None:  # the prepared path's stages again, on the state its forward saw
            rest = torch.from_numpy(timed("matching (the rest's slots)", lambda: ahead._unprepared_slots(prepared), k))
            kv = timed("gather the rest", lambda: (ahead.k.index_select(2, rest), ahead.v.index_select(2, rest)), k)
            part = timed("attention over the rest", lambda: _attention_lse(prepared.q, *kv), k)
            timed("merge", lambda: _merge(prepared.out, prepared.lse, *part), k)
            if k >= warmup:
                spent.setdefault("tokens in the rest", []).append(rest.shape[0])
        t_next = t0 + model.sequence_length + (k + 1) / 50  # as the next tick computes it: the same bits
        timed("prepare (between ticks)", lambda: ahead.prepare(*tok.window_times_at(t_next)), k)
print(f"{args.config}, {args.threads} thread(s), medians over {args.ticks - warmup} ticks; the prepared part "
      f"used by {ahead.counters['prepared_used']} of {args.ticks} ticks:")
for stage, values in spent.items():
    unit = "" if stage == "tokens in the rest" else " µs"
    print(f"  {stage:<28} {np.median(values):9.1f}{unit}")

#!/usr/bin/env python3
"""One rotary rotation of a (B, heads, N, H) strided attention view: torch_brain's form against poyo_rt's.

    python tools/bench_rotary.py                 # 1 thread, (1, 2, 2200, 64), as poyo_1.3M's encoder keys
    python tools/bench_rotary.py --tokens 512 --heads 8 --threads 2

Prints median and p99 µs per rotation and the ratio against torch_brain's ``RotaryTimeEmbedding.rotate``
(unbind / neg / stack, then two multiplies and an add), all in one process; then the rotation table itself
(cos + i sin of the float64 angles, one per token and frequency): ``torch.polar`` against ``rotary.cis``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from poyo_rt.model.rotary import RotaryTimeEmbedding, apply_rotation, cis, rotary_angles, rotary_embedding, rotate


def timeit(fn, iters: int) -> np.ndarray:
    for _ in range(20):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2200)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    emb = RotaryTimeEmbedding(args.head_dim, args.head_dim // 2, 1e-4, 2.0627)
    t = torch.rand(1, args.tokens, dtype=torch.float64) * 100
    x = torch.randn(1, args.tokens, args.heads, args.head_dim).transpose(1, 2)  # (B, h, N, H), strided
    raw = rotary_embedding(t, emb.omega)
    rot = emb.rotation(t)
    with torch.inference_mode():
        base = timeit(lambda: rotate(x, raw, unsqueeze_dim=1), args.iters)
        fast = timeit(lambda: apply_rotation(x, rot, unsqueeze_dim=1), args.iters)
        diff = (rotate(x, raw, 1) - apply_rotation(x, rot, 1)).abs().max().item()
    print(f"rotation of {tuple(x.shape)} float32, {args.threads} thread(s), {args.iters} calls")
    for name, s in (("torch_brain rotate (stack)", base), ("poyo_rt complex multiply", fast)):
        print(f"  {name:<28} median {np.median(s):8.1f} µs  p99 {np.percentile(s, 99):8.1f} µs  "
              f"x baseline {np.median(base) / np.median(s):5.2f}")
    print(f"  max |difference| = {diff:.2e}")
    angles = rotary_angles(t[0], emb.omega)  # (N, H/2) float64
    with torch.inference_mode():
        polar = timeit(lambda: torch.polar(torch.ones_like(angles), angles).to(torch.complex64), args.iters)
        vectorised = timeit(lambda: cis(angles), args.iters)
        same = torch.equal(torch.polar(torch.ones_like(angles), angles).to(torch.complex64), cis(angles))
    print(f"rotation table of {tuple(angles.shape)} float64 angles")
    for name, s in (("torch.polar", polar), ("rotary.cis (cos, sin)", vectorised)):
        print(f"  {name:<28} median {np.median(s):8.1f} µs  p99 {np.percentile(s, 99):8.1f} µs  "
              f"x baseline {np.median(polar) / np.median(s):5.2f}")
    print(f"  bit for bit equal: {same}")


if __name__ == "__main__":
    main()

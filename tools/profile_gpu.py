#!/usr/bin/env python3
"""Where a CUDA forward's time goes, kernel by kernel (the GPU twin of tools/profile_forward.py).

For each config (batch 1, 100 units, 2,000 spikes = 2,200 input tokens, padded to each --slots size as a
padding bucket would): the Triton forward (poyo_rt/kernels) in each --precision, and the fused forward as
torch operators, run eager under torch.profiler: GPU time per kernel (mean over --iters calls), sorted;
then the same forward captured in a CUDA graph, timed over replays (CUDA events, median and p99): the
difference between the graph's time and the sum of its kernels is what the launches and the gaps between
kernels cost.

    python tools/profile_gpu.py                                   # both configs, tf32x3 and tf32, 2,200 slots
    python tools/profile_gpu.py --config poyo_1.3M --slots 2200 --slots 4096 --json /tmp/profile_gpu.json

Needs a CUDA device and Triton (the device machine: tools/gpu_check.sh runs it).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model, fused_inputs
from poyo_rt.model.fused import FusedPOYO
from poyo_rt.model.static import allocate_static_inputs
from poyo_rt.runtime.cudagraph import GraphedForward


def padded_packed(model, fused: FusedPOYO, n_slots: int) -> torch.Tensor:
    """The bench window (2,200 tokens) in a packed input of ``n_slots`` token slots (the rest padding)."""
    window = bench_inputs(model, n_spikes=2000, device=torch.device("cuda"))
    n_real = int(window.input_mask.sum())
    if n_slots < n_real:
        raise SystemExit(f"--slots {n_slots} is fewer than the window's {n_real} tokens")
    buf = allocate_static_inputs(model, n_input=n_slots, n_output=1, device="cuda")
    for key in ("input_unit_index", "input_timestamps", "input_token_type", "input_mask"):
        getattr(buf, key)[:, :n_real] = getattr(window, key)[:, :n_real]
    for key in ("latent_timestamps", "output_session_index", "output_timestamps"):
        getattr(buf, key).copy_(getattr(window, key))
    return fused_inputs(fused, buf)


def kernel_times(fn, iters: int) -> dict[str, dict[str, float]]:
    """Per kernel name: launches a call and GPU µs a call (mean over ``iters`` eager calls)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    per = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.lower().startswith(("memcpy", "memset")):
            per[e.name][0] += 1
            per[e.name][1] += e.device_time
    return {name: {"launches": n / iters, "us": t / iters} for name, (n, t) in per.items()}


def graph_times(graph: GraphedForward, iters: int) -> tuple[float, float]:
    """(median, p99) µs of one replay, CUDA events around each."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", choices=sorted(BENCH_CONFIGS), help="repeatable (default: both)")
    ap.add_argument("--precision", action="append", choices=("tf32x3", "tf32", "ieee"),
                    help="the Triton forward's (repeatable; default: tf32x3 and tf32)")
    ap.add_argument("--slots", action="append", type=int, help="input token slots (repeatable; default 2200)")
    ap.add_argument("--iters", type=int, default=50, help="profiled eager calls")
    ap.add_argument("--replays", type=int, default=500, help="timed graph replays")
    ap.add_argument("--top", type=int, default=12, help="kernels listed per forward")
    ap.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    from poyo_rt.kernels import TritonPOYO

    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    for name in args.config or ["poyo_1.3M", "dim512_depth2"]:
        model = build_model(BENCH_CONFIGS[name], n_units=100).cuda()
        fused = FusedPOYO(model, n_output=1)
        for n_slots in args.slots or [2200]:
            packed = padded_packed(model, fused, n_slots)
            forwards = {f"triton {p}": TritonPOYO(fused, precision=p) for p in args.precision or ["tf32x3", "tf32"]}
            forwards["fused torch ops"] = fused
            for label, forward in forwards.items():
                with torch.inference_mode():
                    forward(packed)  # compiles the Triton kernels
                    kernels = kernel_times(lambda: forward(packed), args.iters)
                    graph = GraphedForward(forward, packed, call=lambda m, x: m(x))
                    p50, p99 = graph_times(graph, args.replays)
                busy = sum(k["us"] for k in kernels.values())
                launches = sum(k["launches"] for k in kernels.values())
                print(f"\n== {name}, {n_slots} slots, {label}: graph replay p50 {p50:.1f} µs, p99 {p99:.1f} µs; "
                      f"{launches:.0f} kernels, {busy:.1f} µs of kernel time (the rest, {p50 - busy:.1f} µs: "
                      f"launches and gaps)")
                print(f"   {'µs a call':>9} {'share':>6} {'launches':>8}  kernel")
                for kname, k in sorted(kernels.items(), key=lambda kv: -kv[1]["us"])[:args.top]:
                    print(f"   {k['us']:9.1f} {k['us'] / busy:6.1%} {k['launches']:8.0f}  {kname[:90]}")
                results.append({"config": name, "slots": n_slots, "forward": label, "graph_p50_us": p50,
                                "graph_p99_us": p99, "kernel_us": busy, "kernels": kernels})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}, f,
                      indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

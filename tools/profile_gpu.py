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
    python tools/profile_gpu.py --sweep              # the Triton forward's tunings against each other

--sweep times the Triton forward (tf32x3) in tunings of ``TritonPOYO``, one varied at a time from the
defaults: ``encoder_programs`` (how many programs the encoder attention aims at: fewer = longer key splits and
fewer partials for _combine_proj to merge), ``ffn_block_f`` (FFN hidden units a program: fewer = more
programs, and in the split layout more pieces for the next kernels to add) and, for models in the summed
residual layout (dim 512), ``summed_block_m`` (rows a program of its projection and FFN kernels: fewer = more
programs on the GPU's 132 SMs, each weight tile re-read more often), and ``proc_warps`` (warps a program of
the latents' attention and the split layout's projection and FFN kernels, which use ~250 of 255 registers a
thread at 4), and on 8 warps ``proc_width`` 64 (those kernels take a dim-64 row in one chunk), and ``unroll``
(the latent and output kernels' loops of up to 4 steps as straight code: ~40 % fewer instructions a thread on
sm_90 for poyo_1.3M, ``python -m poyo_rt.kernels.aot --unroll``), alone, with 8 warps, and with ``precision``
"tf32x3i" (the three TF32 products with the operands split in the kernel: ~14 % fewer instructions again),
and with ``swap_pairs`` (rotation partners swapped in registers: one projection product where there were two),
and all three on 8 warps (spill-free under the device's triton 3.6, where 4-warp unrolled builds spill); each
row with its graph replay time, its ratio to the default tuning's and its error against the exact (fused,
fp32) forward.

Needs a CUDA device and Triton (the device machine: tools/gpu_check.sh runs it).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from poyo_rt.bench.common import cuda_kernel_events, replay_times
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
    per = defaultdict(lambda: [0, 0.0])
    for e in cuda_kernel_events(fn, iters):
        per[e.name][0] += 1
        per[e.name][1] += e.device_time
    return {name: {"launches": n / iters, "us": t / iters} for name, (n, t) in per.items()}


def sweep(name: str, replays: int) -> list[dict]:
    """Graph replay times of the Triton forward in each tuning (see the module docstring), one config."""
    from poyo_rt.kernels import TritonPOYO
    from poyo_rt.kernels.triton_poyo import (DEFAULT_PRECISION, ENC_TARGET_PROGRAMS, FFN_BLOCK_F, MAX_WIDTH_BLOCK,
                                             PROC_WARPS, SUMMED_BLOCK_M, residual_layout)

    model = build_model(BENCH_CONFIGS[name], n_units=100).cuda()
    fused = FusedPOYO(model, n_output=1)
    packed = padded_packed(model, fused, 2200)
    with torch.inference_mode():
        exact = fused(packed)
    layout = residual_layout(fused)
    defaults = {"encoder_programs": ENC_TARGET_PROGRAMS, "summed_block_m": SUMMED_BLOCK_M, "ffn_block_f": FFN_BLOCK_F,
                "proc_warps": PROC_WARPS, "proc_width": MAX_WIDTH_BLOCK, "unroll": False,
                "precision": DEFAULT_PRECISION, "swap_pairs": False}
    values = {"encoder_programs": [16, 32, 64, 128, 256], "ffn_block_f": [16, 32, 64], "proc_warps": [4, 8],
              "summed_block_m": [16, 32, 64] if layout == "summed" else [], "unroll": [False, True]}
    tunings = [dict(defaults)] + [{**defaults, key: v} for key, vs in values.items() for v in vs if v != defaults[key]]
    tunings.append({**defaults, "proc_warps": 8, "proc_width": 64})  # 64 columns at once need 8 warps
    tunings += [{**defaults, "unroll": True, "proc_warps": 8},  # unrolled, with the 8 warps' registers
                {**defaults, "unroll": True, "proc_warps": 8, "proc_width": 64},
                {**defaults, "unroll": True, "precision": "tf32x3i"},
                {**defaults, "unroll": True, "swap_pairs": True},
                {**defaults, "unroll": True, "precision": "tf32x3i", "swap_pairs": True},
                # the same on 8 warps: with triton 3.6 (the device's) only the 8-warp unrolled builds are free of
                # spills, and these two compile to the fewest instructions (docs/performance.md, sixteenth session)
                {**defaults, "unroll": True, "precision": "tf32x3i", "swap_pairs": True, "proc_warps": 8},
                {**defaults, "unroll": True, "precision": "tf32x3i", "swap_pairs": True, "proc_warps": 8,
                 "proc_width": 64}]
    rows = []
    for tuning in tunings:
        label = " ".join(f"{k}={v}" for k, v in tuning.items())
        try:
            forward = TritonPOYO(fused, **tuning)
            with torch.inference_mode():
                err = float((forward(packed) - exact).abs().max())
                graph = GraphedForward(forward, packed, call=lambda m, x: m(x))
                p50, p99 = replay_times(graph, replays)
        except Exception as exc:  # a tuning that does not compile here is reported, the others go on
            print(f"   {label}: unavailable ({type(exc).__name__}: {exc})")
            continue
        rows.append({"config": name, **tuning, "residuals": forward.residuals, "p50_us": p50, "p99_us": p99,
                     "max_abs_err": err, "default": tuning == defaults})
    base = next((r["p50_us"] for r in rows if r["default"]), float("nan"))
    print(f"\n== sweep: {name}, 2200 slots, Triton ({layout} residuals by default), graph replay")
    print(f"   {'encoder_programs':>16} {'ffn_block_f':>11} {'summed_block_m':>14} {'proc_warps':>10} "
          f"{'proc_width':>10} {'unroll':>6} {'precision':>9} {'swap':>5} {'residuals':>9} {'p50 µs':>8} {'p99 µs':>8} "
          f"{'x default':>9} {'max |err|':>9}")
    for r in sorted(rows, key=lambda r: r["p50_us"]):
        print(f"   {r['encoder_programs']:16d} {r['ffn_block_f']:11d} {r['summed_block_m']:14d} {r['proc_warps']:10d} "
              f"{r['proc_width']:10d} {str(r['unroll']):>6} {r['precision']:>9} {str(r['swap_pairs']):>5} "
              f"{r['residuals']:>9} "
              f"{r['p50_us']:8.1f} {r['p99_us']:8.1f} {base / r['p50_us']:9.2f} {r['max_abs_err']:9.1e}"
              + ("  (default)" if r["default"] else ""))
    return rows


def write_json(path: str, key: str, rows: list[dict]) -> None:
    """The rows under ``key``, with the device and torch version."""
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, key: rows}, f, indent=1)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", choices=sorted(BENCH_CONFIGS), help="repeatable (default: both)")
    ap.add_argument("--precision", action="append", choices=("tf32x3", "tf32", "ieee", "tf32x3i"),
                    help="the Triton forward's (repeatable; default: tf32x3 and tf32)")
    ap.add_argument("--slots", action="append", type=int, help="input token slots (repeatable; default 2200)")
    ap.add_argument("--iters", type=int, default=50, help="profiled eager calls")
    ap.add_argument("--replays", type=int, default=500, help="timed graph replays")
    ap.add_argument("--top", type=int, default=12, help="kernels listed per forward")
    ap.add_argument("--sweep", action="store_true", help="time the Triton forward's tunings instead (see above)")
    ap.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    from poyo_rt.kernels import TritonPOYO

    torch.backends.cuda.matmul.allow_tf32 = False
    configs = args.config or ["poyo_1.3M", "dim512_depth2"]
    if args.sweep:
        rows = [r for name in configs for r in sweep(name, args.replays)]
        if args.json:
            write_json(args.json, "sweep", rows)
        return 0
    results = []
    for name in configs:
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
                    p50, p99 = replay_times(graph, args.replays)
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
        write_json(args.json, "results", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

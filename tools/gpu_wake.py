"""Where the CUDA runner's host time goes between ticks: packing, queueing, waiting, and what the GPU cannot see.

On the H200 (twelfth session, ``poyo-rt bench e2e --device cuda``) the runner's call took ~680 µs of host time a
tick, while the GPU's own events from the input copy to the output copy spanned ~407 µs (h2d 64, forward 337,
d2h 6) and packing the window takes ~10 µs in a hot loop. This tool calls the real CUDA runner on the bench
window (poyo_1.3M, 100 units, 2,000 spikes: 2,200 tokens) at a fixed cadence, without LSL, tokenizer or
ZeroMQ, so that only the runner and the GPU remain, in conditions run in alternating rounds (the machine's
drift hits each alike):

- ``gap G``: one call every G ms (``0``: back to back, everything hot; ``20``: the engine's 50 Hz), the host
  sleeping to 1 ms before each call and spinning the rest, as the engine's loop does;
- ``nudge N``: a tiny kernel queued N µs before each call (does the GPU, idle since the last call, start the
  call's work late?).

Per condition it prints medians and p99 (µs) of the host's ``pack``, ``launch`` and ``sync``
(:class:`~poyo_rt.runtime.runner.ForwardResult.host_us`), the GPU events' span (h2d + forward + d2h), the
``unseen`` part (launch + sync - span: host time in the call that no GPU event covers) and the whole call.

Two ways of calling (``--variant``, both by default on CUDA): ``runner``, the runner as the engine calls it
(a copy in, the graph, a copy out, four timing events: seven calls into torch a tick), and ``copies``, a
second runner with ``graph_copies=True`` (its graphs copy the staging buffer in and the output out: a replay
between two timing events, three calls into torch). The twelfth session's runs measured ``copies`` as an
experiment the tool built itself (named ``inline`` in their JSON), the same calls before the runner had the
option.

    python tools/gpu_wake.py                         # gaps 0 and 20 ms, nudges none, 1000 and 200 µs; both ways
    python tools/gpu_wake.py --device cpu --ticks 20  # the same loop on the CPU runner (a smoke test)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np
import torch

from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model
from poyo_rt.runtime.runner import Runner

COLUMNS = ("pack", "launch", "sync", "span", "unseen", "call")


def window_arrays(model, n_spikes: int) -> tuple[dict[str, np.ndarray], int]:
    """The bench window as the tokenizer's arrays (real tokens compact from slot 0) and its token count."""
    inputs = bench_inputs(model, n_spikes=n_spikes, device=torch.device("cpu"))
    arrays = {k: v.numpy().copy() for k, v in inputs.as_kwargs().items()}
    return arrays, int(arrays["input_mask"].sum())


def parse_condition(text: str) -> tuple[float, float]:
    """``"GAP_MS:NUDGE_US"`` -> (gap ms, nudge µs); NUDGE 0 = none."""
    try:
        gap, nudge = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"condition {text!r}: expected GAP_MS:NUDGE_US, e.g. 20:0") from None
    if gap < 0 or nudge < 0 or (gap > 0 and nudge >= gap * 1e3):
        raise argparse.ArgumentTypeError(f"condition {text!r}: gap and nudge >= 0, nudge shorter than the gap")
    return gap, nudge


def run_round(runner: Runner, arrays: dict, n: int, gap_ms: float, nudge_us: float, ticks: int,
              scratch: torch.Tensor) -> dict[str, list[float]]:
    """``ticks`` runner calls at ``gap_ms`` apart; per call the columns of :data:`COLUMNS` (µs)."""
    rows: dict[str, list[float]] = {c: [] for c in COLUMNS}
    deadline = time.perf_counter()
    for _ in range(ticks):
        deadline += gap_ms / 1e3
        if gap_ms > 0:
            nudge_at = deadline - nudge_us / 1e6
            time.sleep(max(0.0, min(nudge_at, deadline - 1e-3) - time.perf_counter()))
            if nudge_us > 0:
                while time.perf_counter() < nudge_at:
                    pass
                scratch.add_(1.0)  # one tiny kernel on the runner's stream (on the CPU: a tiny op)
            while time.perf_counter() < deadline:
                pass
        t0 = time.perf_counter_ns()
        res = runner.run(arrays, n)
        call_us = (time.perf_counter_ns() - t0) / 1e3
        span = res.forward_us + sum(t for t in (res.h2d_us, res.d2h_us) if np.isfinite(t))  # NaN: in forward
        host = {k: res.host_us.get(k, float("nan")) for k in ("pack", "launch", "sync")}
        for key, value in (*host.items(), ("span", span), ("unseen", host["launch"] + host["sync"] - span),
                           ("call", call_us)):
            rows[key].append(value)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="poyo_1.3M", choices=sorted(BENCH_CONFIGS))
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (the same loop, for a smoke test)")
    ap.add_argument("--condition", action="append", type=parse_condition, metavar="GAP_MS:NUDGE_US",
                    help="repeatable; default 0:0 20:0 20:1000 20:200")
    ap.add_argument("--ticks", type=int, default=150, help="calls a condition a round (default 150)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--variant", action="append", choices=("runner", "copies"),
                    help="repeatable; default both on CUDA (see above), runner on the CPU")
    ap.add_argument("--json", help="write the per-condition summaries here")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_wake: no CUDA device here (use --device cpu for the same loop on the CPU runner)",
              file=sys.stderr)
        return 2
    if args.ticks < 1 or args.rounds < 1:
        ap.error("--ticks and --rounds must be >= 1")
    conditions = args.condition or [(0.0, 0.0), (20.0, 0.0), (20.0, 1000.0), (20.0, 200.0)]
    model = build_model(BENCH_CONFIGS[args.config], n_units=100)
    arrays, n = window_arrays(model, 2000)
    runner = Runner(model, capacity=arrays["input_mask"].shape[1], n_outputs=1, device=args.device,
                    fused=True if args.device == "cpu" else None)
    scratch = torch.zeros(1, device=runner.device)
    callers: dict[str, Runner] = {"runner": runner}
    variants = args.variant or (["runner", "copies"] if runner.is_cuda else ["runner"])
    if "copies" in variants:
        if not runner.is_cuda:
            ap.error("--variant copies: the copies in the graphs are an option of the CUDA runner")
        callers["copies"] = Runner(model, capacity=arrays["input_mask"].shape[1], n_outputs=1, device=args.device,
                                   graph_copies=True)
        if not callers["copies"].graph_copies:  # the capture refused the copies (the runner warned)
            del callers["copies"]
    callers = {v: callers[v] for v in variants if v in callers}
    for caller in callers.values():
        for _ in range(20):  # warm-up: every path compiled and run
            caller.run(arrays, n)
    if "copies" in callers:  # the option decodes what the default decodes
        diff = np.abs(callers["copies"].run(arrays, n).values - runner.run(arrays, n).values).max()
        print(f"copies vs runner: max |difference| {diff:.1e}")
    print(f"{args.config}, {n} tokens, {args.device} ({getattr(runner, 'kernels', '')} kernels); "
          f"{args.rounds} rounds x {args.ticks} calls a condition")
    cells = list(itertools.product(callers, conditions))
    pooled: dict[tuple, dict[str, list[float]]] = {c: {k: [] for k in COLUMNS} for c in cells}
    for _round, (variant, cond) in itertools.product(range(args.rounds), cells):
        rows = run_round(callers[variant], arrays, n, *cond, args.ticks, scratch)
        for key, values in rows.items():
            pooled[variant, cond][key].extend(values)
    head = f"{'variant':>8} {'gap ms':>7} {'nudge µs':>9}" + "".join(f"{c + ' p50/p99':>18}" for c in COLUMNS)
    print(head)
    summary = []
    for (variant, (gap, nudge)), rows in pooled.items():
        stats = {k: (float(np.median(v)), float(np.percentile(v, 99))) for k, v in rows.items()}
        print(f"{variant:>8} {gap:7.1f} {nudge:9.0f}"
              + "".join(f"{p50:11.1f}/{p99:<6.1f}" for p50, p99 in stats.values()))
        summary.append({"variant": variant, "gap_ms": gap, "nudge_us": nudge, "calls": len(rows["call"]),
                        # NaN (CPU: no host split) -> null
                        **{f"{k}_us": {q: v if np.isfinite(v) else None for q, v in zip(("p50", "p99"), s)}
                           for k, s in stats.items()}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "device": str(runner.device), "tokens": n,
                       "gpu": torch.cuda.get_device_name() if runner.device.type == "cuda" else None,
                       "conditions": summary}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

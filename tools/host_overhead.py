"""The host's share of a tick, with and without the engine's pre-tick (early tokenizing, warm code).

On a GPU the forward takes ~0.3 ms and the rest of a tick is Python on the host: pull, buffer,
tokenize, packing the window for the device, publishing. Those stages run 5-20x slower at the tick than in
a hot loop, because the loop sleeps most of each period and the CPU's caches lose their code and data
meanwhile. This tool measures that share on any machine: the real engine, LSL stream (a player process)
and ZeroMQ subscriber (a process) of ``poyo-rt bench e2e``, with the forward replaced by what the CUDA
runner does on the host before a graph replay: packing the window into the staging vector of its padding
bucket (:class:`HostOnlyRunner`; it publishes zeros). Variants run in alternating rounds on the same stream,
so the machine's drifting load hits each alike; the table gives medians and p99 per stage and the ratio of
each variant's tick p99 to the first variant's.

    LSLAPICFG=../shared/lsl/loopback.cfg python tools/host_overhead.py --rounds 3 --seconds 20

``--forward`` keeps the engine's real CPU forward (the key/value cache on one thread) instead, to see what
the pre-tick does for a CPU tick (the forward stage then includes the cache's update of the tick's keys and
values, which the pre-tick starts early). ``--device cuda`` runs the real CUDA runner (its graphs, copies
and waits), on a GPU machine:

    LSLAPICFG=poyo_rt/stream/loopback.cfg python tools/host_overhead.py --device cuda --rounds 3 --seconds 15 \
        --variant 1:on --variant 1:on:copies --variant 1:on:replay --variant 1:on:copies:replay

Variants (``--variant SPIN_MS:PRE_TICK[:ipc][:pin][:copies][:replay|:launch][:overlap][:rspin]``, repeatable):
default ``0.5:off`` (the loop of the seventh session: spin 0.5 ms, pulling), ``1:off`` (a longer spin alone)
and ``1:on`` (the default now). Options:

- ``:ipc`` publishes on an ``ipc://`` endpoint instead of ``tcp://127.0.0.1``;
- ``:pin`` pins the engine's loop to the last core of this process (``engine.cpu_affinity``) and the player and
  subscriber processes to the others, as ``poyo-rt bench e2e --cpu-affinity`` does (unpinned variants move
  them back to every core);
- CUDA only: ``:copies`` captures the copies in the graphs (``model.graph_copies``); ``:replay`` makes the
  pre-tick run the whole call on the early window (``model.cuda_warm: replay``); ``:launch`` makes it launch
  the tick's graph ahead behind a doorbell that the tick rings (``model.cuda_warm: launch``); ``:overlap``
  warms the publisher while the GPU runs the forward (``engine.warm_during_forward``);
- any device: ``:rspin`` makes the subscriber busy-poll 0.5 ms around each tick's expected arrival
  (``Subscriber(spin_s=...)``; the engine is unchanged).

The last columns split tick -> receipt at the message's send stamp: the engine's part (tick -> send) and
ZeroMQ's with the subscriber's wake-up (send -> receipt).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from typing import NamedTuple

import numpy as np
import torch

from poyo_rt.bench.e2e import Player, e2e_config, run_phase
from poyo_rt.bench.forward import BENCH_CONFIGS, build_model
from poyo_rt.model.fused import PackedLayout
from poyo_rt.runtime.runner import CUDA_BUCKET_GROWTH, ForwardResult, Runner, default_buckets
from poyo_rt.runtime.threads import allowed_cores
from poyo_rt.stream import lsl
from poyo_rt.stream.tokenizer import bucket_for

RECEIVER_SPIN_MS = 0.5  # :rspin's Subscriber spin_s (ms)
STAGES = ("start", "pull", "buffer", "tokenize", "forward", "runner", "publish", "tick")
CUDA_STAGES = ("pack", "launch", "overlap", "sync")  # the CUDA runner's host split of its call (--device cuda)


class Variant(NamedTuple):
    """One way of running the loop (see the module docstring)."""

    spin_ms: float
    pre_tick: bool
    transport: str = "tcp"
    pin: bool = False
    copies: bool = False
    replay: bool = False
    overlap: bool = False
    rspin: bool = False
    launch: bool = False

    def _options(self) -> list[tuple[str, str]]:
        """The options switched on, as (name in ``--variant``, words in the label)."""
        named = (("pin", "pinned", self.pin), ("copies", "copies in graphs", self.copies),
                 ("replay", "warm replay", self.replay), ("overlap", "warm during forward", self.overlap),
                 ("rspin", f"subscriber spinning {RECEIVER_SPIN_MS:g} ms", self.rspin),
                 ("launch", "launched ahead", self.launch))
        return [(name, words) for name, words, on in named if on]

    def label(self) -> str:
        extras = [self.transport] + [words for _, words in self._options()]
        return f"spin {self.spin_ms:g} ms, pre-tick {'on' if self.pre_tick else 'off'}, {', '.join(extras)}"

    def key(self) -> str:
        return ":".join([f"{self.spin_ms:g}", "on" if self.pre_tick else "off", self.transport]
                        + [name for name, _ in self._options()])


class HostOnlyRunner:
    """The CUDA runner's host work without a device: each tick packs the window into the staging vector of
    its padding bucket (1.25x buckets, as on CUDA) and returns zeros; ``warm`` packs too, as
    :meth:`Runner.warm` does on CUDA (less its copy to the device)."""

    def __init__(self, engine):
        model, n_out = engine.model, engine.runner.n_outputs
        self.device = torch.device("cpu")
        self.kernels = "none (host only)"
        # a fused CPU runner, for its packing only (the checks and layout of the CUDA path)
        self._runner = Runner(model, capacity=engine.tokenizer.n_in, n_outputs=n_out, device="cpu", fused=True)
        self.buckets = default_buckets(engine.tokenizer.n_in, growth=CUDA_BUCKET_GROWTH)
        self._staging = {b: np.zeros(PackedLayout(b, n_out).size) for b in self.buckets}
        self._zeros = np.zeros((n_out, model.readout_spec.dim), np.float32)

    def _stage(self, arrays: dict[str, np.ndarray], n_tokens: int) -> int:
        bucket, _ = bucket_for(n_tokens, self.buckets)
        self._runner._pack(self._staging[bucket], arrays, n_tokens, bucket)
        return bucket

    def run(self, arrays: dict[str, np.ndarray], n_tokens: int, during=None) -> ForwardResult:
        if during is not None:  # (no GPU to overlap: the engine's warm_during_forward runs first)
            during()
        bucket = self._stage(arrays, n_tokens)
        return ForwardResult(values=self._zeros.copy(), n_input=bucket, h2d_us=0.0, forward_us=0.0, d2h_us=0.0)

    def warm(self, arrays: dict[str, np.ndarray], n_tokens: int) -> None:
        self._stage(arrays, n_tokens)

    def prepare(self, window) -> None:
        """Nothing to prepare: the GPU path has no key/value cache."""

    def counters(self) -> dict[str, int]:
        return {}

    def release(self) -> None:
        """Nothing launched ahead (no GPU)."""


def parse_variant(text: str) -> Variant:
    """``SPIN_MS:on|off[:tcp|ipc][:pin][:copies][:replay|:launch][:overlap][:rspin]`` -> :class:`Variant`."""
    spin, _, rest = text.partition(":")
    pre, *options = rest.split(":")
    transports = [o for o in options if o in ("tcp", "ipc")]
    try:
        spin_ms = float(spin)
    except ValueError:
        spin_ms = -1.0
    if (spin_ms < 0 or pre not in ("on", "off") or len(transports) > 1
            or set(options) - {"tcp", "ipc", "pin", "copies", "replay", "overlap", "rspin", "launch"}
            or {"replay", "launch"} <= set(options)):
        raise argparse.ArgumentTypeError(
            f"variant {text!r}: expected SPIN_MS:on|off[:tcp|ipc][:pin][:copies][:replay|:launch][:overlap][:rspin]")
    return Variant(spin_ms, pre == "on", (transports or ["tcp"])[0], "pin" in options, "copies" in options,
                   "replay" in options, "overlap" in options, "rspin" in options, "launch" in options)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", type=parse_variant, action="append",
                    help="SPIN_MS:on|off[:tcp|ipc][:pin][:copies][:replay|:launch][:overlap][:rspin] (engine.spin_ms, "
                         "engine.pre_tick, the output transport, engine.cpu_affinity, model.graph_copies, "
                         "model.cuda_warm: replay or launch, engine.warm_during_forward, the subscriber's spin); "
                         "repeatable (default 0.5:off 1:off 1:on)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: the real CUDA runner (default cpu: the CUDA runner's host packing alone, or --forward)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all variants, alternating")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds a variant runs in each round")
    ap.add_argument("--rate", type=float, default=2000.0, help="population spike rate, spikes/s")
    ap.add_argument("--forward", action="store_true", help="keep the real CPU forward (not only the host's packing)")
    ap.add_argument("--json", default=None, help="write every phase's numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    variants = args.variant or [Variant(0.5, False), Variant(1.0, False), Variant(1.0, True)]
    cores = sorted(allowed_cores() or ())
    if any(v.pin for v in variants) and len(cores) < 2:
        ap.error(":pin needs at least 2 cores (the loop's, and the others' for the player and subscriber)")
    if any(v.copies or v.replay or v.overlap or v.launch for v in variants) and args.device != "cuda":
        ap.error(":copies, :replay, :launch and :overlap are options of the CUDA runner: add --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    lsl.configure_lsl()
    torch.set_num_threads(1)
    model = build_model(BENCH_CONFIGS["poyo_1.3M"], n_units=100)
    n_phases = args.rounds * len(variants)
    player = Player(n_phases, n_units=100, rate_hz=args.rate)
    results: dict[Variant, list[dict]] = {v: [] for v in variants}
    real_forward = args.forward or args.device == "cuda"
    sockets = tempfile.TemporaryDirectory(prefix="poyo-rt-")
    try:
        i = 0
        for r in range(args.rounds):
            for v in variants:
                endpoint = f"ipc://{sockets.name}/out{i}" if v.transport == "ipc" else "tcp://127.0.0.1:*"
                player.pin(tuple(cores[:-1]) if v.pin else None)
                cfg = e2e_config(player.name, device=args.device, threads=1, rate_hz=args.rate, endpoint=endpoint,
                                 spin_ms=v.spin_ms, pre_tick=v.pre_tick, cpu_affinity=cores[-1:] if v.pin else [],
                                 warm_during_forward=v.overlap,
                                 model={"graph_copies": v.copies,
                                        "cuda_warm": "replay" if v.replay else "launch" if v.launch else "copy"})
                print(f"round {r + 1}/{args.rounds}: {v.label()}", file=sys.stderr, flush=True)
                results[v].append(run_phase(
                    v.label(), i, model=model, cfg=cfg, duration_s=args.seconds, player=player,
                    progress=lambda m: None, make_runner=None if real_forward else HostOnlyRunner,
                    receiver_spin_s=RECEIVER_SPIN_MS / 1e3 if v.rspin else 0.0))
                i += 1
    finally:
        player.close()
        sockets.cleanup()

    def pooled(phases: list[dict], stage: str, key: str) -> float:  # median over rounds of each round's value
        return float(np.median([p["engine"]["stages"][stage][key] for p in phases]))

    what = ("the CUDA runner" if args.device == "cuda" else "the CPU forward (key/value cache, 1 thread)"
            if args.forward else "forward replaced by the CUDA runner's host packing")
    stages = STAGES + CUDA_STAGES if args.device == "cuda" else STAGES
    print(f"poyo_1.3M windows, 100 units, {args.rate:g} spikes/s, 50 Hz, {what}; {args.rounds} rounds x "
          f"{args.seconds:g} s; engine stages in µs (median of the rounds' values), receipt in ms")
    width = max(39, *(len(v.label()) + 1 for v in variants))
    head = (f"{'variant':<{width}}" + "".join(f"{s + ' p50/p99':>18}" for s in stages)
            + f"{'tick->receipt':>16}{'x tick p99':>11}{'tick->send':>16}{'send->receipt':>16}")
    print(head)
    base = pooled(results[variants[0]], "tick", "p99_us")
    for v in variants:
        phases = results[v]
        row = f"{phases[0]['path']:<{width}}" + "".join(
            f"{pooled(phases, s, 'median_us'):>10.0f}/{pooled(phases, s, 'p99_us'):<7.0f}" for s in stages)
        def receipt(key: str) -> str:  # "p50/p99" in ms, medians of the rounds' values
            t = [p[key] for p in phases]
            p50, p99 = (np.median([x[k] for x in t]) / 1e3 for k in ("median_us", "p99_us"))
            return f"{p50:>8.2f}/{p99:<7.2f}"

        row += receipt("tick_to_receipt_us") + f"{base / pooled(phases, 'tick', 'p99_us'):>10.2f}x"
        row += receipt("tick_to_send_us") + receipt("send_to_receipt_us")
        print(row)
        early = sum(p["early_ticks"] for p in phases)
        ticks = sum(p["ticks_published"] for p in phases)
        pushed = sum(p["spikes_pushed"] for p in phases)
        taken = sum(p["spikes_taken_in"] for p in phases)
        misses = sum(p["deadline_misses"] for p in phases)
        print(f"{'':<{width}}ticks {ticks}, tokenized early {early}, misses {misses}, "
              f"spikes pushed {pushed} = taken in {taken}: {pushed == taken}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({v.key(): ph for v, ph in results.items()}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

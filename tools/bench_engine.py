#!/usr/bin/env python3
"""End-to-end latency of the engine: LSL push -> decode -> ZeroMQ receipt, real processes and sockets.

A separate process plays Poisson spikes over LSL in real time (1 ms chunks, each spike stamped
with the LSL clock at push); the engine decodes at a fixed tick rate and publishes over ZeroMQ
on 127.0.0.1; a subscriber thread records the receipt latency (receipt - newest spike). Prints the
engine's per-stage table (median, p90, p99, p99.9, max, deadline misses) and the receipt latency.

    python tools/bench_engine.py --config poyo_1.3M --duration 30
    python tools/bench_engine.py --config dim512_depth2 --duration 30 --json out.json

LSL stays on this machine (poyo_rt applies its machine-scope config before any LSL call).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import threading
import time

import numpy as np


def play(stream_name: str, source_id: str, n_units: int, rate_hz: float, duration_s: float, ready) -> None:
    """Child process: an events outlet pushing Poisson spikes every millisecond."""
    from poyo_rt.stream import lsl

    outlet = lsl.make_spike_outlet(stream_name, [f"unit{i}" for i in range(n_units)], source_id)
    ready.set()
    rng = np.random.default_rng(0)
    t_start = lsl.local_clock()
    k = 0
    while True:
        k += 1
        deadline = t_start + k * 1e-3
        if deadline - t_start > duration_s:
            break
        wait = deadline - lsl.local_clock()
        if wait > 0:
            time.sleep(wait)
        n = rng.poisson(rate_hz * 1e-3)
        if n:
            now = lsl.local_clock()
            outlet.push_chunk([[int(u)] for u in rng.integers(0, n_units, n)], [now] * n)


def main(argv: list[str] | None = None) -> int:
    from poyo_rt.bench import BENCH_CONFIGS, build_model, machine_info
    from poyo_rt.config import config_from_dict
    from poyo_rt.runtime.launch import build_decoder
    from poyo_rt.stream import lsl
    from poyo_rt.stream.publisher import Subscriber

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="poyo_1.3M", choices=sorted(BENCH_CONFIGS))
    p.add_argument("--duration", type=float, default=30.0, help="seconds of decoding (default 30)")
    p.add_argument("--tick-hz", type=float, default=50.0)
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0, help="population spike rate, spikes/s (default 2000)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the results as JSON")
    args = p.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = f"poyo-bench-{int(time.time() * 1e3) % 10**9}"
    ready = mp.get_context("spawn").Event()
    player = mp.get_context("spawn").Process(
        target=play, args=(name, name + "-src", args.units, args.rate, args.duration + 5.0, ready), daemon=True)
    player.start()
    ready.wait(10)
    model = build_model(BENCH_CONFIGS[args.config], n_units=args.units)
    model.session_emb.extend_vocab([], exist_ok=True)
    cfg = config_from_dict({
        "model": {"device": args.device, "session_id": "session0"},
        "input": {"name": name, "resolve_timeout_s": 10.0},
        "engine": {"tick_hz": args.tick_hz, "max_spikes": 8192},
        "output": {"endpoint": "tcp://127.0.0.1:*"},
        "metrics": {"log_every_s": 0, "report_path": None},
    })
    decoder = build_decoder(cfg, model=model)
    sub = Subscriber(decoder.publisher.endpoint, rcvhwm=100_000, clock=lsl.local_clock)
    while not decoder.publisher.wait_for_subscriber(0.01):
        sub.recv(timeout_s=0.01)
    recv_us: list[float] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            msg = sub.recv(timeout_s=0.1)
            if msg is not None and np.isfinite(msg.newest_spike_s):
                recv_us.append((msg.t_recv_s - msg.newest_spike_s) * 1e6)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    print(f"decoding {args.config} at {args.tick_hz:g} Hz for {args.duration:g} s on {args.device}: "
          f"{args.units} units, {args.rate:g} spikes/s", flush=True)
    summary = decoder.engine.run(duration_s=args.duration)
    stop.set()
    listener.join()
    decoder.close()
    sub.close()
    player.terminate()

    print(decoder.engine.stats.format_table())
    rec = np.asarray(recv_us)
    recv = {q: float(np.percentile(rec, q)) for q in (50, 90, 99, 99.9)} if len(rec) else {}
    recv["max"] = float(rec.max()) if len(rec) else float("nan")
    print(f"receipt latency (newest spike -> subscriber), {len(rec)} ticks: "
          + ", ".join(f"p{q}={v / 1e3:.2f} ms" if q != "max" else f"max={v / 1e3:.2f} ms" for q, v in recv.items()))
    print(f"counters: {decoder.engine.counters()}, skipped ticks: {decoder.engine.skipped_ticks}, "
          f"subscriber missed: {sub.missed}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_info(), "args": vars(args), "engine": summary, "receipt_us": recv},
                      fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

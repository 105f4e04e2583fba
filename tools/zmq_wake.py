"""How long a published tick waits for its subscriber to wake, and what a busy-polling subscriber saves.

A tick's message crosses three threads after ``Publisher.send``: ZeroMQ's I/O thread in the publishing
process, the I/O thread in the subscriber's, and the subscriber's own thread, asleep in ``poll``. Each is
woken by the kernel, which on a VM costs tens to hundreds of µs when its core is idle. A subscriber that
busy-polls around the tick's expected arrival (``Subscriber(spin_s=...)``) removes the last wake-up.

This tool publishes real messages (the engine's size: one output, its stages and counters) at a fixed
cadence from this process, sleeping to 1 ms before each send, warming the publisher's code then and
spinning the rest (as the engine's tick loop and its pre-tick do), to a subscriber process on 127.0.0.1
(or ``ipc://``). Variants run in alternating rounds.
Printed per variant: send -> receipt (the message's ``t_send_s`` to the subscriber's receipt stamp) median
and p99 in µs, the share of ticks the spin took, and the subscriber's CPU time a tick (µs).

    python tools/zmq_wake.py --rounds 3 --ticks 300 --spin-ms 0 --spin-ms 0.5 --spin-ms 1
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import sys
import time

import numpy as np

from poyo_rt.runtime.engine import STAGES, wait_until
from poyo_rt.stream.publisher import Publisher, Subscriber
from poyo_rt.stream.wire import DROP_COUNTERS


def subscribe(endpoint: str, spin_s: float, n: int, conn, ready) -> None:
    """Child process: take ``n`` ticks; send back (send -> receipt µs per tick, spin_taken, CPU s a tick)."""
    sub = Subscriber(endpoint, spin_s=spin_s, clock=time.monotonic)
    ready.set()
    out = []
    cpu0 = time.process_time()
    try:
        while len(out) < n:
            msg = sub.recv(timeout_s=5.0)
            if msg is None:
                break
            out.append((msg.t_recv_s - msg.t_send_s) * 1e6)
        conn.send((out, sub.spin_taken, (time.process_time() - cpu0) / max(1, len(out))))
    finally:
        sub.close()


def one_round(endpoint: str, spin_s: float, ticks: int, period_s: float) -> dict:
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe(duplex=False)
    ready = ctx.Event()
    warmup = 10
    with Publisher(endpoint, tick_hz=1 / period_s) as pub:
        proc = ctx.Process(target=subscribe, args=(pub.endpoint, spin_s, ticks + warmup, child, ready), daemon=True)
        proc.start()
        if not ready.wait(30) or not pub.wait_for_subscriber(10.0):
            proc.terminate()
            raise RuntimeError("the subscriber process did not subscribe within 40 s")
        stages = {name: 1.0 for name in STAGES}
        counters = {name: 0 for name in DROP_COUNTERS if name != "send_dropped"}
        values, times = np.zeros((1, 2), np.float32), np.zeros(1)
        t_next = time.monotonic() + 0.2
        for _ in range(ticks + warmup):
            wait_until(t_next, time.monotonic, time.sleep, 1e-3, on_wake=pub.warm)
            pub.send(window_end_s=t_next, newest_spike_s=t_next, output_times_s=times, values=values,
                     counters=counters, stages_us=stages)
            t_next += period_s
        deadline = time.monotonic() + 30
        while not conn.poll(0.2) and proc.is_alive() and time.monotonic() < deadline:
            pass
        if not conn.poll(0):
            proc.terminate()
            raise RuntimeError(f"the subscriber process ended without its numbers (exit code {proc.exitcode})")
        lat, taken, cpu = conn.recv()
        proc.join(5)
    lat = np.asarray(lat[warmup:])
    return {"n": int(lat.size), "median_us": float(np.median(lat)) if lat.size else float("nan"),
            "p99_us": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "spin_share": taken / max(1, ticks + warmup), "cpu_us_a_tick": cpu * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spin-ms", type=float, action="append", help="a variant: the subscriber's spin_s in ms "
                    "(repeatable; default 0 and 1)")
    ap.add_argument("--ipc", action="store_true", help="publish on ipc:// instead of tcp://127.0.0.1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=300, help="ticks a round and variant")
    ap.add_argument("--hz", type=float, default=50.0, help="tick rate")
    ap.add_argument("--json", help="write the rounds' numbers here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    spins = args.spin_ms or [0.0, 1.0]
    if args.rounds < 1 or args.ticks < 1 or args.hz <= 0 or any(s < 0 for s in spins):
        ap.error("--rounds, --ticks >= 1, --hz > 0, --spin-ms >= 0")
    endpoint = f"ipc:///tmp/poyo-zmq-wake-{int(time.time() * 1e3) % 10**9}" if args.ipc else "tcp://127.0.0.1:*"
    results: dict[float, list[dict]] = {s: [] for s in spins}
    for r in range(args.rounds):
        for s in spins:
            print(f"round {r + 1}/{args.rounds}: subscriber spin {s:g} ms", file=sys.stderr, flush=True)
            results[s].append(one_round(endpoint, s / 1e3, args.ticks, 1 / args.hz))
    print(f"send -> receipt at {args.hz:g} Hz on {endpoint.split(':')[0]}, {args.rounds} rounds x {args.ticks} ticks "
          f"(medians of the rounds' values)")
    print(f"{'subscriber spin ms':>18} {'p50 µs':>8} {'p99 µs':>8} {'taken spinning':>15} {'CPU µs a tick':>14}")
    for s, rounds in results.items():
        med = {k: float(np.median([x[k] for x in rounds])) for k in ("median_us", "p99_us", "spin_share",
                                                                     "cpu_us_a_tick")}
        print(f"{s:>18g} {med['median_us']:>8.1f} {med['p99_us']:>8.1f} {med['spin_share']:>14.0%} "
              f"{med['cpu_us_a_tick']:>14.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"hz": args.hz, "endpoint": endpoint, "rounds": {str(k): v for k, v in results.items()}}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much slower a tick's host code runs after the loop has slept, and what brings it back.

Times one call of each piece of the tick's publishing path (encoding a message, ZeroMQ's send, the whole
``Publisher.send``) back to back ("hot"), after sleeping most of a 50 Hz period ("after sleep"), after
busy-waiting as long ("after spin"), and after sleeping and running the same call once just before
("warmed", what the engine's pre-tick does). Medians and p99 in µs; real sockets on 127.0.0.1.

    python tools/cold_code.py --calls 200
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Callable

import numpy as np

from poyo_rt.runtime.engine import STAGES
from poyo_rt.stream.publisher import Publisher, Subscriber
from poyo_rt.stream.wire import encode_tick


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(fn: Callable[[], object], before: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median and p99 (µs) of ``fn`` right after ``before``."""
    out = np.empty(calls)
    for i in range(calls):
        before()
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return float(np.median(out)), float(np.percentile(out, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="calls per row")
    ap.add_argument("--period-ms", type=float, default=19.5, help="sleep (or spin) before each call, ms")
    args = ap.parse_args()
    gap = args.period_ms / 1e3
    logging.getLogger("poyo_rt.stream.publisher").setLevel(logging.ERROR)  # the repeated seq would warn
    fields = dict(topic=b"poyo", seq=1, window_end_s=1.0, newest_spike_s=0.9, output_times_s=np.array([1.0]),
                  values=np.zeros((1, 2), np.float32), counters={"overflow": 0, "token_overflow": 0},
                  stages_us={k: 1.0 for k in STAGES}, flags=0)
    with Publisher("tcp://127.0.0.1:*", tick_hz=50) as pub, Subscriber(pub.endpoint) as sub:
        while not pub.wait_for_subscriber(0.01):
            sub.recv(timeout_s=0.01)
        frames = encode_tick(**fields)
        send_kw = {k: v for k, v in fields.items() if k not in ("topic", "seq")}
        pieces = {
            "encode_tick": lambda: encode_tick(**fields),
            "zmq send_multipart": lambda: pub._sock.send_multipart(frames, copy=True),
            "Publisher.send": lambda: pub.send(**send_kw),
        }
        print(f"{'call':<20} {'hot':>14} {'after sleep':>14} {'after spin':>14} {'warmed':>14}   (µs, p50/p99)")
        for name, fn in pieces.items():
            rows = [timed(fn, lambda: None, args.calls), timed(fn, lambda: time.sleep(gap), args.calls),
                    timed(fn, lambda: spin(gap), args.calls // 4),
                    timed(fn, lambda: (time.sleep(gap), fn()), args.calls)]
            print(f"{name:<20} " + " ".join(f"{p50:>7.1f}/{p99:<6.1f}" for p50, p99 in rows), flush=True)
            while sub.recv(timeout_s=0.05) is not None:  # drain what the sends delivered
                pass


if __name__ == "__main__":
    main()

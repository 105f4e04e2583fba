"""Linux's real-time throttling, measured: a SCHED_FIFO thread that never sleeps is stopped ~50 ms a second.

A SCHED_FIFO thread pinned to one core busy-loops, as a tick loop does when every tick runs late. Linux lets
real-time threads run at most ``sched_rt_runtime_us`` of every ``sched_rt_period_us`` (950 ms of 1 s by
default) and stops them for the rest. Each variant naps N ms every 20 ms (one 50 Hz period); the table gives
the thread's longest stall (its own naps not counted) and how many stalls exceeded 2 ms. ``--hog`` adds a
normal process pinned to the same core.

    python tools/rt_throttle.py [--seconds 5] [--core 1] [--nap-ms 0 0.5 1] [--hog]

What it showed on the 2-core test VM (docs/performance.md, tenth session): without naps a ~53 ms stall once a
second, with or without a normal process beside it; 1 ms of sleep every 20 ms (5 %) removes them, 0.5 ms does
not. A tick loop that keeps that much slack is never stopped; one that runs late tick after tick is, and
sleeping the 5 % itself (tried in the engine and dropped) only moves its misses around.
Needs root or CAP_SYS_NICE; the thread's scheduling and cores are given back afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PERIOD_S = 0.02  # a 50 Hz tick


def stalls(seconds: float, nap_s: float, threshold_s: float = 0.002) -> tuple[float, int]:
    """Busy-loop for ``seconds`` under the caller's scheduling, napping ``nap_s`` every PERIOD_S: (longest gap
    between two loop turns outside the naps, s; gaps over ``threshold_s``)."""
    t_end = time.perf_counter() + seconds
    last = time.perf_counter()
    next_nap, worst, count = last + PERIOD_S, 0.0, 0
    while last < t_end:
        now = time.perf_counter()
        gap = now - last
        worst, count = max(worst, gap), count + (gap > threshold_s)
        last = now
        if nap_s > 0 and now >= next_nap:
            time.sleep(nap_s)
            next_nap += PERIOD_S
            last = time.perf_counter()
    return worst, count


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per variant (default 5)")
    ap.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)), help="the core it runs on")
    ap.add_argument("--nap-ms", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="naps to compare (ms)")
    ap.add_argument("--hog", action="store_true", help="a normal busy process on the same core")
    args = ap.parse_args(argv)
    runtime = read_int("/proc/sys/kernel/sched_rt_runtime_us")
    period = read_int("/proc/sys/kernel/sched_rt_period_us")
    print(f"real-time throttling: {runtime} of every {period} µs; core {args.core}, {args.seconds:g} s a variant, "
          f"{'with' if args.hog else 'without'} a normal process on that core")
    saved = os.sched_getscheduler(0), os.sched_getparam(0), os.sched_getaffinity(0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.hog else None
    try:
        if hog is not None:
            os.sched_setaffinity(hog.pid, {args.core})
        os.sched_setaffinity(0, {args.core})
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
        except PermissionError:
            print("SCHED_FIFO refused: needs root or CAP_SYS_NICE", file=sys.stderr)
            return 1
        print(f"{'nap every 20 ms':>16} {'longest stall ms':>17} {'stalls > 2 ms':>14}")
        for nap_ms in args.nap_ms:
            worst, count = stalls(args.seconds, nap_ms / 1e3)
            print(f"{nap_ms:>13.2f} ms {worst * 1e3:>17.1f} {count:>14}", flush=True)
    finally:
        os.sched_setscheduler(0, saved[0], saved[1])
        os.sched_setaffinity(0, saved[2])
        if hog is not None:
            hog.kill()
            hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does this machine stop? Gaps in a busy loop on each core, told apart by where the time went.

A rig check, like ``cyclictest`` for the question a tick loop's rare misses leave open: was it the decoder, or
did the machine stand still? One process per core busy-loops there (normal scheduling, pinned), reading the
monotonic clock and its thread's CPU time and run delay (:class:`poyo_rt.runtime.threads.ThreadClock`) every
turn. A turn longer than ``--threshold-ms`` is a gap, put down to what most of it was:

* ``cpu_wait``: another task had the core (the run delay grew);
* ``cpu``: the loop's own CPU time (the kernel working on its behalf: an interrupt, a page fault);
* ``off_cpu``: neither: the core stood still, as when a hypervisor stops a virtual CPU (Linux counts that
  as steal time only when the host reports it; each core's steal time over the watch is printed).

Gaps that begin within ``--together-ms`` of each other on every watched core are the whole machine stopping.

    python tools/stall_watch.py --seconds 600 --cores 0 1

What it showed on the 2-core test VM: docs/performance.md, eleventh session.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from poyo_rt.runtime.threads import StealClock, ThreadClock


def watch(core: int, seconds: float, threshold_s: float, idle: bool = False) -> list[dict]:
    """Busy-loop on ``core`` for ``seconds`` (under ``SCHED_IDLE`` if ``idle``); each turn longer than
    ``threshold_s``: its start (monotonic s, the LSL clock on Linux), length and the thread's CPU time and run
    delay (ms) from the turn before it to the turn after it. (A preemption lands mostly inside the clock read, a
    system call, so its run delay can show up one turn before or after the turn whose clock saw the gap.)"""
    os.sched_setaffinity(0, {core})
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    clock = ThreadClock()
    threshold_ns = int(threshold_s * 1e9)
    gaps = []
    t_end = time.monotonic_ns() + int(seconds * 1e9)
    before = last = (time.monotonic_ns(), *clock.read())  # (monotonic ns, cpu ns, wait ns) of the last two turns
    pending = None  # a gap seen this turn, waiting for the next turn's reading
    while last[0] < t_end:
        now = (time.monotonic_ns(), *clock.read())
        if pending is not None:
            gaps.append(_spanned(*pending, now))
            pending = None
        if now[0] - last[0] > threshold_ns:
            pending = ({"t_s": last[0] / 1e9, "ms": (now[0] - last[0]) / 1e6}, before)
        before, last = last, now
    if pending is not None:  # a gap in the last turn: up to that turn
        gaps.append(_spanned(*pending, last))
    return gaps


def _spanned(gap: dict, start: tuple[int, int, int], end: tuple[int, int, int]) -> dict:
    """``gap`` with the thread's CPU time and run delay (ms) between two (monotonic, cpu, wait) readings, ns."""
    gap["cpu_ms"] = (end[1] - start[1]) / 1e6
    gap["cpu_wait_ms"] = (end[2] - start[2]) / 1e6 if start[2] >= 0 and end[2] >= 0 else float("nan")
    return gap


def cause(gap: dict) -> str:
    """What most of a gap was: ``cpu_wait``, ``cpu`` or ``off_cpu`` (see the module docstring)."""
    wait = gap["cpu_wait_ms"] if gap["cpu_wait_ms"] == gap["cpu_wait_ms"] else 0.0  # NaN: not readable (not Linux)
    parts = {"cpu": gap["cpu_ms"], "cpu_wait": wait, "off_cpu": gap["ms"] - gap["cpu_ms"] - max(wait, 0.0)}
    return max(parts, key=parts.__getitem__)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to watch (default: 60)")
    ap.add_argument("--cores", type=int, nargs="+", help="cores to watch (default: every core this process may use)")
    ap.add_argument("--threshold-ms", type=float, default=2.0, help="a turn longer than this is a gap (default: 2)")
    ap.add_argument("--together-ms", type=float, default=5.0,
                    help="gaps on every core beginning this close are one stop of the machine (default: 5)")
    ap.add_argument("--show", type=int, default=10, help="longest gaps listed per core (default: 10)")
    ap.add_argument("--json", help="also write every gap, by core, as JSON")
    ap.add_argument("--idle", action="store_true",
                    help="watch under SCHED_IDLE: beside a running decoder, the watchers take only idle time (their "
                    "gaps while others run are cpu_wait; a stop of the machine is still cpu or off_cpu)")
    ap.add_argument("--worker", nargs=2, metavar=("CORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        core, out = int(args.worker[0]), args.worker[1]
        Path(out).write_text(json.dumps(watch(core, args.seconds, args.threshold_ms / 1e3, args.idle)))
        return 0

    cores = args.cores or sorted(os.sched_getaffinity(0))
    steal = {c: StealClock([c]) for c in cores}  # each core's steal time from here on
    with tempfile.TemporaryDirectory() as tmp:
        idle = ["--idle"] if args.idle else []
        procs = {c: subprocess.Popen([sys.executable, __file__, "--seconds", str(args.seconds), "--threshold-ms",
                                      str(args.threshold_ms), *idle, "--worker", str(c), f"{tmp}/{c}.json"])
                 for c in cores}
        print(f"watching cores {cores} for {args.seconds:g} s (gaps > {args.threshold_ms:g} ms)...", flush=True)
        if any(p.wait() != 0 for p in procs.values()):
            print("a watcher failed", file=sys.stderr)
            return 1
        gaps = {c: json.loads(Path(f"{tmp}/{c}.json").read_text()) for c in cores}
    if args.json:
        Path(args.json).write_text(json.dumps({str(c): gaps[c] for c in cores}))

    for c in cores:
        mine = gaps[c]
        by_cause: dict[str, int] = {}
        for g in mine:
            by_cause[cause(g)] = by_cause.get(cause(g), 0) + 1
        stolen = steal[c].lap() / 1e6
        longest = max((g["ms"] for g in mine), default=0.0)
        print(f"\ncore {c}: {len(mine)} gaps, longest {longest:.2f} ms, by cause {by_cause or 'none'}; steal time "
              f"{f'{stolen:.0f} ms' if stolen >= 0 else 'unknown'}")
        for g in sorted(mine, key=lambda g: -g["ms"])[:args.show]:
            print(f"  at {g['t_s']:.3f} s  {g['ms']:7.2f} ms  cpu {g['cpu_ms']:6.2f}  cpu_wait {g['cpu_wait_ms']:6.2f}"
                  f"  -> {cause(g)}")

    if len(cores) > 1:  # a gap on the first core that every other core shares
        together = args.together_ms / 1e3
        shared = [g for g in gaps[cores[0]] if all(
            any(abs(h["t_s"] - g["t_s"]) <= together for h in gaps[c]) for c in cores[1:])]
        big = [g for g in shared if g["ms"] >= 5]
        print(f"\ngaps on every watched core at once (starts within {args.together_ms:g} ms): {len(shared)}, "
              f"{len(big)} of them 5 ms or longer: " + ", ".join(f"{g['ms']:.1f} ms at {g['t_s']:.3f} s" for g in
                                                                 sorted(big, key=lambda g: -g["ms"])[:args.show]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

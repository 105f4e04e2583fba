#!/usr/bin/env python3
"""How late the tick loop wakes up: ``time.sleep`` to a deadline against the engine's ``wait_until`` (sleep to
``spin`` before the deadline, then busy-wait), on the LSL clock the engine ticks on. Prints the lateness
(µs after the deadline: median, p99, max) and the share of a core each spin costs at the tick rate.

    python tools/sleep_overshoot.py                      # 50 Hz, 500 ticks each, spins 0 / 0.25 / 0.5 / 1 ms
    python tools/sleep_overshoot.py --ticks 2000 --spin-ms 0 --spin-ms 0.5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poyo_rt.runtime.engine import wait_until


def lateness_us(spin_s: float, period_s: float, ticks: int, clock=time.monotonic) -> np.ndarray:
    """(ticks,) µs between each deadline and ``wait_until``'s return, deadlines ``period_s`` apart."""
    late = np.empty(ticks)
    t0 = clock()
    for k in range(ticks):
        deadline = t0 + (k + 1) * period_s
        wait_until(deadline, clock, time.sleep, spin_s)
        late[k] = (clock() - deadline) * 1e6
    return late


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tick-hz", type=float, default=50.0)
    ap.add_argument("--ticks", type=int, default=500, help="ticks per setting")
    ap.add_argument("--spin-ms", type=float, action="append", help="repeatable (default: 0, 0.25, 0.5, 1)")
    args = ap.parse_args()
    from poyo_rt.stream import lsl

    lsl.configure_lsl()
    period = 1.0 / args.tick_hz
    spins = args.spin_ms if args.spin_ms is not None else [0.0, 0.25, 0.5, 1.0]
    print(f"{'spin (ms)':>9} {'late p50 µs':>12} {'p99':>8} {'max':>8} {'core share':>10}")
    base = None
    for spin_ms in spins:
        late = lateness_us(spin_ms / 1e3, period, args.ticks, clock=lsl.local_clock)
        p50 = float(np.median(late))
        base = p50 if base is None else base
        print(f"{spin_ms:9.2f} {p50:12.1f} {np.percentile(late, 99):8.1f} {late.max():8.1f} "
              f"{spin_ms / 1e3 / period:10.1%}" + (f"   ({base / max(p50, 0.1):.0f}x less late than the first row)"
                                                    if spin_ms != spins[0] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

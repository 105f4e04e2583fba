#!/usr/bin/env python3
"""What `output.lsl_name` adds to a tick's publish stage: the ZeroMQ send alone against the send followed by the
LSL push of the tick's values (``EchoedSink``), interleaved in one process, with a subscriber and an LSL inlet
connected (as a recorder would be). Prints median and p99 in µs and their ratio.

    python tools/bench_lsl_echo.py                 # 5,000 sends each, 1 output query of 2 values a tick
    python tools/bench_lsl_echo.py --outputs 4     # 4 output queries a tick
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sends", type=int, default=5000)
    ap.add_argument("--outputs", type=int, default=1)
    args = ap.parse_args()

    from poyo_rt.runtime.launch import EchoedSink
    from poyo_rt.stream import lsl
    from poyo_rt.stream.publisher import Publisher, Subscriber

    lsl.configure_lsl()
    pub = Publisher("tcp://127.0.0.1:*", clock=lsl.local_clock)
    sub = Subscriber(pub.endpoint, rcvhwm=1_000_000, clock=lsl.local_clock)
    while not pub.wait_for_subscriber(0.01):
        sub.recv(timeout_s=0.01)
    echo = lsl.DecodedOutlet(f"bench-echo-{time.monotonic_ns()}", ["vx", "vy"], "bench-echo")
    rec = lsl.resolve_stream(name=echo.outlet.get_info().name(), timeout_s=5.0, unique_wait_s=0)
    import pylsl

    inlet = pylsl.StreamInlet(rec, max_buflen=360, recover=False)
    inlet.open_stream(timeout=5.0)
    tee = EchoedSink(pub, echo)
    values = np.zeros((args.outputs, 2), np.float32)
    times = {"zeromq send": [], "send + LSL push": []}
    for i in range(args.sends):
        now = lsl.local_clock()
        fields = dict(window_end_s=now, newest_spike_s=now, output_times_s=now + np.zeros(args.outputs),
                      values=values + i, counters={}, stages_us={"forward": 1.0})
        for name, sink in (("zeromq send", pub), ("send + LSL push", tee))[:: 1 if i % 2 else -1]:
            times[name].append(sink.send(**fields))
        if i % 100 == 0:  # keep both consumers drained, as a subscriber and a recorder would
            while sub.recv(timeout_s=0) is not None:
                pass
            inlet.pull_chunk(timeout=0.0, max_samples=100_000)
    base = np.median(times["zeromq send"])
    print(f"{args.sends} sends each, {args.outputs} output(s) of 2 values a tick")
    for name, t in times.items():
        t = np.asarray(t)
        print(f"{name:>16}: median {np.median(t):7.1f} µs, p99 {np.percentile(t, 99):7.1f} µs, "
              f"x{np.median(t) / base:.2f} of the send alone")
    pub.close()
    echo.close()


if __name__ == "__main__":
    main()

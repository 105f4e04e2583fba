"""ZeroMQ output: the one module of poyo-rt that imports ``zmq``.

``Publisher`` sends one wire-format message per tick (``poyo_rt.stream.wire``) and never blocks the tick
loop; ``Subscriber`` receives and decodes them and counts sequence gaps; ``listen`` is what
``poyo-rt listen`` runs.

Loss model (measured, ../shared/STREAMING-NOTES.md): a PUB socket past its send high-water mark drops
messages silently for that subscriber, so the publisher cannot count those losses; every subscriber
detects them as gaps in the consecutive ``seq`` numbers. The publisher counts only what ZeroMQ refused
outright (``zmq.Again``; with ``nodrop=True`` that is every message refused because a subscriber's queue
is full). Clock: receipt and send stamps come from an injected ``clock`` returning seconds; pass
``pylsl.local_clock`` to stamp on the LSL clock (on Linux both it and the default ``time.monotonic``
read CLOCK_MONOTONIC).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import zmq

from poyo_rt.runtime.metrics import LatencyStats
from poyo_rt.stream.wire import (
    TickMessage,
    UnsupportedVersionError,
    WireFormatError,
    decode_tick,
    encode_tick,
    tick_to_record,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
SEND_DROPPED = "send_dropped"
_LOCAL_TRANSPORTS = ("ipc", "inproc")


def check_endpoint(endpoint: str, *, allow_remote: bool = False) -> str:
    """Return ``endpoint`` if it stays on this machine, else raise ``ValueError``.

    Local: ``ipc://...``, ``inproc://...``, ``tcp://<loopback IP>:<port|*>`` (127.0.0.0/8, [::1]).
    Anything else (other hosts, 0.0.0.0, ``*``, interface names, pgm/udp/ws) needs ``allow_remote=True``.
    """
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"endpoint: expected 'transport://address', got {endpoint!r}")
    transport, addr = endpoint.split("://", 1)
    if allow_remote or transport in _LOCAL_TRANSPORTS:
        return endpoint
    if transport == "tcp":
        host, sep, port = addr.rpartition(":")
        if sep and port and (port == "*" or port.isdigit()):
            try:
                if ipaddress.ip_address(host.strip("[]")).is_loopback:
                    return endpoint
            except ValueError:
                pass
    raise ValueError(
        f"endpoint: {endpoint!r} is not a loopback endpoint; use tcp://127.0.0.1:PORT or ipc://PATH, "
        "or pass allow_remote=True to expose the decoder's output to other machines"
    )


class Publisher:
    """XPUB socket publishing one tick per ``send``; never blocks.

    ``endpoint``: where to bind (loopback or ipc by default; ``tcp://127.0.0.1:*`` picks a free port, see
    ``endpoint`` after construction). ``sndhwm``: send high-water mark in messages; default
    ``ceil(tick_hz * hwm_s)`` = about one second of ticks. ``wait_for_subscriber_s``: if > 0, block in the
    constructor up to that long for a subscription to ``topic`` (an XPUB sees subscriptions arrive, so
    the first messages are not lost to the slow-joiner effect). ``nodrop``: refuse (and count) a message
    when any subscriber's queue is full, instead of ZeroMQ's silent per-subscriber drop; one stuck
    subscriber then makes every subscriber miss messages. ``clock``: seconds, stamps ``t_send_s``.
    An XPUB behaves exactly as a PUB towards SUB sockets. Not thread-safe (ZeroMQ sockets are not):
    construct, send and close from the tick-loop thread.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        topic: str = "poyo",
        sndhwm: int | None = None,
        tick_hz: float = 100.0,
        hwm_s: float = 1.0,
        wait_for_subscriber_s: float = 0.0,
        nodrop: bool = False,
        allow_remote: bool = False,
        clock: Callable[[], float] = time.monotonic,
        context: zmq.Context | None = None,
    ):
        check_endpoint(endpoint, allow_remote=allow_remote)
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic: expected a non-empty str, got {topic!r}")
        if sndhwm is None:
            if not (tick_hz > 0 and hwm_s > 0):
                raise ValueError(f"tick_hz, hwm_s: must be > 0, got tick_hz={tick_hz!r}, hwm_s={hwm_s!r}")
            sndhwm = max(1, math.ceil(tick_hz * hwm_s))
        if not (isinstance(sndhwm, int) and sndhwm >= 0):
            raise ValueError(f"sndhwm: expected an int >= 0 messages (0 = unlimited), got {sndhwm!r}")
        self.topic = topic
        self._topic_raw = topic.encode("utf-8")
        self.sndhwm = sndhwm
        self.clock = clock
        self.seq = 0  # seq of the next message
        self.sent = 0
        self.dropped = 0  # messages ZeroMQ refused (zmq.Again); silent HWM drops are not seen here
        self.subscriptions_seen = 0
        self.last_send_us = math.nan
        self._last_fields: dict[str, Any] | None = None  # the last message's fields (warm() encodes them again)
        self._warm_sock: zmq.Socket | None = None  # unbound PUB: warm() sends into it, ZeroMQ discards
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription, not only the first per topic
            if nodrop:
                self._sock.setsockopt(zmq.XPUB_NODROP, 1)
            self._sock.bind(endpoint)
            self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except Exception:
            self._sock.close(linger=0)
            raise
        self._closed = False
        log.info("publisher bound %s topic=%r sndhwm=%d nodrop=%s", self.endpoint, topic, sndhwm, nodrop)
        if wait_for_subscriber_s > 0 and not self.wait_for_subscriber(wait_for_subscriber_s):
            log.warning("no subscriber to %r on %s after %.3f s; publishing anyway",
                        topic, self.endpoint, wait_for_subscriber_s)

    # --- subscriptions ------------------------------------------------------------------------

    def _drain_subscriptions(self) -> None:
        """Read pending subscription messages (non-blocking) and count those covering our topic."""
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01" and self._topic_raw.startswith(msg[1:]):
                self.subscriptions_seen += 1

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until some SUB has subscribed to a prefix of our topic.

        Returns True at once if one was seen before. After True, messages reach that subscriber.
        A SUB sends (or, after a reconnect, resends) its subscription only while its own socket is
        serviced (recv/poll), so do not wait on a subscriber idle in the same thread.
        """
        deadline = time.monotonic() + timeout_s
        self._drain_subscriptions()
        while self.subscriptions_seen == 0:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return False
            if self._sock.poll(remaining_ms, zmq.POLLIN):
                self._drain_subscriptions()
        return True

    # --- sending ----------------------------------------------------------------------------

    def send(
        self,
        *,
        window_end_s: float,
        newest_spike_s: float,
        output_times_s: Any,
        values: Any,
        counters: Mapping[str, int] | None = None,
        stages_us: Mapping[str, float] | None = None,
        flags: int = 0,
    ) -> float:
        """Stamp, encode and send one tick without blocking; return the time it took (µs).

        ``output_times_s``: (N_out,) LSL seconds; ``values``: (N_out, D). The publisher assigns ``seq``
        (consecutive, also consumed by a refused message so subscribers see the gap), stamps ``t_send_s``
        with ``clock``, adds ``send_dropped`` (its refusals so far) to ``counters`` and, unless the
        caller gives one, a ``publish`` stage holding the previous send's duration (µs).
        Returns the duration, also kept in ``last_send_us``.
        """
        if self._closed:
            raise RuntimeError(f"publisher on {self.endpoint} is closed")
        t0 = time.perf_counter()
        all_counters = dict(counters) if counters else {}
        all_counters[SEND_DROPPED] = self.dropped
        if stages_us is None or "publish" not in stages_us:
            stages_us = {**(stages_us or {}), "publish": self.last_send_us}
        self._last_fields = dict(
            topic=self._topic_raw, seq=self.seq, window_end_s=window_end_s, newest_spike_s=newest_spike_s,
            output_times_s=output_times_s, values=values, counters=all_counters, stages_us=stages_us, flags=flags,
        )
        frames = encode_tick(**self._last_fields, t_send_s=self.clock())
        self.seq += 1
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._drain_subscriptions()
        self.last_send_us = (time.perf_counter() - t0) * 1e6
        return self.last_send_us

    def warm(self) -> None:
        """Run :meth:`send`'s code without sending anything, shortly before a tick (the engine's pre-tick).

        After the tick loop has slept most of a period, encoding and ZeroMQ's send path run many times
        slower than warm (on the 2-core test VM a send took 239 µs after a sleep, 22 µs right after running
        once: ``tools/cold_code.py``). Encodes the last message again and sends it on a private PUB socket
        that is bound nowhere (ZeroMQ discards it: no peer can receive it), and services subscriptions."""
        if self._closed:
            return
        if self._warm_sock is None:
            self._warm_sock = self._ctx.socket(zmq.PUB)
            self._warm_sock.setsockopt(zmq.LINGER, 0)
        if self._last_fields is not None:
            frames = encode_tick(**self._last_fields, t_send_s=self.clock())
            self._warm_sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._drain_subscriptions()

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket with linger 0 (unsent messages are discarded). Idempotent."""
        if not self._closed:
            self._closed = True
            self._sock.close(linger=0)
            if self._warm_sock is not None:
                self._warm_sock.close(linger=0)
            log.info("publisher %s closed: sent=%d dropped=%d", self.endpoint, self.sent, self.dropped)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Receipts that :func:`predict_receipt` looks back over (each tick's receipt time and window end).
RECEIPT_HISTORY = 16


def predict_receipt(recent: Sequence[tuple[float, float]]) -> float | None:
    """When the next tick should arrive, on the subscriber's clock (seconds); None if not yet known.

    ``recent``: (receipt time on the subscriber's clock, the tick's ``window_end_s`` on the publisher's
    clock) of the last ticks received, oldest first; at least 3 are needed. The publisher's period is the
    median step of ``window_end_s`` (a skipped tick makes one step two periods long; the median ignores it).
    The next tick ends one period after the last one and arrives after it as the *fastest* recent tick did
    (the smallest receipt - window end), so one late tick does not push the prediction late. Receipt minus
    window end mixes two clocks, but only as a constant offset: it needs no shared clock.
    """
    if len(recent) < 3:
        return None
    recent = list(recent)  # a deque cannot be sliced
    steps = [b[1] - a[1] for a, b in zip(recent, recent[1:]) if b[1] > a[1]]
    if not steps:
        return None
    period = statistics.median(steps)
    fastest = min(t_recv - window_end for t_recv, window_end in recent)
    return recent[-1][1] + period + fastest


class Subscriber:
    """SUB client: receives ticks of one topic, stamps receipt time, counts sequence gaps.

    ``rcvhwm``: receive high-water mark (messages). ``clock``: seconds for ``t_recv_s``. Counters:
    ``received``; ``missed`` (sum of gaps between consecutive received seq numbers; messages published
    before the first one received are not counted); ``restarts`` (seq went backwards: publisher restarted);
    ``invalid`` (undecodable or unknown-version messages, skipped); ``other_topics`` (SUB filters by
    prefix; messages whose topic is longer are skipped); ``spin_taken`` (ticks taken while busy-polling).

    ``spin_s`` (seconds, default 0 = off): busy-poll for the next tick from ``spin_s`` before it is expected
    (:func:`predict_receipt`) to ``spin_s`` after, instead of sleeping in ``poll``. A thread woken by the
    kernel takes its message 100-250 µs after it arrived on a VM; a spinning one takes it within
    microseconds (``tools/zmq_wake.py`` measures both). This costs up to ``2 * spin_s`` of one core's time a
    tick, which the spin yields to any other thread that needs the core. Outside the window, and until 3
    ticks have arrived, ``recv`` sleeps in ``poll`` as without it. For a closed loop's consumer that must
    react at once; a recorder or a display does not need it.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        topic: str = "poyo",
        rcvhwm: int = 1000,
        allow_remote: bool = False,
        clock: Callable[[], float] = time.monotonic,
        context: zmq.Context | None = None,
        spin_s: float = 0.0,
    ):
        check_endpoint(endpoint, allow_remote=allow_remote)
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic: expected a non-empty str, got {topic!r}")
        if not (isinstance(rcvhwm, int) and rcvhwm >= 0):
            raise ValueError(f"rcvhwm: expected an int >= 0 messages (0 = unlimited), got {rcvhwm!r}")
        if isinstance(spin_s, bool) or not (isinstance(spin_s, (int, float)) and 0 <= spin_s <= 1):
            raise ValueError(f"spin_s: expected 0 (off) to 1 seconds, got {spin_s!r}")
        self.spin_s = float(spin_s)
        self.spin_taken = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECEIPT_HISTORY)
        self.endpoint = endpoint
        self.topic = topic
        self._topic_raw = topic.encode("utf-8")
        self.clock = clock
        self.received = 0
        self.missed = 0
        self.restarts = 0
        self.invalid = 0
        self.other_topics = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self._warned_versions: set[int] = set()
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            self._sock.setsockopt(zmq.SUBSCRIBE, self._topic_raw)
            self._sock.connect(endpoint)
        except Exception:
            self._sock.close(linger=0)
            raise
        self._closed = False

    def _track_seq(self, seq: int) -> None:
        if self.last_seq is None:
            self.first_seq = seq
        elif seq > self.last_seq + 1:
            self.missed += seq - self.last_seq - 1
        elif seq <= self.last_seq:
            self.restarts += 1
            log.warning("seq went back from %d to %d: publisher restarted?", self.last_seq, seq)
        self.last_seq = seq

    def _take(self) -> TickMessage | None:
        """Receive one pending message (non-blocking); None if none is pending or it was skipped."""
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        t_recv = self.clock()
        if frames[0] != self._topic_raw:
            self.other_topics += 1
            return None
        try:
            msg = decode_tick(frames, t_recv_s=t_recv)
        except UnsupportedVersionError as e:
            self.invalid += 1
            if e.version not in self._warned_versions:
                self._warned_versions.add(e.version)
                log.warning("skipping messages: %s", e)
            return None
        except WireFormatError as e:
            self.invalid += 1
            log.warning("skipping invalid message: %s", e)
            return None
        self.received += 1
        self._track_seq(msg.seq)
        if math.isfinite(t_recv) and math.isfinite(msg.window_end_s):
            self._recent.append((t_recv, msg.window_end_s))
        return msg

    def recv(self, timeout_s: float | None = 1.0) -> TickMessage | None:
        """Next tick of our topic, or None after ``timeout_s`` seconds (None = wait forever).

        With ``spin_s`` > 0, busy-polls around the tick's expected arrival (see the class docstring)."""
        if self._closed:
            raise RuntimeError(f"subscriber on {self.endpoint} is closed")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        spin = self._spin_window()
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            left_s = None if deadline is None else deadline - time.monotonic()
            if left_s is not None and left_s <= 0:
                return self._take()
            wait_ms = None if left_s is None else math.ceil(left_s * 1000)
            if spin is not None:
                now = self.clock()
                if now >= spin[1]:
                    spin = None  # the tick is later than the window: sleep in poll until it comes
                elif now >= spin[0]:
                    msg = self._spin(spin[1], deadline)
                    if msg is not None:
                        return msg
                    continue
                elif spin[0] - now < 1e-3:  # poll counts whole ms: sleep the last fraction, then spin
                    time.sleep(spin[0] - now if left_s is None else min(spin[0] - now, left_s))
                    continue
                else:  # sleep in poll until the window, whole ms rounded down
                    until_ms = int((spin[0] - now) * 1000)
                    wait_ms = until_ms if wait_ms is None else min(wait_ms, until_ms)
            self._sock.poll(wait_ms, zmq.POLLIN)

    def _spin_window(self) -> tuple[float, float] | None:
        """(start, end) of the next busy-poll on the subscriber's clock, or None (spin off or no prediction)."""
        if self.spin_s <= 0:
            return None
        expected = predict_receipt(self._recent)
        return None if expected is None else (expected - self.spin_s, expected + self.spin_s)

    def _spin(self, until: float, deadline: float | None) -> TickMessage | None:
        """Busy-poll until a tick is taken, ``until`` (subscriber's clock) or ``deadline`` (monotonic), yielding
        the core between polls: spinning on a machine with few cores must not keep ZeroMQ's I/O threads from
        running (on the 2-core test VM a first version without the yield raised p99 from 0.58 to 0.99 ms)."""
        while True:
            msg = self._take()
            if msg is not None:
                self.spin_taken += 1
                return msg
            if self.clock() >= until or (deadline is not None and time.monotonic() >= deadline):
                return None
            os.sched_yield()  # a thread waiting for this core (ZeroMQ's I/O thread, say) runs at once

    def recv_latest(self, timeout_s: float | None = 1.0) -> TickMessage | None:
        """Wait for a tick like ``recv``, then drain the queue and return only the newest one.

        (ZeroMQ's CONFLATE does not work with multipart messages, so this drains by hand.)
        """
        msg = self.recv(timeout_s)
        if msg is None:
            return None
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            newer = self._take()
            if newer is not None:
                msg = newer
        return msg

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "missed": self.missed, "restarts": self.restarts,
                "invalid": self.invalid, "other_topics": self.other_topics, "spin_taken": self.spin_taken,
                "first_seq": self.first_seq, "last_seq": self.last_seq}

    def close(self) -> None:
        """Close the socket with linger 0. Idempotent."""
        if not self._closed:
            self._closed = True
            self._sock.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _format_line(msg: TickMessage, missed: int) -> str:
    vals = msg.values[-1].tolist() if msg.n_out else []
    shown = ", ".join(f"{v:.4g}" for v in vals[:8]) + (", ..." if len(vals) > 8 else "")
    return (f"seq={msg.seq} window_end={msg.window_end_s:.6f} recv_latency={msg.recv_latency_us / 1e3:.3f}ms "
            f"n_out={msg.n_out} dim={msg.dim} flags={msg.flags:#x} missed={missed} last=[{shown}]")


def listen(
    endpoint: str = DEFAULT_ENDPOINT,
    topic: str = "poyo",
    out_path: str | os.PathLike[str] | None = None,
    count: int | None = None,
    duration_s: float | None = None,
    print_every: int = 1,
    clock: Callable[[], float] = time.monotonic,
    *,
    out: TextIO | None = None,
    allow_remote: bool = False,
    rcvhwm: int = 10_000,
    idle_timeout_s: float | None = None,
    spin_s: float = 0.0,
) -> dict[str, Any]:
    """Receive ticks, print and/or record them, and return a summary.

    Stops after ``count`` ticks, ``duration_s`` seconds, ``idle_timeout_s`` seconds without a tick, or
    Ctrl-C, whichever comes first (none given: until Ctrl-C). ``print_every``: print one line for every
    N-th tick to ``out`` (default stdout; 0 = quiet). ``out_path``: append each tick as one JSON line
    (``wire.tick_to_record``; NaN as null; ``wire.tick_from_record`` reads it back), flushed per line.
    ``clock`` stamps receipt (pass ``pylsl.local_clock`` for the LSL clock). ``spin_s``: busy-poll around
    each tick's expected arrival (:class:`Subscriber`).
    Summary: received, missed (seq gaps), restarts, invalid, elapsed_s, latency percentiles (µs) of
    ``recv`` (newest spike -> receipt), ``send`` (newest spike -> handed to ZeroMQ) and ``transport``
    (send -> receipt), and the publisher's last counters.
    """
    if count is not None and count < 1:
        raise ValueError(f"count: must be >= 1 ticks or None, got {count}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s: must be > 0 seconds or None, got {duration_s}")
    if print_every < 0:
        raise ValueError(f"print_every: must be >= 0 ticks, got {print_every}")
    out = out if out is not None else sys.stdout
    stats = LatencyStats(["recv", "send", "transport"])
    last_counters: dict[str, int] = {}
    start = time.monotonic()
    stop_at = None if duration_s is None else start + duration_s
    last_msg_at = start
    sub = Subscriber(endpoint, topic=topic, rcvhwm=rcvhwm, allow_remote=allow_remote, clock=clock, spin_s=spin_s)
    interrupted = False
    try:
        record_file = open(out_path, "a", encoding="utf-8") if out_path is not None else None
        try:
            while count is None or sub.received < count:
                now = time.monotonic()
                if stop_at is not None and now >= stop_at:
                    break
                if idle_timeout_s is not None and now - last_msg_at >= idle_timeout_s:
                    break
                slice_s = 0.1 if stop_at is None else max(0.0, min(0.1, stop_at - now))
                msg = sub.recv(slice_s)
                if msg is None:
                    continue
                last_msg_at = time.monotonic()
                stats.record("recv", msg.recv_latency_us)
                stats.record("send", msg.send_latency_us)
                stats.record("transport", (msg.t_recv_s - msg.t_send_s) * 1e6)
                last_counters = dict(msg.counters)
                if record_file is not None:
                    record_file.write(json.dumps(tick_to_record(msg), allow_nan=False) + "\n")
                    record_file.flush()
                if print_every and sub.received % print_every == 0:
                    print(_format_line(msg, sub.missed), file=out, flush=True)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if record_file is not None:
                record_file.close()
    finally:
        sub.close()
    sub_stats = sub.stats()
    summary_stats = stats.summary()
    return {
        "endpoint": endpoint,
        "topic": topic,
        **sub_stats,
        "elapsed_s": time.monotonic() - start,
        "interrupted": interrupted,
        "latency_us": summary_stats["stages"],
        "publisher_counters": last_counters,
        "out_path": None if out_path is None else os.fspath(out_path),
    }

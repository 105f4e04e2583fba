"""Publisher/Subscriber/listen over real ZeroMQ sockets on loopback (tcp://127.0.0.1 and ipc://)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import threading
import time
from collections import deque

import numpy as np
import pytest
import zmq

from poyo_rt.stream.publisher import Publisher, Subscriber, check_endpoint, listen, predict_receipt
from poyo_rt.stream.wire import decode_tick, encode_tick, tick_from_record

pytestmark = pytest.mark.timeout(60)

ANY_PORT = "tcp://127.0.0.1:*"


def _send(pub: Publisher, i: int, n_out: int = 2, dim: int = 3, **kw) -> float:
    t = 100.0 + 0.02 * i
    return pub.send(
        window_end_s=t, newest_spike_s=t - 0.001, output_times_s=t - 0.01 * np.arange(n_out)[::-1],
        values=np.full((n_out, dim), i, dtype=np.float32), **kw,
    )


@contextlib.contextmanager
def _raw_sub(endpoint: str, prefix: bytes):
    """A plain ZeroMQ SUB socket on ``endpoint`` subscribed to ``prefix`` (b"": every topic), closed after."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def _recv_until(sub: Subscriber, pred, timeout_s: float = 10.0):
    """Receive until ``pred(msg)`` holds or the deadline passes; returns the messages received."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(0.05)
        if msg is not None:
            got.append(msg)
            if pred(msg):
                return got
    raise AssertionError(f"condition not met within {timeout_s} s; got {len(got)} messages")


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_every_message_arrives_in_order(transport: str, tmp_path) -> None:
    endpoint = ANY_PORT if transport == "tcp" else f"ipc://{tmp_path}/poyo.sock"
    n = 500
    with Publisher(endpoint, topic="poyo", tick_hz=1000) as pub, Subscriber(pub.endpoint, topic="poyo") as sub:
        assert pub.sndhwm == 1000  # one second at 1 kHz
        assert pub.wait_for_subscriber(10.0)
        for i in range(n):
            _send(pub, i, stages_us={"forward": 100.0 + i})
        got = _recv_until(sub, lambda m: m.seq == n - 1)
        assert [m.seq for m in got] == list(range(n))
        assert sub.missed == 0 and sub.received == n and sub.first_seq == 0
        last = got[-1]
        assert last.values.shape == (2, 3) and (last.values == n - 1).all()
        assert last.stages_us["forward"] == 100.0 + n - 1
        assert last.counters == {"send_dropped": 0}
        assert math.isnan(got[0].stages_us["publish"]) and last.stages_us["publish"] > 0  # previous send's µs
        assert pub.sent == n and pub.dropped == 0
        assert sub.recv(0.02) is None  # nothing left: times out, returns None


def test_xpub_wait_loses_nothing_when_subscriber_connects_first(tmp_path) -> None:
    """ipc connect-before-bind lost ~130 first messages in STREAMING-NOTES; waiting for the subscription loses none."""
    endpoint = f"ipc://{tmp_path}/early.sock"
    with Subscriber(endpoint) as sub:
        with Publisher(endpoint, wait_for_subscriber_s=10.0) as pub:
            assert pub.subscriptions_seen >= 1
            for i in range(50):
                _send(pub, i)
            got = _recv_until(sub, lambda m: m.seq == 49)
    assert [m.seq for m in got] == list(range(50))


def test_wait_for_subscriber_times_out_without_one() -> None:
    with Publisher(ANY_PORT) as pub:
        t0 = time.monotonic()
        assert not pub.wait_for_subscriber(0.05)
        assert time.monotonic() - t0 < 5.0


def test_stuck_subscriber_never_blocks_publisher_and_gap_is_detected() -> None:
    n = 20_000
    with Publisher(ANY_PORT, sndhwm=10) as pub, Subscriber(pub.endpoint, rcvhwm=10) as sub:
        assert pub.wait_for_subscriber(10.0)
        t0 = time.monotonic()
        worst_us = 0.0
        for i in range(n):  # the subscriber reads nothing meanwhile
            worst_us = max(worst_us, _send(pub, i))
        elapsed = time.monotonic() - t0
        assert elapsed < 30.0, f"{n} sends took {elapsed:.1f} s: the publisher blocked"
        assert pub.seq == n and pub.dropped == 0  # PUB drops past the HWM silently, it does not refuse
        # Drain what was queued, then send until a post-burst message arrives: the gap shows in seq.
        got = []
        i = n
        deadline = time.monotonic() + 10.0
        while not got or got[-1].seq < n:
            assert time.monotonic() < deadline, "no post-burst message arrived"
            msg = sub.recv(0.01)
            if msg is None:
                _send(pub, i)
                i += 1
            else:
                got.append(msg)
        assert sub.received < n
        assert sub.missed > 0
        assert sub.received + sub.missed == sub.last_seq - sub.first_seq + 1


def test_nodrop_counts_refused_messages() -> None:
    """A subscriber that does not read: with XPUB_NODROP the publisher refuses (and counts) messages once
    the queues are full. The messages are 16 KB each, so that 5,000 of them (80 MB) cannot all fit in the
    kernel's loopback TCP buffers (a few MB) behind the 5-message high-water marks: with ~300-byte messages
    all 1.5 MB once did, and nothing was refused."""
    n = 5_000
    with Publisher(ANY_PORT, sndhwm=5, nodrop=True) as pub, Subscriber(pub.endpoint, rcvhwm=5) as sub:
        assert pub.wait_for_subscriber(10.0)
        t0 = time.monotonic()
        for i in range(n):
            _send(pub, i, n_out=64, dim=64)
        assert time.monotonic() - t0 < 30.0
        assert pub.dropped > 0 and pub.sent + pub.dropped == n and pub.seq == n
        # The refusals travel in the next message that gets through.
        got = []
        deadline = time.monotonic() + 10.0
        while not got or got[-1].seq < n:
            assert time.monotonic() < deadline
            msg = sub.recv(0.01)
            if msg is None:
                _send(pub, n + len(got))
            else:
                got.append(msg)
        assert 0 < got[-1].counters["send_dropped"] <= pub.dropped
        assert sub.missed > 0


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://192.168.1.20:5556", "tcp://eth0:5556",
     "tcp://example.org:5556", "tcp://localhost:5556", "pgm://eth0;239.192.1.1:5555", "5556", ""],
)
def test_non_loopback_endpoint_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Publisher(endpoint)
    with pytest.raises(ValueError, match="endpoint"):
        Subscriber(endpoint)
    with pytest.raises(ValueError, match="endpoint"):
        listen(endpoint, count=1)


def test_loopback_endpoints_accepted() -> None:
    for ep in ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:*", "tcp://[::1]:5556", "ipc:///tmp/x", "inproc://x"):
        assert check_endpoint(ep) == ep
    assert check_endpoint("tcp://0.0.0.0:5556", allow_remote=True) == "tcp://0.0.0.0:5556"


def test_invalid_other_topic_and_unknown_version_skipped() -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(ANY_PORT)
    endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        with Subscriber(endpoint, topic="poyo") as sub:
            assert raw.poll(10_000)  # the subscription message arrived
            raw.recv()
            good = encode_tick(topic="poyo", seq=3, window_end_s=1.0, newest_spike_s=0.9,
                               output_times_s=[1.0], values=[[1.0]])
            v2 = [good[0], good[1][:4] + b"\x02\x00" + good[1][6:], good[2]]
            raw.send_multipart(v2)
            raw.send_multipart([good[0], good[1], good[2][:2]])  # truncated payload
            raw.send_multipart([b"poyo2"] + good[1:])  # prefix-matched by SUB, not our topic
            raw.send_multipart(good)
            msg = sub.recv(10.0)
            assert msg is not None and msg.seq == 3
            assert sub.invalid == 2 and sub.other_topics == 1 and sub.received == 1
    finally:
        raw.close(linger=0)


def test_publisher_restart_counted_not_missed(tmp_path) -> None:
    endpoint = f"ipc://{tmp_path}/restart.sock"
    with Subscriber(endpoint) as sub:
        with Publisher(endpoint, wait_for_subscriber_s=10.0) as pub:
            for i in range(5):
                _send(pub, i)
            _recv_until(sub, lambda m: m.seq == 4)
        with Publisher(endpoint) as pub:
            # The SUB resends its subscription on reconnect only when its socket is serviced (recv/poll),
            # so in one thread we alternate: service the subscriber, look for the subscription.
            deadline = time.monotonic() + 10.0
            while not pub.wait_for_subscriber(0.01):
                assert time.monotonic() < deadline, "subscriber did not reconnect"
                assert sub.recv(0.01) is None
            _send(pub, 0)
            _recv_until(sub, lambda m: m.seq == 0)
    assert sub.restarts == 1 and sub.missed == 0


def test_injected_clock_and_recv_latest() -> None:
    with Publisher(ANY_PORT, clock=lambda: 500.0) as pub, \
            Subscriber(pub.endpoint, clock=lambda: 500.25) as sub:
        assert pub.wait_for_subscriber(10.0)
        for i in range(20):
            _send(pub, i)
        # wait until everything is queued, then recv_latest returns the newest only
        first = sub.recv(10.0)
        assert first is not None and first.t_send_s == 500.0 and first.t_recv_s == 500.25
        deadline = time.monotonic() + 10.0
        latest = first
        while latest.seq < 19:
            assert time.monotonic() < deadline
            latest = sub.recv_latest(0.05) or latest
        assert sub.missed == 0 and sub.received == 20


def test_predict_receipt_from_the_median_period_and_the_fastest_recent_tick() -> None:
    # the subscriber's clock reads 1000 s more than the publisher's; one tick (10.06) was skipped
    ends = [10.00, 10.02, 10.04, 10.08, 10.10]
    lags = [0.0009, 0.0003, 0.0002, 0.0005, 0.0007]
    recent = [(1000.0 + end + lag, end) for end, lag in zip(ends, lags)]
    # next window ends one median step (20 ms, not the skip's 40) after the last; it arrives as fast as the fastest
    assert predict_receipt(recent) == pytest.approx(1000.0 + 10.12 + 0.0002, abs=1e-9)
    assert predict_receipt(deque(recent, maxlen=16)) == predict_receipt(recent)
    assert predict_receipt(recent[:2]) is None  # too few to know a period
    assert predict_receipt([(1.0, 5.0)] * 4) is None  # window ends that never advance: no period


def test_spinning_subscriber_takes_ticks_in_its_window_and_sleeps_outside() -> None:
    n, period = 30, 0.02
    with Publisher(ANY_PORT, tick_hz=50) as pub, Subscriber(pub.endpoint, spin_s=0.005) as sub:
        assert pub.wait_for_subscriber(10.0)
        got: list = []

        def receive() -> None:
            while len(got) < n:
                msg = sub.recv(2.0)
                if msg is None:
                    return
                got.append(msg)

        thread = threading.Thread(target=receive)
        thread.start()
        t = time.monotonic()
        for i in range(n):
            t += period
            time.sleep(max(0.0, t - time.monotonic()))
            now = time.monotonic()  # the window ends when it is sent: arrival = window end + transport
            pub.send(window_end_s=now, newest_spike_s=now, output_times_s=[now], values=np.full((1, 2), i, np.float32))
        thread.join(10)
        assert not thread.is_alive()
        assert [m.seq for m in got] == list(range(n)) and sub.missed == 0
        assert [float(m.values[0, 0]) for m in got] == list(range(n))
        # from the 4th tick on it knows when ticks come, and takes most of them while spinning (none before)
        assert n // 2 <= sub.spin_taken <= n - 3, sub.spin_taken
        assert sub.stats()["spin_taken"] == sub.spin_taken
        # the stream stops: it spins only through the expected tick's window (±5 ms), then sleeps in poll
        cpu = time.thread_time()
        assert sub.recv(0.5) is None
        assert time.thread_time() - cpu < 0.2  # spinning the whole timeout would take ~0.5 s of CPU


def test_closed_publisher_and_bad_arguments() -> None:
    pub = Publisher(ANY_PORT)
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        _send(pub, 0)
    with pytest.raises(ValueError, match="sndhwm"):
        Publisher(ANY_PORT, sndhwm=-1)
    with pytest.raises(ValueError, match="topic"):
        Publisher(ANY_PORT, topic="")
    with pytest.raises(ValueError, match="values"):
        with Publisher(ANY_PORT) as p:
            p.send(window_end_s=1.0, newest_spike_s=1.0, output_times_s=[1.0], values=[1.0])
    with pytest.raises(ValueError, match="count"):
        listen(ANY_PORT, count=0)
    for bad in (-0.001, 2.0, "1", True):
        with pytest.raises(ValueError, match="spin_s"):
            Subscriber(ANY_PORT.replace("*", "5599"), spin_s=bad)


def test_listen_records_ndjson_that_decodes_back(tmp_path) -> None:
    n = 30
    out_path = tmp_path / "ticks.ndjson"
    printed = io.StringIO()
    result: dict = {}
    with Publisher(ANY_PORT, topic="poyo") as pub:
        def run() -> None:
            result.update(listen(pub.endpoint, "poyo", out_path=out_path, count=n, duration_s=30.0,
                                 print_every=10, out=printed))

        th = threading.Thread(target=run)
        th.start()
        try:
            assert pub.wait_for_subscriber(10.0)
            sent = []
            for i in range(n):
                _send(pub, i, n_out=1 + i % 3, dim=2, flags=i % 8)
                sent.append(i)
        finally:
            th.join(20.0)
    assert not th.is_alive()
    assert result["received"] == n and result["missed"] == 0 and not result["interrupted"]
    lat = result["latency_us"]
    for stage in ("recv", "send", "transport"):
        assert lat[stage]["count"] == n
        for key in ("median_us", "p90_us", "p99_us", "p99_9_us", "max_us"):
            assert key in lat[stage]
    assert lat["transport"]["min_us"] >= 0  # same clock on both sides
    assert result["publisher_counters"] == {"send_dropped": 0}
    lines = out_path.read_text().splitlines()
    assert len(lines) == n
    back = [tick_from_record(json.loads(line)) for line in lines]
    for i, m in enumerate(back):
        assert m.seq == i and m.flags == i % 8 and m.values.shape == (1 + i % 3, 2)
        assert (m.values == i).all()
        assert m.recv_latency_us == pytest.approx(json.loads(lines[i])["recv_latency_us"])
        assert math.isfinite(m.t_recv_s)
    assert len(printed.getvalue().splitlines()) == n // 10
    assert "seq=9 " in printed.getvalue()


def test_listen_stops_on_duration_without_publisher() -> None:
    t0 = time.monotonic()
    res = listen("tcp://127.0.0.1:1", duration_s=0.2, print_every=0)
    assert res["received"] == 0 and 0.15 < time.monotonic() - t0 < 10.0


def test_wire_frames_from_send_decode_with_plain_decode() -> None:
    """What goes on the socket is exactly the documented format (decoded without the Subscriber)."""
    with Publisher(ANY_PORT, topic="dec") as pub, _raw_sub(pub.endpoint, b"dec") as raw:
        assert pub.wait_for_subscriber(10.0)
        _send(pub, 4, counters={"overflow": 2})
        assert raw.poll(10_000)
        msg = decode_tick(raw.recv_multipart())
    assert msg.topic == "dec" and msg.counters == {"overflow": 2, "send_dropped": 0}


def test_warm_sends_nothing_and_keeps_counting_subscriptions() -> None:
    """warm() (the engine's pre-tick) runs the encoding and a ZeroMQ send into a socket bound nowhere: a SUB
    socket subscribed to every topic receives only the real ticks, in order, with consecutive sequence numbers."""
    with Publisher(ANY_PORT, topic="poyo", tick_hz=100) as pub:
        with _raw_sub(pub.endpoint, b"") as everything:
            assert pub.wait_for_subscriber(10.0)
            pub.warm()  # before any message: nothing to encode yet
            for i in range(20):
                pub.warm()
                _send(pub, i)
                pub.warm()
            got = []
            while everything.poll(500):
                got.append(decode_tick(everything.recv_multipart()))
            assert [m.seq for m in got] == list(range(20))
        with Subscriber(pub.endpoint, topic="poyo") as late:  # a subscription arriving between ticks
            seen = pub.subscriptions_seen
            deadline = time.monotonic() + 10.0
            while pub.subscriptions_seen == seen and time.monotonic() < deadline:
                late.recv(0.01)
                pub.warm()  # services subscriptions, as send() does
            assert pub.subscriptions_seen > seen
        assert pub.sent == 20
    pub.warm()  # closed: nothing happens

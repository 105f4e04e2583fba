"""Tests of poyo_rt.replay.player and poyo_rt.replay.command with real LSL inlets on loopback, real time.

conftest.py has applied the machine-scope LSL config before this module imports pylsl. Each test plays
a short synthetic session (2 s, sped up where the point is not 1x pacing) under unique stream names.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

from poyo_rt.replay.command import ProgressReporter, add_parser, cmd_replay
from poyo_rt.replay.player import SessionPlayer
from poyo_rt.replay.session import Session
from poyo_rt.replay.synthetic import generate_session
from poyo_rt.stream.lsl import SpikeInlet, local_clock, resolve_stream

REPO = Path(__file__).resolve().parents[1]
TS_TOL_S = 1e-3  # timestamp vs schedule (the brief's bound; measured: exact to float64)


@pytest.fixture(scope="module")
def session() -> Session:
    """2 s, 16 units, behaviour at 100 Hz on arange(200) * 0.01: the span is exactly 2.0 s = 400 x 5 ms."""
    return generate_session(n_units=16, duration_s=2.0, seed=3)


class Collector:
    """Real inlets on a player's two streams; records samples, timestamps and local arrival times."""

    def __init__(self, spike_name: str, behavior_name: str | None) -> None:
        self.spikes = SpikeInlet(resolve_stream(name=spike_name, timeout_s=5.0, unique_wait_s=0))
        self.behavior: pylsl.StreamInlet | None = None
        self.behavior_info: pylsl.StreamInfo | None = None
        if behavior_name is not None:
            info = resolve_stream(name=behavior_name, timeout_s=5.0, unique_wait_s=0)
            self.behavior = pylsl.StreamInlet(info, max_buflen=60, recover=False)
            self.behavior_info = self.behavior.info(timeout=5.0)
            self.behavior.open_stream(timeout=5.0)
        self._spk: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._beh: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def pull(self) -> None:
        t, u = self.spikes.pull()
        if t.size:
            self._spk.append((t, u, np.full(t.size, local_clock())))
        if self.behavior is not None:
            data, ts = self.behavior.pull_chunk(timeout=0.0, max_samples=100_000)
            if ts:
                self._beh.append((np.asarray(data, np.float32), np.asarray(ts), np.full(len(ts), local_clock())))

    def until(self, n_spikes: int, n_behavior: int, timeout_s: float, poll) -> None:
        def done() -> bool:
            self.pull()
            return self.n_spikes >= n_spikes and self.n_behavior >= n_behavior

        poll(done, timeout_s=timeout_s, interval_s=0.001, what=f"{n_spikes} spikes and {n_behavior} behaviour samples")

    @property
    def n_spikes(self) -> int:
        return sum(len(x[0]) for x in self._spk)

    @property
    def n_behavior(self) -> int:
        return sum(len(x[1]) for x in self._beh)

    def spikes_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times_s, units, arrival_s), each (n,)."""
        if not self._spk:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros(0)
        return tuple(np.concatenate([x[i] for x in self._spk]) for i in range(3))  # type: ignore[return-value]

    def behavior_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values (m, D) float32, times_s (m,), arrival_s (m,))."""
        return tuple(np.concatenate([x[i] for x in self._beh]) for i in range(3))  # type: ignore[return-value]

    def close(self) -> None:
        self.spikes.close()
        if self.behavior is not None:
            self.behavior.close_stream()


def connect(player: SessionPlayer) -> Collector:
    player.open()
    collector = Collector(player.spike_name, player.behavior_name)
    assert player.wait_for_consumers(5.0)
    return collector


def channel_labels(info: pylsl.StreamInfo) -> list[str]:
    out, ch = [], info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value("label"))
        ch = ch.next_sibling("channel")
    return out


def check_never_early(times_s: np.ndarray, arrival_s: np.ndarray) -> None:
    """Nothing arrives before its timestamp (mne-lsl's player runs a chunk ahead; we must not)."""
    early = times_s - arrival_s
    assert early.max() <= 0.0, f"a sample arrived {early.max() * 1e3:.3f} ms before its timestamp"


# ------------------------------------------------------------------------------------------------
# Playing
# ------------------------------------------------------------------------------------------------


def test_real_time_replay_equals_session(session: Session, stream_name: str, poll_until) -> None:
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=stream_name + "-beh")
    assert player.period_s == pytest.approx(2.0, abs=1e-12)
    rx = connect(player)
    try:
        assert rx.spikes.unit_ids == session.unit_ids  # from the XML <desc><units>
        player.start()
        rx.until(session.n_spikes, session.behavior.shape[0], 6.0, poll_until)
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None and not stats.stopped and stats.loops == 1
    assert stats.spikes_pushed == session.n_spikes and stats.behavior_pushed == session.behavior.shape[0]
    t, u, arrival = rx.spikes_arrays()
    assert t.size == session.n_spikes
    np.testing.assert_array_equal(u, session.spike_units)
    expected = stats.t_play0_s + session.spike_times_s
    assert np.abs(t - expected).max() < TS_TOL_S
    check_never_early(t, arrival)
    assert np.median(arrival - t) < 0.010  # at most a chunk (5 ms) plus transport, typically
    values, bt, barrival = rx.behavior_arrays()
    np.testing.assert_array_equal(values, session.behavior)
    assert np.abs(bt - (stats.t_play0_s + session.behavior_times_s)).max() < TS_TOL_S
    check_never_early(bt, barrival)
    assert stats.wall_s == pytest.approx(session.end_s, abs=0.05)
    assert stats.max_behavior_per_chunk <= 3  # 100 Hz behaviour, 5 ms chunks: 0 or 1 each
    rx.close()


def binned_reference(session: Session, t_a: float, bin_s: float, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin index, unit) of every spike, each sorted by (bin, unit): the independent reference of a counts replay
    (np.histogram2d over the bin edges, not the player's arithmetic)."""
    edges = np.arange(n_bins + 1) * bin_s
    hist, _, _ = np.histogram2d(session.spike_times_s - t_a, session.spike_units, bins=[edges, np.arange(
        session.n_units + 1) - 0.5])
    k, u = np.nonzero(hist)
    reps = hist[k, u].astype(np.int64)
    return np.repeat(k, reps), np.repeat(u, reps)


def test_counts_replay_bins_every_spike_and_sends_each_bin_at_its_end(session: Session, stream_name: str,
                                                                       poll_until) -> None:
    """--spike-layout counts: a regular stream, one channel per unit, one sample per bin holding the bin's counts,
    stamped at the bin's end and never sent before it; every spike is in exactly one bin."""
    bin_s, speed = 0.02, 4.0
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=None, speed=speed, spike_layout="counts",
                           bin_s=bin_s)
    assert player.period_s == pytest.approx(2.0, abs=1e-12) and player.spike_rate_hz == pytest.approx(200.0)
    rx = connect(player)
    try:
        assert rx.spikes.layout == "counts" and rx.spikes.unit_ids == session.unit_ids
        assert rx.spikes.nominal_srate_hz == pytest.approx(200.0)
        player.start()
        rx.until(session.n_spikes, 0, 6.0, poll_until)
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None and stats.spikes_pushed == session.n_spikes and stats.loops == 1
    t, u, arrival = rx.spikes_arrays()
    assert t.size == session.n_spikes
    k_ref, u_ref = binned_reference(session, player.t_a, bin_s, 100)
    k = np.rint((t - stats.t_play0_s) * speed / bin_s).astype(np.int64) - 1  # stamped at the end of bin k
    np.testing.assert_allclose(t, stats.t_play0_s + (k + 1) * bin_s / speed, atol=TS_TOL_S, rtol=0)
    order = np.lexsort((u, k))
    np.testing.assert_array_equal(k[order], k_ref)
    np.testing.assert_array_equal(u[order], u_ref)
    check_never_early(t, arrival)
    assert sum(rx.spikes.drops.values()) == 0  # regular, contiguous bins: none counted missing
    rx.close()


def test_counts_replay_loops_on_whole_bins(session: Session, stream_name: str, poll_until) -> None:
    bin_s, speed = 0.03, 8.0  # 2 s is not whole 30 ms bins: the span grows to 67 bins (2.01 s), an empty tail
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=None, speed=speed, spike_layout="counts",
                           bin_s=bin_s, loop=True, max_loops=2)
    assert player.period_s == pytest.approx(67 * bin_s, abs=1e-12)
    rx = connect(player)
    try:
        player.start()
        rx.until(2 * session.n_spikes, 0, 6.0, poll_until)
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None and stats.loops == 2 and stats.spikes_pushed == 2 * session.n_spikes
    t, u, _ = rx.spikes_arrays()
    k = np.rint((t - stats.t_play0_s) * speed / bin_s).astype(np.int64) - 1  # bins counted across both passes
    k_ref, u_ref = binned_reference(session, player.t_a, bin_s, 67)
    order = np.lexsort((u, k))
    np.testing.assert_array_equal(k[order], np.concatenate([k_ref, k_ref + 67]))
    np.testing.assert_array_equal(u[order], np.concatenate([u_ref, u_ref]))
    assert sum(rx.spikes.drops.values()) == 0  # the wrap keeps the stream regular
    rx.close()


@pytest.mark.parametrize("speed", [2.0, 4.0])
def test_speed_scales_wall_time_and_timestamps(session: Session, stream_name: str, poll_until, speed: float) -> None:
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=stream_name + "-beh", speed=speed)
    rx = connect(player)
    try:
        assert rx.behavior_info is not None
        assert rx.behavior_info.nominal_srate() == pytest.approx(100.0 * speed)
        t_start = time.monotonic()
        player.start()
        rx.until(session.n_spikes, session.behavior.shape[0], 6.0, poll_until)
        took_s = time.monotonic() - t_start
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None
    assert stats.wall_s == pytest.approx(session.end_s / speed, abs=0.03)
    assert took_s < session.end_s / speed + 0.25
    t, u, arrival = rx.spikes_arrays()
    np.testing.assert_array_equal(u, session.spike_units)
    assert np.abs(t - (stats.t_play0_s + session.spike_times_s / speed)).max() < TS_TOL_S
    assert np.ptp(t) == pytest.approx(np.ptp(session.spike_times_s) / speed, abs=1e-6)
    check_never_early(t, arrival)
    _, bt, _ = rx.behavior_arrays()
    np.testing.assert_allclose(np.diff(bt), 0.01 / speed, atol=1e-9)
    rx.close()


def test_loop_exact_multiple_of_chunk_has_no_burst(session: Session, stream_name: str, poll_until) -> None:
    """Span 2.0 s = 400 chunks of 5 ms (100 wall chunks at 4x): three passes, continuous and paced."""
    speed, loops = 4.0, 3
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=stream_name + "-beh", speed=speed,
                           loop=True, max_loops=loops, chunk_s=0.005)
    assert player.period_s == 2.0 and (player.period_s / speed / player.chunk_s) == 100.0
    rx = connect(player)
    try:
        player.start()
        n_beh = session.behavior.shape[0]
        rx.until(loops * session.n_spikes, loops * n_beh, 8.0, poll_until)
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None and stats.loops == loops and not stats.stopped
    assert stats.spikes_pushed == loops * session.n_spikes and stats.behavior_pushed == loops * n_beh
    t, u, arrival = rx.spikes_arrays()
    assert t.size == loops * session.n_spikes  # no duplicates, none skipped
    np.testing.assert_array_equal(u, np.tile(session.spike_units, loops))
    expected = np.concatenate([player.schedule_s(session.spike_times_s, k) for k in range(loops)])
    assert np.abs(t - expected).max() < TS_TOL_S
    assert np.all(np.diff(t) >= 0)
    wraps = np.arange(1, loops) * session.n_spikes
    assert np.all(t[wraps] > t[wraps - 1])  # strictly later across each wrap
    check_never_early(t, arrival)
    values, bt, barrival = rx.behavior_arrays()
    np.testing.assert_array_equal(values, np.tile(session.behavior, (loops, 1)))
    # one regular grid across the wraps: every step is dt / speed
    np.testing.assert_allclose(np.diff(bt), 0.01 / speed, atol=1e-9)
    check_never_early(bt, barrival)
    # no burst at the wrap: pushes stay a chunk's worth (2 behaviour samples at 4x), arrivals track the schedule
    assert stats.max_behavior_per_chunk <= 4
    assert stats.max_spikes_per_chunk < session.n_spikes / 10
    near_wrap = np.abs((bt - stats.t_play0_s)[:, None] - np.arange(1, loops) * 0.5).min(axis=1) < 0.02
    assert near_wrap.sum() >= 4 * (loops - 1)
    assert (barrival - bt)[near_wrap].max() < 0.1
    rx.close()


def test_start_and_duration_select_a_part(session: Session, stream_name: str, poll_until) -> None:
    speed, start_s, duration_s = 2.0, 0.5, 1.0
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=stream_name + "-beh", speed=speed,
                           start_s=start_s, duration_s=duration_s)
    part = session.slice(start_s, start_s + duration_s)
    assert player.n_spikes == part.n_spikes and player.n_behavior == part.behavior.shape[0] == 100
    rx = connect(player)
    try:
        player.start()
        rx.until(part.n_spikes, part.behavior.shape[0], 5.0, poll_until)
        stats = player.join(timeout_s=2.0)
    finally:
        player.close()
    assert stats is not None
    t, u, _ = rx.spikes_arrays()
    np.testing.assert_array_equal(u, part.spike_units)
    assert np.abs(t - (stats.t_play0_s + (part.spike_times_s - start_s) / speed)).max() < TS_TOL_S
    values, bt, _ = rx.behavior_arrays()
    np.testing.assert_array_equal(values, part.behavior)
    assert np.abs(bt - (stats.t_play0_s + (part.behavior_times_s - start_s) / speed)).max() < TS_TOL_S
    assert stats.spikes_pushed == part.n_spikes and stats.behavior_pushed == 100
    rx.close()


def test_stop_midway_keeps_what_was_pushed(session: Session, stream_name: str, poll_until) -> None:
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=None, loop=True)
    rx = connect(player)
    try:
        player.start()
        rx.until(20, 0, 5.0, poll_until)
        assert player.is_playing
        t_stop = time.monotonic()
        stats = player.stop()
        assert time.monotonic() - t_stop < 0.2
        assert stats is not None and stats.stopped and stats.loops == 0
        assert not player.is_playing
        assert 20 <= stats.spikes_pushed < session.n_spikes
        rx.until(stats.spikes_pushed, 0, 2.0, poll_until)
    finally:
        player.close()
    t, u, _ = rx.spikes_arrays()
    assert t.size == stats.spikes_pushed  # exactly what was pushed, nothing after the stop
    np.testing.assert_array_equal(u, session.spike_units[: t.size])
    rx.close()


def test_error_in_thread_surfaces(session: Session, stream_name: str) -> None:
    def boom(fraction: float, elapsed_s: float) -> None:
        if elapsed_s > 0.05:
            raise RuntimeError("progress sink failed")

    player = SessionPlayer(session, spike_name=stream_name, behavior_name=None, speed=4.0, progress=boom,
                           progress_interval_s=0.01)
    player.start()
    with pytest.raises(RuntimeError, match="progress sink failed"):
        player.join(timeout_s=3.0)
    player.close()
    # ... and through stop() / the context manager
    with pytest.raises(RuntimeError, match="progress sink failed"):
        with SessionPlayer(session, spike_name=stream_name + "-b", behavior_name=None, speed=4.0, progress=boom,
                           progress_interval_s=0.01) as player2:
            deadline = time.monotonic() + 3.0
            while player2.is_playing and time.monotonic() < deadline:
                time.sleep(0.01)


def test_behavior_stream_rate_labels_and_units_desc(session: Session, stream_name: str) -> None:
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=stream_name + "-beh", speed=1.0).open()
    try:
        beh = pylsl.StreamInlet(resolve_stream(name=stream_name + "-beh", timeout_s=5.0, unique_wait_s=0))
        info = beh.info(timeout=5.0)
        assert info.nominal_srate() == pytest.approx(100.0)
        assert info.channel_format() == pylsl.cf_float32 and info.channel_count() == 2
        assert info.type() == "Behavior"
        assert channel_labels(info) == ["vx", "vy"]
        assert info.desc().child("channels").child("channel").child_value("unit") == "m/s"
        assert info.desc().child("replay").child_value("session_id") == session.session_id
        spk = pylsl.StreamInlet(resolve_stream(name=stream_name, timeout_s=5.0, unique_wait_s=0)).info(timeout=5.0)
        assert spk.nominal_srate() == 0.0 and spk.channel_format() == pylsl.cf_int32 and spk.channel_count() == 1
        assert spk.source_id() != info.source_id()
    finally:
        player.close()


def test_validation_names_the_field(session: Session) -> None:
    with pytest.raises(ValueError, match="speed"):
        SessionPlayer(session, speed=0)
    with pytest.raises(ValueError, match="chunk_s"):
        SessionPlayer(session, chunk_s=-1)
    with pytest.raises(ValueError, match="start_s"):
        SessionPlayer(session, start_s=5.0)
    with pytest.raises(ValueError, match="duration_s"):
        SessionPlayer(session, duration_s=0.0)
    with pytest.raises(ValueError, match="max_loops"):
        SessionPlayer(session, max_loops=2)
    with pytest.raises(TypeError, match="session"):
        SessionPlayer("not a session")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spike_layout"):
        SessionPlayer(session, spike_layout="bins")
    with pytest.raises(ValueError, match="bin_s=0.01 needs spike_layout='counts'"):
        SessionPlayer(session, bin_s=0.01)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="bin_s"):
            SessionPlayer(session, spike_layout="counts", bin_s=bad)
    with pytest.raises(ValueError, match="not a whole number of bins"):
        SessionPlayer(session, spike_layout="counts", bin_s=0.03, duration_s=1.0)
    assert SessionPlayer(session, spike_layout="counts").bin_s == 0.01  # the default bin


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="poyo-rt")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["replay", *argv])


def test_cli_replays_npz_with_duration(session: Session, tmp_path: Path, stream_name: str, poll_until,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = session.to_npz(tmp_path / "small.npz")
    args = parse([str(path), "--duration", "0.5", "--speed", "2", "--name", stream_name,
                  "--behavior-name", stream_name + "-beh", "--wait-consumers", "5", "--no-progress"])
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(cmd_replay(args)))
    worker.start()
    try:
        rx = Collector(stream_name, stream_name + "-beh")
        part = session.slice(session.start_s, session.start_s + 0.5)
        rx.until(part.n_spikes, part.behavior.shape[0], 5.0, poll_until)
    finally:
        worker.join(timeout=5.0)
    assert result == [0]
    t, u, _ = rx.spikes_arrays()
    np.testing.assert_array_equal(u, part.spike_units)
    values, _, _ = rx.behavior_arrays()
    np.testing.assert_array_equal(values, part.behavior)
    assert f"replay done: {part.n_spikes} spikes, {part.behavior.shape[0]} behaviour samples" in capsys.readouterr().out
    rx.close()


def test_cli_bad_inputs_exit_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    assert cmd_replay(parse([str(tmp_path / "missing.npz")])) == 2
    assert "no such file" in caplog.text
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    assert cmd_replay(parse([str(bad), "--no-progress"])) == 2
    assert "bad.npz" in caplog.text
    assert cmd_replay(parse(["synthetic", "--synthetic-duration", "1", "--speed", "0"])) == 2
    assert "speed" in caplog.text
    assert cmd_replay(parse(["synthetic", "--synthetic-duration", "1", "-O", "nokey"])) == 2


def test_cli_sigint_stops_cleanly(stream_name: str) -> None:
    code = (
        "import argparse, logging, sys\n"
        "from poyo_rt.replay.command import add_parser\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "p = argparse.ArgumentParser(); add_parser(p.add_subparsers(dest='command'))\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
    )
    argv = ["replay", "synthetic", "--synthetic-units", "8", "--synthetic-duration", "5", "--loop",
            "--name", stream_name, "--no-behavior"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        inlet = SpikeInlet(resolve_stream(name=stream_name, timeout_s=10.0, unique_wait_s=0))
        deadline = time.monotonic() + 5.0
        while inlet.n_spikes == 0 and time.monotonic() < deadline:  # playing: spikes arrive
            inlet.pull()
            time.sleep(0.005)
        assert inlet.n_spikes > 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "replay stopped:" in out and "(stopped)" in out
    assert "SIGINT received" in err
    inlet.close()


def test_progress_reporter_bar_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = ProgressReporter(tty, total_wall_s=30.0, looping=False, width=10)
    bar(0.5, 15.0)
    bar.finish()
    assert tty.getvalue() == "\rreplay [#####-----]  50.0%  0:15 / 0:30 \n"
    caplog.set_level(logging.INFO, logger="poyo_rt.replay.command")
    plain = ProgressReporter(io.StringIO(), total_wall_s=30.0, looping=False, log_every_s=10.0)
    for elapsed in (1.0, 10.5, 12.0, 21.0):
        plain(elapsed / 30.0, elapsed)
    assert [r.getMessage() for r in caplog.records] == [
        "replay: 35.0 % of 0:30, 0:10 elapsed",
        "replay: 70.0 % of 0:30, 0:21 elapsed",
    ]

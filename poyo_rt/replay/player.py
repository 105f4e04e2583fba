"""Play a :class:`~poyo_rt.replay.session.Session` as LSL streams, in real time or faster.

Two outlets:

- spikes, in one of two layouts (the two a decoder's inlet reads; the unit ids in ``<desc><units>``):
  *events* (default): irregular rate, one int32 channel = unit index, one sample per spike, each stamped
  with its own scheduled LSL time; or *counts*, as binned-count acquisition systems publish: a regular
  stream of one int32 channel per unit, one sample per bin of ``bin_s`` session seconds, holding the
  bin's spike counts and stamped, and sent, at the bin's end (a count is known only once its bin closes);
- behaviour: a *regular* float32 stream (nominal rate = ``speed`` / the median behaviour sample
  interval, channel labels in ``<desc><channels>``), the ground truth for a decoder.

Timeline. The played span is ``[t_a, t_a + period_s)`` of session time, ``t_a = session.start_s +
start_s``. A sample at session time ``t`` in loop ``k`` (0, 1, ...) is scheduled at LSL time::

    t_lsl = t_play0 + (t - t_a + k * period_s) / speed

so a looped replay continues monotonically, whatever the period's relation to ``chunk_s``.

Pacing. Chunk ``j`` wakes at the absolute deadline ``t_play0 + j * chunk_s`` (wall seconds on
``clock``), never after a relative sleep, so error does not accumulate; its lateness is counted. Each
chunk pushes exactly the samples whose scheduled time is ``<=`` the wake-up time: nothing is ever
stamped or sent ahead of real time, and a wrap pushes only what is due (the end of loop ``k`` and,
when due, the start of loop ``k + 1``). Deadlines missed entirely (a stalled machine) are skipped and
counted, and the next chunk catches up with what fell due meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from poyo_rt.replay.session import Session
from poyo_rt.stream import lsl

log = logging.getLogger(__name__)

__all__ = ["PlayerStats", "SessionPlayer"]

ProgressCallback = Callable[[float, float], None]

_HIST_BIN_US = 10.0  # lateness histogram bin, µs
_HIST_BINS = 10_000  # up to 100 ms; later wake-ups go to an overflow bin


@dataclass(frozen=True)
class PlayerStats:
    """What one :meth:`SessionPlayer.run` did.

    Attributes:
        spikes_pushed, behavior_pushed: spikes and behaviour samples handed to the outlets (a counts
            stream's spikes are the sums of its bins).
        loops: complete passes through the span (1 for a full non-looping play, 0 if stopped early).
        chunks: deadlines served. late_chunks: those woken more than ``late_threshold_s`` late.
        skipped_deadlines: deadlines missed entirely (woke after the next one) and not served.
        max_lateness_us, p50_lateness_us, p99_lateness_us: wake-up lateness vs. the deadline, µs
            (percentiles from a 10 µs histogram).
        max_spikes_per_chunk, max_behavior_per_chunk: the largest single push of each stream (spikes, samples).
        wall_s: seconds from ``t_play0_s`` to the last chunk. played_s: session seconds covered.
        t_play0_s: LSL time of the span start (the schedule's origin). stopped: ended by a stop request.
    """

    spikes_pushed: int
    behavior_pushed: int
    loops: int
    chunks: int
    late_chunks: int
    skipped_deadlines: int
    max_lateness_us: float
    p50_lateness_us: float
    p99_lateness_us: float
    max_spikes_per_chunk: int
    max_behavior_per_chunk: int
    wall_s: float
    played_s: float
    t_play0_s: float
    stopped: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One human line."""
        return (
            f"{self.spikes_pushed} spikes, {self.behavior_pushed} behaviour samples, {self.loops} loop(s), "
            f"{self.played_s:.2f} session s in {self.wall_s:.2f} s; lateness p50 {self.p50_lateness_us:.0f} µs, "
            f"p99 {self.p99_lateness_us:.0f} µs, max {self.max_lateness_us:.0f} µs; "
            f"{self.late_chunks}/{self.chunks} late chunks, {self.skipped_deadlines} skipped deadlines"
            + (" (stopped)" if self.stopped else "")
        )


class _Track:
    """One stream's timeline: sorted sample offsets from the span start and their rows."""

    def __init__(self, rel_s: np.ndarray, rows: np.ndarray | None) -> None:
        self.rel_s = rel_s  # (n,) float64 session seconds since t_a, sorted, in [0, period_s] (a sample at
        # period_s, a counts bin's end, goes out before the wrap)
        self.rows = rows  # (n, C) int32 or float32, C-contiguous
        self.n = int(rel_s.size)
        self.outlet: Any = None
        self.loop = 0
        self.index = 0
        self.pushed = 0
        self.max_push = 0

    def reset(self) -> None:
        self.loop = self.index = self.pushed = self.max_push = 0

    def _take(self, i: int, j: int) -> np.ndarray:
        """Rows of samples ``i:j`` of a pass."""
        return self.rows[i:j]  # type: ignore[index]

    def due(
        self, elapsed_s: float, period_s: float, n_loops: float
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Rows and session offsets (incl. loop offsets) of samples due at ``elapsed_s`` session seconds."""
        rows: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        while True:
            base = self.loop * period_s
            j = int(np.searchsorted(self.rel_s, elapsed_s - base, side="right"))
            if j > self.index:
                rows.append(self._take(self.index, j))
                offsets.append(self.rel_s[self.index : j] + base)
                self.index = j
            if self.index < self.n or elapsed_s < base + period_s or self.loop + 1 >= n_loops:
                return rows, offsets
            self.loop += 1
            self.index = 0

    def exhausted(self, n_loops: float) -> bool:
        return self.index >= self.n and self.loop + 1 >= n_loops


class _CountsTrack(_Track):
    """The spike track as binned counts: bin k of a pass covers session offsets ``[k b, (k + 1) b)`` and is a
    sample due (and stamped) at its end, ``(k + 1) b``. Bins are counted when due, so memory does not grow with
    the number of units times bins."""

    def __init__(self, spikes: _Track, n_units: int, bin_s: float, n_bins: int) -> None:
        super().__init__(np.arange(1, n_bins + 1) * bin_s, None)
        self.n_units = n_units
        # each spike's bin, computed once: searching these integers keeps bin membership and counting consistent
        self._bin = np.minimum(np.floor(spikes.rel_s / bin_s).astype(np.int64), n_bins - 1)
        self._unit = spikes.rows[:, 0].astype(np.int64)  # type: ignore[index]

    def _take(self, i: int, j: int) -> np.ndarray:
        """Counts (j - i, units) int32 of bins ``i:j`` of a pass."""
        lo, hi = np.searchsorted(self._bin, [i, j], side="left")
        counts = np.zeros((j - i, self.n_units), dtype=np.int32)
        np.add.at(counts, (self._bin[lo:hi] - i, self._unit[lo:hi]), 1)
        return counts


def _check_number(field: str, value: Any, *, minimum: float, inclusive: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        rule = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ValueError(f"{field} must be a finite number {rule}, got {value!r}")
    return float(value)


def _check_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty str, got {value!r}")
    return value


class SessionPlayer:
    """Plays a :class:`Session` over two LSL outlets (spike events + regular behaviour), paced on ``clock``.

    Use :meth:`run` (blocking) or :meth:`start` / :meth:`stop` (background thread; errors raised there
    are re-raised by :meth:`stop` / :meth:`join`), or ``with SessionPlayer(...) as player:`` (starts on
    entry; stops and closes the outlets on exit). Outlets are created by :meth:`open` (called by
    :meth:`run` when needed) and stay open after a run until :meth:`close`, so that inlets can drain
    them; samples pushed before an inlet subscribes are not delivered to it (see
    :meth:`wait_for_consumers`).

    Args:
        session: what to play.
        spike_name: LSL name of the spike events stream.
        behavior_name: LSL name of the behaviour stream; None plays no behaviour (also skipped when the
            session has none).
        source_id_prefix: outlets get source ids ``f"{prefix}-spikes"`` / ``f"{prefix}-behavior"``;
            default ``f"poyo-replay-{spike_name}-{session_id}"``.
        speed: playback speed (> 0): 2 plays a session second in half a wall second; timestamps and
            the behaviour stream's nominal rate scale with it.
        loop: play the span again and again (until :meth:`stop`, or ``max_loops`` passes).
        start_s: start of the span, seconds after ``session.start_s`` (>= 0).
        duration_s: span length, session seconds (> 0); default: to one behaviour sample interval
            after the last event, rounded up to the behaviour grid, so a looped behaviour stream stays
            regular across the wrap (for a synthetic session of 300 s: exactly 300 s).
        chunk_s: pacing period, wall seconds (0 < chunk_s <= 1).
        spike_layout: ``"events"`` (one sample per spike) or ``"counts"`` (one sample per bin, one channel
            per unit, stamped at the bin's end).
        bin_s: counts: the bin, session seconds (0 < bin_s <= 1; the published rate is ``speed / bin_s``).
            The span is rounded up to whole bins (an empty tail of less than a bin); an explicit
            ``duration_s`` must be whole bins.
        clock: the LSL clock (seconds); timestamps and deadlines are on it.
        progress: called as ``progress(fraction, elapsed_s)`` at most every ``progress_interval_s``
            wall seconds and once at the end, from the playing thread; ``fraction`` in [0, 1] of the
            whole play (of the current loop when looping without ``max_loops``), ``elapsed_s`` wall
            seconds since the start.
        max_loops: with ``loop``, stop after this many passes (None: forever).
        late_threshold_s: a chunk woken later than this after its deadline counts as late, seconds.
        progress_interval_s: wall seconds between progress calls.
    """

    def __init__(
        self,
        session: Session,
        *,
        spike_name: str = "poyo-spikes",
        behavior_name: str | None = "poyo-behavior",
        source_id_prefix: str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        start_s: float = 0.0,
        duration_s: float | None = None,
        chunk_s: float = 0.005,
        spike_layout: str = "events",
        bin_s: float | None = None,
        clock: Callable[[], float] = lsl.local_clock,
        progress: ProgressCallback | None = None,
        max_loops: int | None = None,
        late_threshold_s: float = 1e-3,
        progress_interval_s: float = 0.1,
    ) -> None:
        if not isinstance(session, Session):
            raise TypeError(f"session must be a poyo_rt Session, got {type(session).__name__}")
        self.session = session
        self.spike_name = _check_name("spike_name", spike_name)
        self.behavior_name = None if behavior_name is None else _check_name("behavior_name", behavior_name)
        if source_id_prefix is None:
            source_id_prefix = f"poyo-replay-{spike_name}-{session.session_id}"
        self.source_id_prefix = _check_name("source_id_prefix", source_id_prefix)
        self.speed = _check_number("speed", speed, minimum=0.0, inclusive=False)
        self.loop = bool(loop)
        self.start_s = _check_number("start_s", start_s, minimum=0.0, inclusive=True)
        self.chunk_s = _check_number("chunk_s", chunk_s, minimum=0.0, inclusive=False)
        if self.chunk_s > 1.0:
            raise ValueError(f"chunk_s must be <= 1 s, got {chunk_s!r}")
        self.late_threshold_s = _check_number("late_threshold_s", late_threshold_s, minimum=0.0, inclusive=True)
        self.progress_interval_s = _check_number(
            "progress_interval_s", progress_interval_s, minimum=0.0, inclusive=False
        )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, got {progress!r}")
        self.clock = clock
        self.progress = progress
        if max_loops is not None:
            if isinstance(max_loops, bool) or not isinstance(max_loops, (int, np.integer)) or max_loops < 1:
                raise ValueError(f"max_loops must be a positive int or None, got {max_loops!r}")
            if not self.loop:
                raise ValueError(f"max_loops={max_loops!r} needs loop=True")
        self.max_loops = None if max_loops is None else int(max_loops)
        if spike_layout not in ("events", "counts"):
            raise ValueError(f"spike_layout must be 'events' or 'counts', got {spike_layout!r}")
        self.spike_layout = spike_layout
        self.bin_s: float | None = None
        if spike_layout == "counts":
            self.bin_s = _check_number("bin_s", 0.01 if bin_s is None else bin_s, minimum=0.0, inclusive=False)
            if self.bin_s > 1.0:
                raise ValueError(f"bin_s must be <= 1 s, got {bin_s!r}")
        elif bin_s is not None:
            raise ValueError(f"bin_s={bin_s!r} needs spike_layout='counts'")

        # --- the span -------------------------------------------------------------------------
        beh_t = session.behavior_times_s
        has_behavior = session.behavior.shape[1] > 0 and beh_t.size > 0
        self.behavior_dt_s = 0.0  # session seconds between behaviour samples (0: irregular / none)
        if beh_t.size >= 2:
            dt = float(np.median(np.diff(beh_t)))
            self.behavior_dt_s = dt if dt > 0 else 0.0
        self.t_a = session.start_s + self.start_s
        if self.start_s > 0 and self.t_a > session.end_s:
            raise ValueError(
                f"start_s={start_s!r} is past the session's last event ({session.duration_s:.6g} s after its start)"
            )
        if duration_s is not None:
            self.period_s = _check_number("duration_s", duration_s, minimum=0.0, inclusive=False)
        else:
            self.period_s = self._default_period()
        n_bins = 0
        if self.bin_s is not None:  # counts: whole bins, so a looped stream stays regular across the wrap
            n_bins = max(1, math.ceil(self.period_s / self.bin_s - 1e-9))
            if duration_s is not None and abs(n_bins * self.bin_s - self.period_s) > 1e-9 * max(1.0, self.period_s):
                raise ValueError(f"duration_s={duration_s!r} is not a whole number of bins of bin_s={self.bin_s:g} s")
            self.period_s = n_bins * self.bin_s
            steps = self.period_s / self.behavior_dt_s if self.behavior_dt_s > 0 else 0.0
            if self.loop and has_behavior and abs(steps - round(steps)) > 1e-6:
                log.warning("the span (%.6g s, whole %g ms bins) is not whole behaviour samples (%g ms): the looped "
                            "behaviour stream jumps at each wrap; pick bin_s dividing the behaviour interval",
                            self.period_s, self.bin_s * 1e3, self.behavior_dt_s * 1e3)
        if self.loop and not self.period_s > 0:
            raise ValueError(
                f"duration_s: the span from start_s={self.start_s:g} s holds a single instant; "
                "give duration_s > 0 to loop it"
            )
        rel_spk = session.spike_times_s - self.t_a
        keep = (rel_spk >= 0) & (rel_spk < self.period_s) if self.period_s > 0 else rel_spk == 0
        self._spikes = _Track(
            np.ascontiguousarray(rel_spk[keep]),
            np.ascontiguousarray(session.spike_units[keep].astype(np.int32).reshape(-1, 1)),
        )
        self._counts = _CountsTrack(self._spikes, session.n_units, self.bin_s, n_bins) if n_bins else None
        self._behavior: _Track | None = None
        if has_behavior and self.behavior_name is not None:
            rel_beh = beh_t - self.t_a
            keep = (rel_beh >= 0) & (rel_beh < self.period_s) if self.period_s > 0 else rel_beh == 0
            self._behavior = _Track(np.ascontiguousarray(rel_beh[keep]), np.ascontiguousarray(session.behavior[keep]))
        elif self.behavior_name is not None:
            log.info("session %r has no behaviour: playing spikes only", session.session_id)

        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._error: BaseException | None = None
        self._stats: PlayerStats | None = None
        self.t_play0_s: float | None = None
        """LSL time of the span start in the current/last run (None before the first)."""

    # ---- span ---------------------------------------------------------------------------------

    def _default_period(self) -> float:
        """Session seconds from ``t_a`` to one behaviour interval past the last event, on the behaviour grid."""
        s = self.session
        last = s.end_s - self.t_a
        if self.behavior_dt_s > 0:
            dt = self.behavior_dt_s
            last_beh = float(s.behavior_times_s[-1]) - self.t_a
            # smallest last_beh + m * dt (m >= 1) past every event: the wrap keeps the behaviour grid
            m = max(1, math.floor((last - last_beh) / dt + 1e-9) + 1)
            return last_beh + m * dt
        return last

    @property
    def n_spikes(self) -> int:
        """Spikes in one pass of the span."""
        return self._spikes.n

    @property
    def spike_rate_hz(self) -> float:
        """The spike stream's nominal rate as published, Hz: 0 (irregular) for events, speed / bin_s for counts."""
        return 0.0 if self.bin_s is None else self.speed / self.bin_s

    @property
    def _spike_track(self) -> _Track | _CountsTrack:
        return self._spikes if self._counts is None else self._counts

    @property
    def n_behavior(self) -> int:
        """Behaviour samples in one pass of the span (0 without a behaviour stream)."""
        return 0 if self._behavior is None else self._behavior.n

    @property
    def behavior_rate_hz(self) -> float:
        """The behaviour stream's nominal rate as published, Hz (session rate x speed; 0 = irregular)."""
        return self.speed / self.behavior_dt_s if self.behavior_dt_s > 0 else 0.0

    def schedule_s(self, session_times_s: np.ndarray, loop: int = 0) -> np.ndarray:
        """Scheduled LSL times (n,) of session times (n,) seconds in loop ``loop`` of the current/last run."""
        if self.t_play0_s is None:
            raise RuntimeError("schedule_s needs a run: t_play0_s is not set yet")
        t = np.asarray(session_times_s, dtype=np.float64)
        return self.t_play0_s + ((t - self.t_a) + loop * self.period_s) / self.speed

    # ---- outlets ------------------------------------------------------------------------------

    def open(self) -> SessionPlayer:
        """Create the LSL outlets (idempotent). Returns self."""
        spikes = self._spike_track
        if spikes.outlet is not None and (self._behavior is None or self._behavior.outlet is not None):
            return self
        if spikes.outlet is None:
            spikes.outlet = lsl.make_spike_outlet(
                self.spike_name, self.session.unit_ids, f"{self.source_id_prefix}-spikes", self.spike_layout,
                self.spike_rate_hz,
            )
        if self._behavior is not None and self._behavior.outlet is None:
            self._behavior.outlet = lsl.make_behavior_outlet(
                self.behavior_name,  # type: ignore[arg-type]
                self.session.behavior_labels,
                self.behavior_rate_hz,
                f"{self.source_id_prefix}-behavior",
                unit=self.session.metadata.get("behavior_units"),
                extra_desc={
                    "session_id": self.session.session_id,
                    "speed": repr(self.speed),
                    "session_rate_hz": repr(1.0 / self.behavior_dt_s if self.behavior_dt_s > 0 else 0.0),
                },
            )
        log.info(
            "replay outlets: spikes %r (%d units, %d spikes/pass%s)%s; span %.3f s from %.3f s, speed %g, %s",
            self.spike_name,
            self.session.n_units,
            self.n_spikes,
            "" if self._counts is None else f", counts in {self.bin_s * 1e3:g} ms bins at {self.spike_rate_hz:g} Hz",
            ""
            if self._behavior is None
            else f", behaviour {self.behavior_name!r} ({self.n_behavior} samples/pass, {self.behavior_rate_hz:g} Hz)",
            self.period_s,
            self.start_s,
            self.speed,
            "looping" if self.loop else "once",
        )
        return self

    def wait_for_consumers(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until every outlet has at least one subscribed inlet."""
        timeout_s = _check_number("timeout_s", timeout_s, minimum=0.0, inclusive=True)
        self.open()
        deadline = time.monotonic() + timeout_s
        for track in (self._spike_track, self._behavior):
            if track is None:
                continue
            left = max(0.0, deadline - time.monotonic())
            if not track.outlet.have_consumers() and not track.outlet.wait_for_consumers(left):
                return False
        return True

    def close(self) -> None:
        """Stop if playing, then release the outlets (inlets see the streams end). Idempotent."""
        if self._thread is not None and self._thread.is_alive():
            self._stop_event.set()
            self._thread.join()
        self._spike_track.outlet = None
        if self._behavior is not None:
            self._behavior.outlet = None

    # ---- playing ------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> PlayerStats:
        """Play in this thread until the span (all loops) is done or ``stop_event`` is set.

        Returns:
            :class:`PlayerStats` (``stopped`` True when ended by ``stop_event``).
        """
        with self._lock:
            if self._running:
                raise RuntimeError("this SessionPlayer is already playing")
            self._running = True
        try:
            self.open()
            stats = self._play(stop_event if stop_event is not None else threading.Event())
            self._stats = stats
            return stats
        finally:
            with self._lock:
                self._running = False

    def _play(self, stop_event: threading.Event) -> PlayerStats:
        clock, chunk_s, speed, period_s = self.clock, self.chunk_s, self.speed, self.period_s
        n_loops = math.inf if self.loop and self.max_loops is None else (self.max_loops or 1)
        total_s = period_s * n_loops  # session seconds (inf when looping forever)
        spikes = self._spike_track
        tracks = [t for t in (spikes, self._behavior) if t is not None]
        for track in tracks:
            track.reset()
        hist = np.zeros(_HIST_BINS + 1, dtype=np.int64)
        max_late = 0.0
        chunks = late = skipped = 0
        stopped = finished = False
        next_progress = 0.0

        t0 = clock()
        self.t_play0_s = t0
        j = 0
        now = t0
        while True:
            if stop_event.is_set():
                stopped = True
                break
            deadline = t0 + j * chunk_s
            now = clock()
            while now < deadline:  # absolute deadline: sleep the remainder, re-read the clock
                time.sleep(deadline - now)
                now = clock()
            lateness = now - deadline
            chunks += 1
            max_late = max(max_late, lateness)
            hist[min(int(lateness * 1e6 / _HIST_BIN_US), _HIST_BINS)] += 1
            if lateness > self.late_threshold_s:
                late += 1

            elapsed_s = (now - t0) * speed  # session seconds due
            for track in tracks:
                rows, offsets = track.due(elapsed_s, period_s, n_loops)
                if rows:
                    block = rows[0] if len(rows) == 1 else np.concatenate(rows)
                    stamps = t0 + (offsets[0] if len(offsets) == 1 else np.concatenate(offsets)) / speed
                    track.outlet.push_chunk(block, np.minimum(stamps, now).tolist())
                    n = int(block.sum()) if track is self._counts else block.shape[0]  # counts: the spikes
                    track.pushed += n
                    track.max_push = max(track.max_push, n)
            finished = elapsed_s >= total_s or (tracks and all(t.exhausted(n_loops) for t in tracks))
            if self.progress is not None and (finished or now - t0 >= next_progress):
                next_progress = now - t0 + self.progress_interval_s
                self.progress(self._fraction(elapsed_s, total_s, finished), now - t0)
            if finished:
                break
            j += 1
            behind = math.floor((now - t0) / chunk_s)  # deadlines that have already passed
            if behind >= j:
                skipped += behind - j + 1
                j = behind + 1

        played_s = min((now - t0) * speed, total_s)
        if finished:
            loops = int(n_loops)
        else:
            loops = int(played_s // period_s) if period_s > 0 else 0
        counts = np.cumsum(hist)
        stats = PlayerStats(
            spikes_pushed=spikes.pushed,
            behavior_pushed=0 if self._behavior is None else self._behavior.pushed,
            loops=loops,
            chunks=chunks,
            late_chunks=late,
            skipped_deadlines=skipped,
            max_lateness_us=max_late * 1e6,
            p50_lateness_us=_percentile_us(counts, 0.50),
            p99_lateness_us=_percentile_us(counts, 0.99),
            max_spikes_per_chunk=spikes.max_push,
            max_behavior_per_chunk=0 if self._behavior is None else self._behavior.max_push,
            wall_s=now - t0,
            played_s=played_s,
            t_play0_s=t0,
            stopped=stopped,
        )
        log.info("replay %s: %s", "stopped" if stopped else "done", stats.summary())
        return stats

    def _fraction(self, elapsed_s: float, total_s: float, finished: bool) -> float:
        if finished:
            return 1.0
        if math.isinf(total_s):
            return (elapsed_s % self.period_s) / self.period_s if self.period_s > 0 else 0.0
        return min(1.0, elapsed_s / total_s) if total_s > 0 else 1.0

    # ---- background thread -------------------------------------------------------------------

    def start(self) -> SessionPlayer:
        """Open the outlets and play in a background thread. Returns self."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("this SessionPlayer is already playing")
        self.open()
        self._stop_event.clear()
        self._error = None
        self._stats = None
        self._thread = threading.Thread(target=self._thread_main, name=f"replay-{self.spike_name}", daemon=True)
        self._thread.start()
        return self

    def _thread_main(self) -> None:
        try:
            self.run(self._stop_event)
        except BaseException as exc:  # noqa: BLE001 - stored, re-raised by stop()/join()
            log.error("replay thread failed: %s: %s", type(exc).__name__, exc)
            self._error = exc

    @property
    def is_playing(self) -> bool:
        """True while the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> PlayerStats | None:
        """Stats of the last finished run (None before one ends)."""
        return self._stats

    def join(self, timeout_s: float | None = None) -> PlayerStats | None:
        """Wait for the background play to end by itself (up to ``timeout_s`` seconds; None = forever).

        Returns its stats, or None if it still plays. Re-raises an error raised in the thread.
        """
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return None
        self._raise_stored()
        return self._stats

    def stop(self, timeout_s: float = 5.0) -> PlayerStats | None:
        """Ask the background play to stop, wait up to ``timeout_s`` seconds, return its stats.

        Re-raises an error raised in the thread. The outlets stay open (see :meth:`close`).
        """
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise TimeoutError(f"replay thread did not stop within timeout_s={timeout_s!r} s")
        self._raise_stored()
        return self._stats

    def _raise_stored(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def __enter__(self) -> SessionPlayer:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.stop()
        except BaseException:
            if exc_type is None:
                raise
            log.exception("replay thread error while leaving the block on another error")
        finally:
            self.close()

    def __repr__(self) -> str:
        return (
            f"SessionPlayer({self.session.session_id!r}, spikes={self.spike_name!r}, "
            f"behavior={self.behavior_name if self._behavior is not None else None!r}, speed={self.speed:g}, "
            f"span={self.start_s:g}+{self.period_s:g} s, loop={self.loop}, playing={self.is_playing})"
        )


def _percentile_us(cumulative: np.ndarray, q: float) -> float:
    """q-quantile (0..1) of a lateness histogram given its cumulative counts, µs (bin upper edge)."""
    total = int(cumulative[-1])
    if total == 0:
        return 0.0
    k = int(np.searchsorted(cumulative, math.ceil(q * total), side="left"))
    return (k + 1) * _HIST_BIN_US

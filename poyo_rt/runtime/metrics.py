"""Streaming latency statistics with bounded memory (pure Python + numpy).

Each named stage keeps a log-spaced histogram from 1 µs to 10 s (200 bins per decade, so one bin is
1.16 % wide and a percentile read at a bin's geometric centre is within 0.58 % of the exact sample
percentile), plus exact count, sum, min and max, an optional ring of the last raw samples for plots,
and deadline misses. ``record`` is O(1): a log, an index, a few adds.

Percentiles follow ``numpy.percentile``'s default (linear interpolation between order statistics),
with each order statistic read from its bin; values below 1 µs (including <= 0) share an underflow
bin and values above 10 s an overflow bin, where the estimate is only bounded by the exact min/max.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LO_US = 1.0
HI_US = 1e7
BINS_PER_DECADE = 200
_N_DECADES = 7
N_BINS = _N_DECADES * BINS_PER_DECADE  # in-range bins; index 0 is underflow, N_BINS + 1 overflow
_LOG_LO = math.log(LO_US)
_INV_LOG_STEP = BINS_PER_DECADE / math.log(10.0)
_LOG_STEP = 1.0 / _INV_LOG_STEP
#: Worst relative error of an in-range percentile against numpy.percentile on the same samples.
REL_TOL = math.exp(0.5 * _LOG_STEP) - 1.0

PERCENTILES = (("median_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0), ("p99_9_us", 99.9))
SCHEMA = "poyo-rt.latency/1"


class _Stage:
    """State of one stage. Plain lists: indexing a list is cheaper than a numpy scalar write."""

    __slots__ = ("name", "counts", "n", "total", "vmin", "vmax", "nan", "deadline_us", "misses", "ring", "ring_i")

    def __init__(self, name: str, deadline_us: float, recent: int):
        self.name = name
        self.counts = [0] * (N_BINS + 2)
        self.n = 0
        self.total = 0.0
        self.vmin = math.inf
        self.vmax = -math.inf
        self.nan = 0
        self.deadline_us = deadline_us  # +inf when the stage has no deadline
        self.misses = 0
        self.ring: list[float] | None = [math.nan] * recent if recent > 0 else None
        self.ring_i = 0  # number of samples ever written to the ring


def _bin_center_us(i: int) -> float:
    """Geometric centre (µs) of in-range bin ``i`` (1..N_BINS)."""
    return math.exp(_LOG_LO + (i - 0.5) * _LOG_STEP)


class LatencyStats:
    """Per-stage latency histograms, deadline misses and drop counters.

    ``stages``: stage names (e.g. ``["pull", ..., "publish", "e2e"]``). ``deadline_us``: a value above it
    counts as a miss for each stage in ``deadline_stages`` (default ``("e2e",)``, which must be in
    ``stages`` when a deadline is set). ``recent``: keep the last N raw samples per stage (0 = none).
    ``strict``: recording an unknown stage raises ``ValueError``; otherwise it is added on first use.
    """

    def __init__(
        self,
        stages: Sequence[str],
        deadline_us: float | None = None,
        *,
        deadline_stages: Sequence[str] = ("e2e",),
        recent: int = 0,
        strict: bool = True,
    ):
        if isinstance(stages, str):
            raise TypeError(f"stages: expected a sequence of names, got the string {stages!r}")
        if len(set(stages)) != len(stages):
            raise ValueError(f"stages: duplicate names in {list(stages)}")
        if deadline_us is not None and not (deadline_us > 0 and math.isfinite(deadline_us)):
            raise ValueError(f"deadline_us: must be a positive finite number of µs, got {deadline_us!r}")
        if recent < 0:
            raise ValueError(f"recent: must be >= 0 samples, got {recent}")
        self.deadline_us = deadline_us
        self.deadline_stages = tuple(deadline_stages) if deadline_us is not None else ()
        missing = [s for s in self.deadline_stages if s not in stages]
        if missing:
            raise ValueError(f"deadline_stages: {missing} not in stages {list(stages)}")
        self.recent = int(recent)
        self.strict = strict
        self._stages: dict[str, _Stage] = {}
        for name in stages:
            self.add_stage(name)
        self.counters: dict[str, int] = {}
        self.ticks = 0

    # --- recording (hot path) ---------------------------------------------------------------

    def add_stage(self, name: str) -> None:
        """Add a stage (no-op if it exists)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"stage name: expected a non-empty str, got {name!r}")
        if name not in self._stages:
            deadline = self.deadline_us if name in self.deadline_stages else math.inf
            self._stages[name] = _Stage(name, deadline, self.recent)

    def record(self, stage: str, value_us: float) -> None:
        """Record one latency (µs) for ``stage``. NaN is counted as missing, not recorded. O(1)."""
        st = self._stages.get(stage)
        if st is None:
            if self.strict:
                raise ValueError(f"stage: unknown stage {stage!r}; known: {list(self._stages)}")
            self.add_stage(stage)
            st = self._stages[stage]
        v = float(value_us)
        if v != v:  # NaN
            st.nan += 1
            return
        if v < LO_US:
            i = 0
        elif v >= HI_US:
            i = N_BINS + 1
        else:
            i = int((math.log(v) - _LOG_LO) * _INV_LOG_STEP) + 1
            if i > N_BINS:  # float rounding at the very top edge
                i = N_BINS
        st.counts[i] += 1
        st.n += 1
        st.total += v
        if v < st.vmin:
            st.vmin = v
        if v > st.vmax:
            st.vmax = v
        if v > st.deadline_us:
            st.misses += 1
        ring = st.ring
        if ring is not None:
            ring[st.ring_i % len(ring)] = v
            st.ring_i += 1

    def record_tick(self, stages_us: Mapping[str, float]) -> None:
        """Record one tick's stage latencies (name -> µs) and count the tick."""
        for name, value in stages_us.items():
            self.record(name, value)
        self.ticks += 1

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (e.g. a drop reason)."""
        self.counters[name] = self.counters.get(name, 0) + n

    def set_counter(self, name: str, value: int) -> None:
        """Set counter ``name`` to a cumulative value kept elsewhere (e.g. the publisher's drops)."""
        self.counters[name] = int(value)

    def reset(self) -> None:
        """Forget every sample and counter; keep stages and deadline."""
        for name in list(self._stages):
            self._stages[name] = _Stage(name, self._stages[name].deadline_us, self.recent)
        self.counters.clear()
        self.ticks = 0

    # --- reading ----------------------------------------------------------------------------

    @property
    def stages(self) -> list[str]:
        return list(self._stages)

    def _get(self, stage: str) -> _Stage:
        try:
            return self._stages[stage]
        except KeyError:
            raise ValueError(f"stage: unknown stage {stage!r}; known: {list(self._stages)}") from None

    def percentile(self, stage: str, q: float) -> float:
        """Estimated ``q``-th percentile (0..100) in µs, as numpy.percentile would give (NaN if empty)."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"q: percentile must be in [0, 100], got {q}")
        return self._percentiles(self._get(stage), [q])[0]

    def _percentiles(self, st: _Stage, qs: Iterable[float]) -> list[float]:
        if st.n == 0:
            return [math.nan for _ in qs]
        cum = np.cumsum(st.counts)

        def order_stat(k: int) -> float:  # estimate of the k-th smallest sample (0-based)
            if k <= 0:
                return st.vmin
            if k >= st.n - 1:
                return st.vmax
            i = int(np.searchsorted(cum, k + 1))
            if i == 0:
                est = 0.5 * (st.vmin + min(LO_US, st.vmax))
            elif i == N_BINS + 1:
                est = 0.5 * (max(HI_US, st.vmin) + st.vmax)
            else:
                est = _bin_center_us(i)
            return min(max(est, st.vmin), st.vmax)

        out = []
        for q in qs:
            rank = q / 100.0 * (st.n - 1)
            lo = math.floor(rank)
            frac = rank - lo
            v = order_stat(lo)
            if frac > 0.0:
                v += frac * (order_stat(lo + 1) - v)
            out.append(v)
        return out

    def stage_summary(self, stage: str) -> dict[str, Any]:
        """count, mean/min/median/p90/p99/p99.9/max (µs), nan (missing samples), deadline_misses."""
        st = self._get(stage)
        d: dict[str, Any] = {"count": st.n, "nan": st.nan}
        if st.n:
            d["mean_us"] = st.total / st.n
            d["min_us"] = st.vmin
            for (key, _), v in zip(PERCENTILES, self._percentiles(st, [q for _, q in PERCENTILES])):
                d[key] = v
            d["max_us"] = st.vmax
        else:
            for key in ("mean_us", "min_us", *(k for k, _ in PERCENTILES), "max_us"):
                d[key] = math.nan
        if math.isfinite(st.deadline_us):
            d["deadline_misses"] = st.misses
            d["deadline_miss_rate"] = st.misses / st.n if st.n else math.nan
        return d

    def summary(self) -> dict[str, Any]:
        """Every stage's summary, the counters, the deadline and the histogram geometry."""
        return {
            "ticks": self.ticks,
            "deadline_us": self.deadline_us,
            "deadline_stages": list(self.deadline_stages),
            "stages": {name: self.stage_summary(name) for name in self._stages},
            "counters": dict(self.counters),
            "histogram": {"lo_us": LO_US, "hi_us": HI_US, "bins_per_decade": BINS_PER_DECADE,
                          "rel_tol": REL_TOL},
        }

    def histogram(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """``(edges_us, counts)``: (N_BINS + 1,) in-range bin edges in µs and (N_BINS + 2,) counts,
        where counts[0] is the underflow (< 1 µs) and counts[-1] the overflow (>= 10 s) bin."""
        edges = LO_US * np.exp(np.arange(N_BINS + 1) * _LOG_STEP)
        return edges, np.asarray(self._get(stage).counts, dtype=np.int64)

    def recent_samples(self, stage: str) -> np.ndarray:
        """The last ``recent`` raw samples (µs) of ``stage``, oldest first; (n,) float64."""
        st = self._get(stage)
        if st.ring is None:
            return np.empty(0)
        ring = np.asarray(st.ring)
        n = len(ring)
        if st.ring_i <= n:
            return ring[: st.ring_i].copy()
        start = st.ring_i % n
        return np.concatenate([ring[start:], ring[:start]])

    # --- output -----------------------------------------------------------------------------

    def to_json(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None, *,
                include_histograms: bool = True, include_recent: bool = False) -> dict[str, Any]:
        """Write the summary plus ``extra`` run metadata (e.g. resolved config, code version) as JSON.

        NaN/Inf become null so any JSON parser reads the file. Histograms are written sparse as
        ``{bin_index: count}`` (index 0 underflow, 1..N_BINS in range, N_BINS+1 overflow). The write is
        atomic (temp file + rename). Returns the written document.
        """
        doc: dict[str, Any] = {"schema": SCHEMA, "written_unix_s": time.time(), "meta": dict(extra or {}),
                               "summary": self.summary()}
        if include_histograms:
            doc["histograms"] = {name: {str(i): c for i, c in enumerate(st.counts) if c}
                                 for name, st in self._stages.items()}
        if include_recent:
            doc["recent_us"] = {name: self.recent_samples(name).tolist() for name in self._stages}
        doc = _json_safe(doc)
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
        return doc

    def format_table(self, stages: Sequence[str] | None = None) -> str:
        """Aligned text table (µs) for logs: one row per stage."""
        cols = ("count", "mean_us", "median_us", "p90_us", "p99_us", "p99_9_us", "max_us")
        heads = ("stage", "count", "mean", "median", "p90", "p99", "p99.9", "max", "misses")
        rows = []
        for name in stages if stages is not None else self._stages:
            s = self.stage_summary(name)
            row = [name, str(s["count"])] + [_fmt_us(s[c]) for c in cols[1:]]
            row.append(str(s["deadline_misses"]) if "deadline_misses" in s else "-")
            rows.append(row)
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(heads)]
        lines = ["  ".join(h.ljust(w) if j == 0 else h.rjust(w) for j, (h, w) in enumerate(zip(heads, widths)))
                 + "   (µs)"]
        for r in rows:
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if self.counters:
            lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in self.counters.items()))
        return "\n".join(lines)


def _fmt_us(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:.1f}" if abs(v) < 1e5 else f"{v:.3g}"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


class PeriodicReporter:
    """Logs ``stats.format_table()`` every ``period_s`` seconds on an absolute schedule.

    Call ``maybe_log()`` from the loop (cheap when not due: one clock read and a compare).
    ``clock`` returns seconds (e.g. ``pylsl.local_clock`` or ``time.monotonic``).
    """

    def __init__(self, stats: LatencyStats, period_s: float, *, logger: logging.Logger | None = None,
                 level: int = logging.INFO, clock: Callable[[], float] = time.monotonic):
        if not period_s > 0:
            raise ValueError(f"period_s: must be > 0 seconds, got {period_s!r}")
        self.stats = stats
        self.period_s = float(period_s)
        self.logger = logger or log
        self.level = level
        self.clock = clock
        self.next_due_s = clock() + self.period_s

    def maybe_log(self, now_s: float | None = None) -> bool:
        """Log if the next report is due; returns whether it logged."""
        now = self.clock() if now_s is None else now_s
        if now < self.next_due_s:
            return False
        self.next_due_s += self.period_s
        if self.next_due_s <= now:  # fell behind by more than a period: skip, do not burst
            self.next_due_s = now + self.period_s
        self.logger.log(self.level, "latency after %d ticks:\n%s", self.stats.ticks, self.stats.format_table())
        return True

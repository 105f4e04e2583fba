"""Latency histograms: percentiles against numpy.percentile, deadlines, counters, JSON and table output."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from poyo_rt.runtime import metrics
from poyo_rt.runtime.metrics import LatencyStats, PeriodicReporter

# Tolerance: an in-range estimate is within half a bin (geometric) of the exact sample percentile:
# exp(0.5 * ln(10) / 200) - 1 = 0.577 %. A hair of slack for float rounding at bin edges.
TOL = metrics.REL_TOL + 1e-9
QS = (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0)


def _samples(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":  # a latency-like distribution with a long tail
        return rng.lognormal(mean=math.log(300.0), sigma=0.6, size=n)
    if kind == "bimodal":  # fast path plus occasional stalls
        return np.where(rng.random(n) < 0.97, rng.normal(150, 10, n), rng.uniform(2_000, 20_000, n))
    if kind == "wide":  # six decades
        return 10 ** rng.uniform(0.1, 6.9, n)
    if kind == "ties":  # quantised timer: many exact duplicates
        return rng.integers(50, 60, n).astype(float)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["lognormal", "bimodal", "wide", "ties"])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_000])
def test_percentiles_match_numpy(kind: str, n: int) -> None:
    x = _samples(kind, n, seed=n)
    stats = LatencyStats(["s"])
    for v in x:
        stats.record("s", v)
    for q in QS:
        exact = float(np.percentile(x, q))
        est = stats.percentile("s", q)
        assert abs(est - exact) <= TOL * exact, (kind, n, q, est, exact)
    s = stats.stage_summary("s")
    assert s["count"] == n and s["min_us"] == x.min() and s["max_us"] == x.max()
    assert s["mean_us"] == pytest.approx(x.mean(), rel=1e-12)
    assert abs(s["p99_9_us"] - np.percentile(x, 99.9)) <= TOL * np.percentile(x, 99.9)


def test_out_of_range_values_are_bounded_by_exact_min_max() -> None:
    x = np.array([-5.0, 0.0, 0.5, 100.0, 2e7, 5e7])  # under 1 µs (incl. negative) and over 10 s
    stats = LatencyStats(["s"])
    for v in x:
        stats.record("s", v)
    s = stats.stage_summary("s")
    assert (s["min_us"], s["max_us"], s["count"]) == (-5.0, 5e7, 6)
    for q in (10.0, 50.0, 90.0):
        assert x.min() <= stats.percentile("s", q) <= x.max()
    edges, counts = stats.histogram("s")
    assert counts[0] == 3 and counts[-1] == 2 and counts.sum() == 6 and len(edges) == metrics.N_BINS + 1
    assert edges[0] == pytest.approx(1.0) and edges[-1] == pytest.approx(1e7)


def test_nan_counted_not_recorded_and_empty_stage() -> None:
    stats = LatencyStats(["a", "b"])
    stats.record("a", math.nan)
    stats.record("a", 10.0)
    s = stats.summary()["stages"]
    assert s["a"]["count"] == 1 and s["a"]["nan"] == 1
    assert s["b"]["count"] == 0 and math.isnan(s["b"]["median_us"])


def test_deadline_misses_counted_only_for_deadline_stages() -> None:
    stats = LatencyStats(["forward", "e2e"], deadline_us=1000.0)
    for v in [500.0, 999.9, 1000.0, 1000.1, 5000.0]:
        stats.record_tick({"forward": v * 2, "e2e": v})
    s = stats.summary()
    assert s["ticks"] == 5
    assert s["stages"]["e2e"]["deadline_misses"] == 2  # strictly above the deadline
    assert s["stages"]["e2e"]["deadline_miss_rate"] == pytest.approx(0.4)
    assert "deadline_misses" not in s["stages"]["forward"]
    custom = LatencyStats(["total"], deadline_us=10.0, deadline_stages=["total"])
    custom.record("total", 11.0)
    assert custom.stage_summary("total")["deadline_misses"] == 1


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="deadline_stages"):
        LatencyStats(["forward"], deadline_us=1000.0)  # default "e2e" missing
    with pytest.raises(ValueError, match="deadline_us"):
        LatencyStats(["e2e"], deadline_us=-1.0)
    with pytest.raises(ValueError, match="duplicate"):
        LatencyStats(["a", "a"])
    with pytest.raises(TypeError, match="stages"):
        LatencyStats("e2e")
    stats = LatencyStats(["a"])
    with pytest.raises(ValueError, match="unknown stage 'b'"):
        stats.record("b", 1.0)
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile("a", 101)
    loose = LatencyStats([], strict=False)
    loose.record("new", 3.0)
    assert loose.stages == ["new"]


def test_counters_and_reset() -> None:
    stats = LatencyStats(["e2e"])
    stats.count("nan_time")
    stats.count("nan_time", 4)
    stats.set_counter("send_dropped", 7)
    stats.record("e2e", 5.0)
    assert stats.summary()["counters"] == {"nan_time": 5, "send_dropped": 7}
    stats.reset()
    assert stats.summary()["counters"] == {} and stats.stage_summary("e2e")["count"] == 0


def test_recent_ring_keeps_last_n_in_order() -> None:
    stats = LatencyStats(["s"], recent=4)
    for v in range(1, 4):
        stats.record("s", float(v))
    np.testing.assert_array_equal(stats.recent_samples("s"), [1, 2, 3])
    for v in range(4, 11):
        stats.record("s", float(v))
    np.testing.assert_array_equal(stats.recent_samples("s"), [7, 8, 9, 10])
    assert LatencyStats(["s"]).recent_samples("s").size == 0


def test_to_json_loads_and_has_fields(tmp_path) -> None:
    stats = LatencyStats(["pull", "forward", "e2e"], deadline_us=2000.0, recent=8)
    x = _samples("lognormal", 500)
    for v in x:
        stats.record_tick({"pull": v / 10, "forward": v, "e2e": v * 1.5})
    stats.record("pull", math.nan)
    stats.count("overflow", 2)
    path = tmp_path / "latency.json"
    meta = {"config": {"engine": {"tick_hz": 50}}, "code_version": "abc123"}
    stats.to_json(path, meta, include_recent=True)
    text = path.read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert doc["schema"] == metrics.SCHEMA and doc["meta"] == meta
    e2e = doc["summary"]["stages"]["e2e"]
    for key in ("count", "mean_us", "median_us", "p90_us", "p99_us", "p99_9_us", "max_us", "deadline_misses"):
        assert key in e2e, key
    assert e2e["count"] == 500 and e2e["deadline_misses"] == int((x * 1.5 > 2000).sum())
    assert doc["summary"]["counters"] == {"overflow": 2}
    assert doc["summary"]["stages"]["pull"]["nan"] == 1
    assert sum(doc["histograms"]["forward"].values()) == 500
    assert len(doc["recent_us"]["e2e"]) == 8
    empty = LatencyStats(["e2e"])
    doc = json.loads(json.dumps(empty.to_json(tmp_path / "empty.json")))  # NaN -> null
    assert doc["summary"]["stages"]["e2e"]["median_us"] is None


def test_format_table_aligned() -> None:
    stats = LatencyStats(["pull", "forward", "e2e"], deadline_us=1000.0)
    for v in (100.0, 200.0, 1500.0):
        stats.record_tick({"pull": 3.0, "forward": v, "e2e": v + 50})
    stats.count("unknown_unit", 3)
    table = stats.format_table()
    lines = table.splitlines()
    assert lines[0].split()[:9] == ["stage", "count", "mean", "median", "p90", "p99", "p99.9", "max", "misses"]
    rows = lines[1:4]
    assert [r.split()[0] for r in rows] == ["pull", "forward", "e2e"]
    assert len({len(r) for r in rows}) == 1  # aligned columns
    assert rows[2].split()[-1] == "1" and rows[0].split()[-1] == "-"
    assert "unknown_unit=3" in lines[-1]


def test_periodic_reporter_absolute_schedule(caplog) -> None:
    now = [0.0]
    stats = LatencyStats(["e2e"])
    rep = PeriodicReporter(stats, 1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="poyo_rt.runtime.metrics"):
        assert not rep.maybe_log()
        now[0] = 1.0
        assert rep.maybe_log()
        now[0] = 1.5
        assert not rep.maybe_log()
        now[0] = 2.01
        assert rep.maybe_log()
        assert rep.next_due_s == 3.0  # absolute: not 3.01
        now[0] = 10.0  # fell far behind: one report, not a burst
        assert rep.maybe_log() and not rep.maybe_log()
    assert sum("latency after" in r.message for r in caplog.records) == 3


def test_record_is_cheap() -> None:
    """Informal: record() must stay O(1) and a few µs; a generous bound so it never flakes."""
    import time

    stats = LatencyStats(["pull", "e2e"], deadline_us=1000.0, recent=1024)
    x = _samples("lognormal", 20_000).tolist()
    t0 = time.perf_counter()
    for v in x:
        stats.record("e2e", v)
    per_call_us = (time.perf_counter() - t0) / len(x) * 1e6
    assert per_call_us < 50.0, per_call_us

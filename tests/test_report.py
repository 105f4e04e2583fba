"""`poyo-rt report`: latency JSON -> PNG + HTML, and the histogram read back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from poyo_rt.runtime.metrics import LatencyStats
from poyo_rt.runtime.report import (compare_table, describe_miss_causes, histogram_arrays, load_run, miss_cause,
                                    miss_timeline, missed_ticks_table, plot_run)


@pytest.fixture
def run_json(tmp_path):
    rng = np.random.default_rng(0)
    stats = LatencyStats(["pull", "tokenize", "forward", "publish", "spike_age", "e2e", "tick", "cpu", "cpu_wait",
                          "off_cpu"], deadline_us=20_000, deadline_stages=("tick",), recent=500)
    for _ in range(2000):
        fwd, age = rng.lognormal(np.log(15_000), 0.2), rng.exponential(500.0)
        stats.record_tick({"pull": rng.lognormal(np.log(120), 0.3), "tokenize": rng.lognormal(np.log(50), 0.3),
                           "forward": fwd, "publish": 250.0, "spike_age": age, "e2e": fwd + 1000 + age,
                           "tick": fwd + 1000, "cpu": fwd + 600, "cpu_wait": 20.0, "off_cpu": 80.0})
    stats.count("token_overflow", 7)
    path = tmp_path / "latency.json"
    misses = stats.summary()["stages"]["tick"]["deadline_misses"]
    causes = {"cpu_time": misses - 1, "late_start": 1}  # as Engine.miss_causes would count them
    stats.to_json(path, extra={"config": {"engine": {"tick_hz": 50}}, "code_version": "test", "miss_causes": causes},
                  include_recent=True)
    return path, stats


def test_histogram_read_back_matches_summary(run_json):
    path, stats = run_json
    doc = load_run(path)
    centres, counts = histogram_arrays(doc, "forward")
    assert counts.sum() == 2000
    cum = np.cumsum(counts) / counts.sum()
    median_from_hist = centres[np.searchsorted(cum, 0.5)]
    assert median_from_hist == pytest.approx(doc["summary"]["stages"]["forward"]["median_us"], rel=0.01)


def test_report_cli_writes_png_and_html(run_json, tmp_path):
    path, stats = run_json
    png, page = tmp_path / "r.png", tmp_path / "r.html"
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "report", str(path), "--png", str(png), "--html",
                          str(page)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    text = page.read_text()
    assert "deadline misses" in text and "token_overflow" in text and "data:image/png;base64," in text
    misses = stats.summary()["stages"]["tick"]["deadline_misses"]
    assert misses > 0 and f"<td>{misses}</td>" in text
    assert f"{misses} missed: slow work (CPU time) {misses - 1}, late start 1." in text  # by cause, most first
    assert "<td>cpu_wait</td>" in text  # the loop thread's accounting in the percentile table
    assert "p99.9 ms" in res.stdout and "tick" in res.stdout  # the table, printed
    assert f"deadline misses by cause: slow work (CPU time) {misses - 1}, late start 1" in res.stdout


def test_miss_causes_in_words():
    assert describe_miss_causes({}) == "" and describe_miss_causes({"cpu_wait": 0}) == ""
    assert (describe_miss_causes({"late_start": 2, "off_cpu": 5, "publish": 2})
            == "off the CPU (blocked, or stolen by a hypervisor) 5, late start 2, publish 2")


def test_a_miss_is_stolen_when_the_hypervisor_took_half_its_lateness():
    """miss_cause: steal time of at least half the tick's excess over its median blames the hypervisor; less
    (or unknown, -1) leaves the stage that exceeded its median the most."""
    typical = {"start": 10.0, "cpu": 10_000.0, "cpu_wait": 0.0, "off_cpu": 30.0, "publish": 100.0, "tick": 10_500.0}
    stalled = {**typical, "off_cpu": 20_030.0, "tick": 30_500.0}  # 20 ms more than usual, off the CPU
    assert miss_cause(stalled, typical, stolen_us=20_000.0) == "stolen"
    assert miss_cause(stalled, typical, stolen_us=10_000.0) == "stolen"  # half: the 10 ms steps of steal time
    assert miss_cause(stalled, typical, stolen_us=9_000.0) == "off_cpu"
    assert miss_cause(stalled, typical, stolen_us=0.0) == "off_cpu" and miss_cause(stalled, typical) == "off_cpu"
    no_tick = {k: v for k, v in typical.items() if k != "tick"}  # no typical tick yet: steal cannot be weighed
    assert miss_cause(stalled, no_tick, stolen_us=20_000.0) == "off_cpu"
    assert describe_miss_causes({"stolen": 3, "cpu_time": 1}) == "stolen by the hypervisor 3, slow work (CPU time) 1"


def test_report_lists_the_missed_ticks_the_engine_kept(run_json, tmp_path):
    """`poyo-rt report` prints the last missed ticks with their stages and the run's steal time, and the HTML
    page lists them all (``meta.missed_ticks`` and ``meta.stolen_ms``, as Engine.write_report writes them)."""
    path, stats = run_json
    doc = load_run(path)
    missed = [{"index": 100 + i, "at_s": 2.0 + 0.02 * i, "cause": "cpu_time", "stolen_us": 0.0, "start": 12.0,
               "cpu": 24_000.0 + i, "cpu_wait": 1.0, "off_cpu": 40.0, "publish": 90.0, "tick": 25_100.0 + i}
              for i in range(30)]
    missed.append({"index": 900, "at_s": 18.5, "cause": "stolen", "stolen_us": 20_000.0, "start": 23_115.0,
                   "cpu": 7_500.0, "off_cpu": 20.0, "publish": 95.0, "tick": 31_341.0,  # no cpu_wait: not read
                   "prev_tick_us": 7_700.0, "prepare_us": 2_500.0})  # no pre-tick: it did not run
    doc["meta"].update(missed_ticks=missed, stolen_ms=110.0)
    path.write_text(__import__("json").dumps(doc))
    rows = missed_ticks_table(load_run(path))
    assert len(rows) == 31 and rows[0][:4] == ["100", "2.000", "25.10", "slow work (CPU time)"]
    assert rows[-1] == ["900", "18.500", "31.34", "stolen by the hypervisor", "23.11", "7.50", "-", "0.02", "0.10",
                        "20.00", "7.70", "2.50", "-"]
    page = tmp_path / "r.html"
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "report", str(path), "--png", str(tmp_path / "r.png"),
                          "--html", str(page)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "the last 20 of the 31 missed ticks the engine kept" in res.stdout
    assert "hypervisor steal on the loop's cores: 110 ms over the run" in res.stdout
    printed = [line for line in res.stdout.splitlines() if line.strip().startswith(("1", "9")) and "ms" not in line]
    assert any(line.split()[:3] == ["900", "18.500", "31.34"] for line in printed)
    assert not any(line.split()[:1] == ["100"] for line in printed)  # the first 11 are in the page only
    text = page.read_text()
    assert "The missed ticks (31" in text and "<td>stolen by the hypervisor</td>" in text and "<td>100</td>" in text
    assert "Hypervisor steal on the loop&#x27;s cores: 110 ms over the run." in text


def test_report_rejects_other_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"schema": "something-else"}')
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "report", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "not a poyo-rt latency report" in res.stderr


def test_missed_ticks_are_marked_with_their_cause(tmp_path):
    """The report's latency-over-time panel marks each missed tick of the log's raw samples with its cause,
    judged as the engine judges it: the stage that exceeded its median the most."""
    stats = LatencyStats(["start", "cpu", "cpu_wait", "off_cpu", "publish", "tick"], deadline_us=20_000,
                         deadline_stages=("tick",), recent=500)
    normal = {"start": 10.0, "cpu": 10_000.0, "cpu_wait": 0.0, "off_cpu": 30.0, "publish": 100.0}
    late = {5: ("start", 12_000.0), 50: ("cpu", 22_000.0), 51: ("cpu_wait", 15_000.0), 90: ("off_cpu", 11_000.0)}
    for i in range(100):
        stages = dict(normal)
        if i in late:
            stage, value = late[i]
            stages[stage] = value
        stages["tick"] = sum(stages.values())
        stats.record_tick(stages)
    path = tmp_path / "run.json"
    stats.to_json(path, include_recent=True)
    doc = load_run(path)
    timeline = miss_timeline(doc)
    assert [(i, cause) for i, _, cause in timeline] == [(5, "late_start"), (50, "cpu_time"), (51, "cpu_wait"),
                                                        (90, "off_cpu")]
    assert all(t > 20_000 for _, t, _ in timeline)
    doc["meta"] = {"ticks": 100, "missed_ticks": [{"index": 50, "cause": "stolen"}]}  # the engine's own word wins
    assert [cause for _, _, cause in miss_timeline(doc)] == ["late_start", "stolen", "cpu_wait", "off_cpu"]
    doc["meta"]["ticks"] = 130  # 30 ticks before the raw samples: tick 50 is sample 20, not a miss
    assert [cause for _, _, cause in miss_timeline(doc)] == ["late_start", "cpu_time", "cpu_wait", "off_cpu"]
    assert plot_run(doc, tmp_path / "run.png").stat().st_size > 20_000
    doc["recent_us"]["cpu"] = doc["recent_us"]["cpu"][1:]  # a stage not recorded at every tick: no alignment
    assert miss_timeline(doc) == []
    del doc["summary"]["deadline_us"]
    assert miss_timeline(doc) == []


def test_report_against_a_baseline(run_json, tmp_path):
    """`poyo-rt report RUN --baseline BASE`: each stage's median and p99 beside the baseline's, with base / run,
    and both runs' misses; the same in the HTML page. A baseline that is not a latency log is a usage error."""
    path, stats = run_json
    rng = np.random.default_rng(1)
    base = LatencyStats(["forward", "tick", "publish"], deadline_us=20_000, deadline_stages=("tick",))
    for _ in range(1000):  # a forward twice as slow, a publish the same
        fwd = rng.lognormal(np.log(30_000), 0.2)
        base.record_tick({"forward": fwd, "tick": fwd + 1000, "publish": 250.0})
    base_path = tmp_path / "base.json"
    base.to_json(base_path)
    doc, base_doc = load_run(path), load_run(base_path)
    rows = {row[0]: row for row in compare_table(doc, base_doc)}
    assert set(rows) == {"forward", "tick", "publish"}  # the stages both recorded
    ours, theirs = stats.stage_summary("forward"), base.stage_summary("forward")
    assert float(rows["forward"][3]) == pytest.approx(theirs["median_us"] / ours["median_us"], abs=0.006)
    assert float(rows["forward"][3]) == pytest.approx(2.0, rel=0.05) and rows["publish"][3] == "1.00"
    page = tmp_path / "r.html"
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "report", str(path), "--baseline", str(base_path),
                          "--html", str(page), "--png", str(tmp_path / "r.png")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    n_ours, n_base = stats.stage_summary("tick")["deadline_misses"], base.stage_summary("tick")["deadline_misses"]
    line = f"deadline misses: {n_ours} of 2,000 ticks ({100 * n_ours / 2000:.2f} %), against {n_base} of 1,000"
    assert line in res.stdout and "  ".join(f"{c:>11}" for c in rows["forward"]) in res.stdout
    assert "Against the baseline" in page.read_text() and "<td>forward</td>" in page.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    res = subprocess.run([sys.executable, "-m", "poyo_rt.cli", "report", str(path), "--baseline", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--baseline" in res.stderr and "not a poyo-rt latency report" in res.stderr

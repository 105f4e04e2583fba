"""Diagnostic scripts in tools/ that a lab runs on its rig (not only for this project's own measurements)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_stall_watch_tells_a_busy_neighbour_from_a_stop(tmp_path):
    """tools/stall_watch.py on one core shared with a busy process: the watcher's gaps are the neighbour's turns
    (``cpu_wait``), listed with their cause, and written as JSON; a gap counts as what most of it was."""
    sys.path.insert(0, str(TOOLS))
    try:
        from stall_watch import cause
    finally:
        sys.path.remove(str(TOOLS))
    assert cause({"ms": 20.0, "cpu_ms": 19.0, "cpu_wait_ms": 0.0}) == "cpu"
    assert cause({"ms": 20.0, "cpu_ms": 0.1, "cpu_wait_ms": 19.0}) == "cpu_wait"
    assert cause({"ms": 20.0, "cpu_ms": 0.1, "cpu_wait_ms": 0.0}) == "off_cpu"
    assert cause({"ms": 20.0, "cpu_ms": 0.1, "cpu_wait_ms": float("nan")}) == "off_cpu"  # run delay not readable

    core = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {core})
        out = tmp_path / "gaps.json"
        res = subprocess.run([sys.executable, str(TOOLS / "stall_watch.py"), "--seconds", "1.5", "--cores", str(core),
                              "--json", str(out)], capture_output=True, text=True, timeout=60)
    finally:
        hog.kill()
        hog.wait()
    assert res.returncode == 0, res.stderr
    import json

    gaps = json.loads(out.read_text())[str(core)]
    assert len(gaps) >= 5  # the fair scheduler hands the core back and forth every few ms
    assert sum(cause(g) == "cpu_wait" for g in gaps) >= 0.8 * len(gaps)
    assert f"core {core}: {len(gaps)} gaps" in res.stdout and "-> cpu_wait" in res.stdout


def test_gpu_wake_runs_its_loop_and_refuses_bad_conditions(tmp_path):
    """tools/gpu_wake.py: the runner called at a cadence, with a nudge before each call, summarised per condition
    (run here on the CPU runner, where the host split of a call is absent); a nudge as long as the gap is
    refused by name; asked for CUDA where there is none, it says so and exits 2."""
    import json

    import torch

    out = tmp_path / "wake.json"
    res = subprocess.run([sys.executable, str(TOOLS / "gpu_wake.py"), "--device", "cpu", "--ticks", "5", "--rounds",
                          "2", "--condition", "0:0", "--condition", "30:2000", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert [(c["gap_ms"], c["nudge_us"], c["calls"]) for c in doc["conditions"]] == [(0, 0, 10), (30, 2000, 10)]
    for c in doc["conditions"]:
        assert c["variant"] == "runner"
        assert c["call_us"]["p50"] >= c["span_us"]["p50"] > 0  # the host's wall time holds the forward it times
        assert c["pack_us"] == c["launch_us"] == c["sync_us"] == c["unseen_us"] == {"p50": None, "p99": None}
    assert "gap ms" in res.stdout and f"wrote {out}" in res.stdout

    bad = subprocess.run([sys.executable, str(TOOLS / "gpu_wake.py"), "--device", "cpu", "--condition", "2:2000"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "condition '2:2000'" in bad.stderr
    bad = subprocess.run([sys.executable, str(TOOLS / "gpu_wake.py"), "--device", "cpu", "--variant", "copies"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "option of the CUDA runner" in bad.stderr
    if not torch.cuda.is_available():
        none = subprocess.run([sys.executable, str(TOOLS / "gpu_wake.py")], capture_output=True, text=True, timeout=60)
        assert none.returncode == 2 and "no CUDA device here" in none.stderr


def test_host_overhead_variants_parse_and_refuse_unknown_options():
    """tools/host_overhead.py's variants: engine and CUDA runner options by name, in any order; an unknown option
    is refused by name (argparse turns it into a usage error)."""
    import argparse

    import pytest

    sys.path.insert(0, str(TOOLS))
    try:
        from host_overhead import Variant, parse_variant
    finally:
        sys.path.remove(str(TOOLS))
    assert parse_variant("1:on") == Variant(1.0, True)
    v = parse_variant("0.3:on:overlap:replay:ipc:copies")
    assert v == Variant(0.3, True, "ipc", False, True, True, True) and v.key() == "0.3:on:ipc:copies:replay:overlap"
    assert v.label() == "spin 0.3 ms, pre-tick on, ipc, copies in graphs, warm replay, warm during forward"
    assert parse_variant("1:on:rspin") == Variant(1.0, True, rspin=True)
    v = parse_variant("1:on:launch:overlap")
    assert v.label() == "spin 1 ms, pre-tick on, tcp, warm during forward, launched ahead"
    assert parse_variant("1:on:rspin").label() == "spin 1 ms, pre-tick on, tcp, subscriber spinning 0.5 ms"
    for bad in ("1", "1:maybe", "x:on", "1:on:tcp:ipc", "1:on:fast", "1:on:replay:launch"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected SPIN_MS"):
            parse_variant(bad)


def test_zmq_wake_measures_both_subscribers_and_refuses_bad_arguments(tmp_path):
    """tools/zmq_wake.py: a publisher here, a subscriber process sleeping in poll or busy-polling (real sockets on
    127.0.0.1); every tick arrives, and only the spinning subscriber takes ticks while spinning."""
    import json

    out = tmp_path / "wake.json"
    res = subprocess.run([sys.executable, str(TOOLS / "zmq_wake.py"), "--rounds", "1", "--ticks", "40", "--spin-ms",
                          "0", "--spin-ms", "2", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rounds = json.loads(out.read_text())["rounds"]
    (asleep,), (spinning,) = rounds["0.0"], rounds["2.0"]
    assert asleep["n"] == spinning["n"] == 40  # the warm-up's 10 left out
    assert asleep["spin_share"] == 0 and spinning["spin_share"] > 0.5
    assert 0 < asleep["median_us"] <= asleep["p99_us"] and 0 < spinning["median_us"] <= spinning["p99_us"]
    assert "subscriber spin ms" in res.stdout
    bad = subprocess.run([sys.executable, str(TOOLS / "zmq_wake.py"), "--spin-ms", "-1"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--spin-ms" in bad.stderr

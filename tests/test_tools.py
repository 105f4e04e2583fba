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

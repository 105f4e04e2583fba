"""The command line, run as a user runs it (a real subprocess of the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poyo_rt.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"]])
def test_help(args):
    res = run_cli(*args)
    assert res.returncode == 0 and "usage: poyo-rt" in res.stdout


def test_no_command_is_usage_error():
    res = run_cli()
    assert res.returncode == 2 and "COMMAND" in res.stderr


def test_bench_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    res = run_cli("bench", "--quick", "--device", "cpu", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "poyo_rt eager" in res.stdout
    payload = json.loads(out.read_text())
    (result,) = payload["results"]
    assert result["config"] == "poyo_1.3M" and result["n_input_tokens"] == 2200
    names = [t["name"] for t in result["timings"]]
    assert names[:2] == ["torch_brain eager", "poyo_rt eager"]
    assert result["max_abs_diff_vs_torch_brain"] <= 1e-5
    assert all(t["median_us"] > 0 and t["p99_us"] >= t["median_us"] for t in result["timings"])


def test_bench_bad_iters_is_usage_error():
    res = run_cli("bench", "--iters", "0")
    assert res.returncode == 2 and "--iters" in res.stderr

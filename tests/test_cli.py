"""The command line, run as a user runs it (a real subprocess of the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poyo_rt.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["streams", "--help"]])
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
    assert names == ["torch_brain eager", "poyo_rt eager", "poyo_rt fused eager", "poyo_rt bf16 (opt-in)"]
    assert result["max_abs_diff_vs_exact"]["poyo_rt fused eager"] <= 1e-5
    kernels = {t["name"]: t["kernels"] for t in result["timings"]}  # aten operators a call, views excluded
    assert kernels["poyo_rt fused eager"] < kernels["poyo_rt eager"] < kernels["torch_brain eager"]
    assert 0 < result["bf16_max_rel_err_vs_fp32"] <= 2e-2
    assert result["max_abs_diff_vs_torch_brain"] <= 1e-5
    assert all(t["median_us"] > 0 and t["p99_us"] >= t["median_us"] for t in result["timings"])
    # FLOPs of a forward (0.716 GFLOP for poyo_1.3M at 2,200 tokens, attention included) and the matmul rate
    assert 0.70 < result["gflop_per_forward"] < 0.73 and result["matmul_gflops"] > 0
    assert result["flop_bound_ms"] == pytest.approx(result["gflop_per_forward"] / result["matmul_gflops"] * 1e3)
    # per tick of a stream: the kv-cache path decodes what torch_brain decodes, recomputing a fraction of the tokens
    (stream,) = payload["stream"]
    assert [t["name"] for t in stream["timings"]] == ["torch_brain eager", "poyo_rt exact", "poyo_rt kv-cache",
                                                      "poyo_rt kv-cache ahead"]
    # the next tick's encoder attention prepared between ticks: used by every tick but the first
    assert stream["ahead_used_ticks"] == stream["ahead_ticks"] - 1 > 0 and stream["ahead_prepare_us"]["median_us"] > 0
    assert stream["reference"] == "torch_brain eager"
    assert max(stream["max_abs_diff_vs_reference"].values()) <= 1e-5
    assert 0 < stream["mean_recomputed_per_tick"] < 0.5 * stream["mean_input_tokens"]
    assert 0.5 < stream["cached_gflop_per_tick"] < stream["exact_gflop_per_tick"] < 0.75


def test_bench_tokenizer_quick_json(tmp_path):
    out = tmp_path / "tok.json"
    res = run_cli("bench", "tokenizer", "--quick", "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "poyo_rt incremental" in res.stdout
    payload = json.loads(out.read_text())["tokenizer"]
    for sweep in ("fixed_rate", "fixed_count"):
        rows = payload[sweep]
        assert [r["window_s"] for r in rows] == [0.5, 4.0]
        for r in rows:
            names = [t["name"] for t in r["timings"]]
            assert names == ["torch_brain tokenize", "naive numpy", "poyo_rt incremental"]
            assert r["token_overflow"] == 0 and all(t["median_us"] > 0 for t in r["timings"])
    assert payload["fixed_count"][1]["mean_spikes_per_window"] == pytest.approx(2000, rel=0.05)
    assert payload["fixed_rate"][1]["mean_spikes_per_window"] == pytest.approx(8000, rel=0.05)


def test_bench_e2e_quick_counts_every_spike(tmp_path):
    """A real player process -> LSL -> engine -> ZeroMQ -> subscriber, both phases; every pushed spike arrives."""
    out = tmp_path / "e2e.json"
    res = run_cli("bench", "e2e", "--quick", "--units", "50", "--rate", "3000", "--json", str(out),
                  "--report-dir", str(tmp_path / "logs"), timeout=240)
    assert res.returncode == 0, res.stderr
    (result,) = json.loads(out.read_text())["e2e"]
    assert [p["path"] for p in result["phases"]] == ["torch_brain", "poyo_rt"]
    for phase in result["phases"]:
        assert phase["spikes_pushed"] > 5 * 3000 * 0.5  # ~5 s at 3,000 spikes/s
        assert phase["spikes_taken_in"] == phase["spikes_pushed"] == phase["spikes_accepted"]
        assert phase["drops"] == {}
        assert phase["ticks_received"] == phase["ticks_published"] > 0
        assert 0 < phase["receipt_us"]["median_us"] <= phase["receipt_us"]["p99_us"]
        assert phase["forward_us"]["n"] == phase["ticks_received"]
        # tick -> receipt split at each message's send stamp: the engine's part, then ZeroMQ's and the subscriber's
        assert phase["tick_to_send_us"]["n"] == phase["send_to_receipt_us"]["n"] == phase["ticks_received"]
        assert 0 < phase["send_to_receipt_us"]["median_us"]
        assert phase["tick_to_send_us"]["median_us"] < phase["tick_to_receipt_us"]["median_us"]
        # the engine stops when the player pauses: receipt latency leaves out at most the tick that ended past the
        # pause; forward and tick -> receipt keep all
        assert phase["ticks_received"] - 2 <= phase["receipt_ticks"] <= phase["ticks_received"]
        assert phase["receipt_us"]["n"] == phase["receipt_ticks"]
        log = json.loads((tmp_path / "logs" / f"e2e-poyo_1.3M-{phase['path']}.json").read_text())
        # so the latency log holds no ticks of the silence after the pause (they read up to 500 ms before)
        assert log["summary"]["stages"]["spike_age"]["max_us"] < 100_000, log["summary"]["stages"]["spike_age"]
        assert log["meta"]["phase"] == phase["path"] and log["meta"]["ticks"] == phase["ticks_published"]
        assert log["meta"]["runner"] == phase["runner"]
        # every tick over the deadline counted under one cause (the baseline's slow forward misses some)
        causes, over = phase["engine"]["miss_causes"], phase["engine"]["stages"]["tick"]["deadline_misses"]
        assert log["meta"]["miss_causes"] == causes and sum(causes.values()) == over
        assert (f"{phase['path']:<12} {over} ticks over the deadline once sent, by cause:" in res.stdout) == (over > 0)
    # poyo_rt's key/value cache prepared the next tick's encoder attention between ticks, and the ticks after a
    # preparation used it (torch_brain's runner has no cache: nothing counted). How many ticks prepare depends on
    # the time the forward leaves in each period, which this shared VM's slow stretches cut (one CI run: 60 of
    # 274); that a slow preparation does not switch preparing off is test_engine's driven-clock test.
    baseline, ours = result["phases"]
    assert baseline["runner"] == {} and ours["runner"]["ticks"] == ours["ticks_published"] + 1  # + the warm-up
    assert ours["runner"]["prepared"] > 0, ours["runner"]
    assert ours["runner"]["prepared_used"] >= 0.9 * ours["runner"]["prepared"], ours["runner"]
    assert "prepared between ticks" in res.stdout
    html = tmp_path / "report.html"  # the engine's log of the poyo_rt phase, as `poyo-rt report` renders it
    res = run_cli("report", str(tmp_path / "logs" / "e2e-poyo_1.3M-poyo_rt.json"), "--html", str(html))
    assert res.returncode == 0, res.stderr
    assert html.stat().st_size > 0
    page = html.read_text()
    assert "prepared between ticks" in page  # the run log's forward-path counters, rendered
    assert "Deadline misses by cause" in page and "<td>cpu_wait</td>" in page


def test_bench_bad_iters_is_usage_error():
    res = run_cli("bench", "--iters", "0")
    assert res.returncode == 2 and "--iters" in res.stderr


def test_cpu_affinity_flags_are_checked():
    res = run_cli("run", "--cpu-affinity", "two")
    assert res.returncode == 2 and "CPU list 'two'" in res.stderr
    res = run_cli("bench", "e2e", "--quick", "--cpu-affinity", "4096")
    assert res.returncode == 2 and "engine.cpu_affinity" in res.stderr and "not available" in res.stderr


def test_bench_e2e_cuda_options_are_refused_on_the_cpu():
    """--graph-copies and --cuda-warm replay are options of the CUDA graphs: on the CPU the bench stops with the
    config field named (exit 2), before decoding anything."""
    for flags in (["--graph-copies"], ["--cuda-warm", "replay"]):
        res = run_cli("bench", "e2e", "--device", "cpu", "--duration", "1", "--baseline-duration", "0", *flags)
        field = "model.graph_copies" if flags[0] == "--graph-copies" else "model.cuda_warm"
        assert res.returncode == 2 and field in res.stderr and "CUDA graphs" in res.stderr, res.stderr


def test_bench_e2e_pins_the_loop_and_moves_its_helpers_to_the_other_cores(tmp_path):
    """--cpu-affinity: the engine loop on the chosen core (the engine's summary), the player and the subscriber
    on the others (every thread of the player process, liblsl's included; Player.pin moves them back)."""
    import os

    from poyo_rt.bench.e2e import Player, split_cores
    from poyo_rt.runtime.threads import thread_ids

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    assert split_cores(None) == ((), None) and split_cores([cores[-1]]) == ((cores[-1],), tuple(cores[:-1]))
    assert split_cores(cores) == (tuple(cores), None)  # nothing left for the helpers: they stay unpinned

    def player_cores(player):
        return [os.sched_getaffinity(tid) for tid in thread_ids(player._proc.pid)]

    player = Player(1, n_units=4, rate_hz=100.0, cores=(cores[0],))
    try:
        assert player_cores(player) and all(c == {cores[0]} for c in player_cores(player))
        player.pin(None)
        assert all(c == set(cores) for c in player_cores(player)) and player.cores is None
    finally:
        player.close()
    out = tmp_path / "e2e.json"
    res = run_cli("bench", "e2e", "--quick", "--baseline-duration", "0", "--cpu-affinity", str(cores[-1]),
                  "--receiver-spin-ms", "0.5", "--ipc", "--json", str(out), timeout=240)
    assert res.returncode == 0, res.stderr
    (result,) = json.loads(out.read_text())["e2e"]
    assert result["cpu_affinity"] == [cores[-1]] and result["helper_cores"] == cores[:-1]
    (phase,) = result["phases"]
    assert phase["engine"]["pinned_cores"] == [cores[-1]]
    assert phase["spikes_taken_in"] == phase["spikes_pushed"] > 0
    assert phase["ticks_received"] == phase["ticks_published"]
    assert f"loop on core(s) {cores[-1]}" in res.stdout
    # the subscriber busy-polled around each expected tick, and took every tick
    assert result["receiver_spin_ms"] == 0.5 and "subscriber busy-polling 0.5 ms around each tick" in res.stdout
    assert result["transport"] == "ipc" and "published on ipc://" in res.stdout


def test_subscriber_spin_flags_are_checked():
    res = run_cli("listen", "--spin-ms", "-1", "--duration", "1")
    assert res.returncode == 2 and "--spin-ms" in res.stderr
    res = run_cli("bench", "e2e", "--quick", "--receiver-spin-ms", "2000")
    assert res.returncode == 2 and "--receiver-spin-ms" in res.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_and_listen_end_to_end_with_graceful_sigint(tmp_path, stream_name, source_id):
    """`poyo-rt run` decodes a real LSL stream in a subprocess, `poyo-rt listen` records its ticks;
    SIGUSR1 writes the latency report while it runs; SIGINT stops it gracefully (exit 0, final report)."""
    import signal
    import time

    import numpy as np

    from _poyo_ref import CONFIGS, make_pair
    from poyo_rt.stream import lsl

    model, _ = make_pair(CONFIGS["small"], n_units=20, n_sessions=1)
    ckpt = model.save_pretrained(tmp_path / "m.ckpt")
    outlet = lsl.make_spike_outlet(stream_name, [f"unit{i}" for i in range(20)], source_id)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    report = tmp_path / "latency.json"
    record = tmp_path / "ticks.ndjson"
    listener = subprocess.Popen([sys.executable, "-m", "poyo_rt.cli", "listen", "--endpoint", endpoint, "--count", "40",
                                 "--out", str(record), "--print-every", "10"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    decoder = subprocess.Popen([sys.executable, "-m", "poyo_rt.cli", "run", "--checkpoint", str(ckpt), "--stream",
                                stream_name, "--endpoint", endpoint, "--device", "cpu", "--report", str(report)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 60
        while listener.poll() is None and time.monotonic() < t_end:
            now = lsl.local_clock()
            outlet.push_chunk([[i % 20] for i in range(10)], (now + np.linspace(0, 0.01, 10)).tolist())
            time.sleep(0.01)
        out, err = listener.communicate(timeout=10)
        assert listener.returncode == 0, err
        assert not report.exists()
        decoder.send_signal(signal.SIGUSR1)  # the report on demand, while running
        t_end = time.monotonic() + 10
        while not report.exists() and time.monotonic() < t_end:
            time.sleep(0.02)
        assert report.exists() and decoder.poll() is None
        decoder.send_signal(signal.SIGINT)
        d_out, d_err = decoder.communicate(timeout=30)
    finally:
        for p in (listener, decoder):
            if p.poll() is None:
                p.kill()
    assert decoder.returncode == 0, d_err
    assert "final latency" in d_err and "stopping after this tick" in d_err
    lines = record.read_text().splitlines()
    assert len(lines) == 40
    recs = [json.loads(line) for line in lines]
    assert [r["seq"] for r in recs] == list(range(recs[0]["seq"], recs[0]["seq"] + 40))
    payload = json.loads(report.read_text())
    meta, summary = payload["meta"], payload["summary"]
    assert meta["ticks"] >= 40 and meta["config"]["input"]["name"] == stream_name and meta["code_version"]
    assert summary["stages"]["forward"]["count"] == meta["ticks"] and summary["stages"]["e2e"]["count"] > 0

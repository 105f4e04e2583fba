"""`poyo-rt streams` and the functions behind it: real LSL outlets on this machine, the command run as a user
runs it (a subprocess), its verdict and exit code checked against what `poyo-rt run` would do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from poyo_rt.stream import lsl

UNITS = [f"unit{i}" for i in range(20)]  # the vocabulary of _poyo_ref's models


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poyo_rt.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_inspect_stream_reads_each_layout_as_the_inlet_does(stream_name, source_id):
    events = lsl.make_spike_outlet(stream_name + "-ev", UNITS[:5], source_id + "-ev")
    counts = lsl.make_spike_outlet(stream_name + "-ct", UNITS[:3], source_id + "-ct", layout="counts", rate_hz=100.0)
    wide = lsl.make_spike_outlet(stream_name + "-wide", UNITS[:4], source_id + "-wide", channel_format="float32",
                                 channel_labels=["unit", "ch", "w0"])  # NDS-style: the unit among other columns
    try:
        visible = {i.name(): i for i in lsl.list_streams(1.0)}
        assert {stream_name + s for s in ("-ev", "-ct", "-wide")} <= set(visible)

        ev = lsl.inspect_stream(visible[stream_name + "-ev"])
        assert (ev.layout, ev.unit_ids, ev.problem) == ("events", tuple(UNITS[:5]), None)
        assert (ev.n_channels, ev.channel_format, ev.srate_hz, ev.source_id) == (1, "int32", 0.0, source_id + "-ev")

        ct = lsl.inspect_stream(visible[stream_name + "-ct"])
        assert (ct.layout, ct.unit_ids, ct.problem, ct.n_channels) == ("counts", tuple(UNITS[:3]), None, 3)
        assert ct.srate_hz == pytest.approx(100.0)

        wide_auto = lsl.inspect_stream(visible[stream_name + "-wide"])  # 3 columns, no unit column named
        assert wide_auto.layout is None and wide_auto.unit_ids == () and "unit_column" in wide_auto.problem
        by_label = lsl.inspect_stream(visible[stream_name + "-wide"], unit_column="unit")
        assert (by_label.layout, by_label.unit_ids, by_label.problem) == ("events", tuple(UNITS[:4]), None)
        with pytest.raises(ValueError, match="channel_column needs unit_column"):
            lsl.inspect_stream(visible[stream_name + "-wide"], layout="events", channel_column="ch")
    finally:
        del events, counts, wide


def test_list_streams_checks_its_wait():
    with pytest.raises(ValueError, match="wait_s"):
        lsl.list_streams(0)


def test_streams_command_verdicts_match_what_run_would_do(tmp_path, stream_name, source_id):
    from _poyo_ref import CONFIGS, make_pair

    model, _ = make_pair(CONFIGS["small"], n_units=20, n_sessions=1)
    ckpt = str(model.save_pretrained(tmp_path / "m.ckpt"))
    known = lsl.make_spike_outlet(stream_name, UNITS[:10], source_id)
    mixed = lsl.make_spike_outlet(stream_name + "-mixed", UNITS[:6] + ["new0", "new1"], source_id + "-mixed")
    try:
        # the stream `run` would decode, all its units known: exit 0, marked, counted
        res = run_cli("streams", "--stream", stream_name, "--checkpoint", ckpt, "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        rows = {s["name"]: s for s in doc["streams"]}
        assert doc["ok"] and doc["scope"] == "machine" and "10 of 10 units known" in doc["verdict"]
        assert rows[stream_name]["selected"] and rows[stream_name]["known_units"] == 10
        assert rows[stream_name]["unit_ids"] == UNITS[:10] and rows[stream_name]["layout"] == "events"
        assert not rows[stream_name + "-mixed"]["selected"] and rows[stream_name + "-mixed"]["known_units"] == 6

        # two units the checkpoint lacks: `run` refuses them by default (input.on_unknown_unit: error) ...
        res = run_cli("streams", "--stream", stream_name + "-mixed", "--checkpoint", ckpt)
        assert res.returncode == 1, res.stderr
        assert "not ready: " in res.stdout and "2 of its 8 units are not in the checkpoint's vocabulary" in res.stdout
        marked = [line for line in res.stdout.splitlines() if line.startswith("*")]
        assert len(marked) == 1 and stream_name + "-mixed" in marked[0] and "6 known to the checkpoint" in marked[0]
        # ... and decodes the rest when the config says drop
        cfg = tmp_path / "drop.yaml"
        cfg.write_text(f"input:\n  name: {stream_name}-mixed\n  on_unknown_unit: drop\nmodel:\n  checkpoint: {ckpt}\n")
        res = run_cli("streams", str(cfg))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "6 of 8 units known, 2 dropped" in res.stdout

        # a config whose stream is not there, or is there twice
        res = run_cli("streams", "--stream", stream_name + "-absent")
        assert res.returncode == 1 and "no visible stream matches the config's input" in res.stdout
        twin = lsl.make_spike_outlet(stream_name, UNITS[:10], source_id + "-twin")
        res = run_cli("streams", "--stream", stream_name)
        assert res.returncode == 1 and "2 streams match" in res.stdout and "input.source_id" in res.stdout
        del twin
        cfg.write_text(f"input:\n  name: {stream_name}\n  source_id: {source_id}\n")
        res = run_cli("streams", str(cfg))  # source_id picks one of them
        assert res.returncode == 0 and "is decodable (events, 10 units)" in res.stdout
        strangers = lsl.make_spike_outlet(stream_name + "-new", ["new0", "new1", "new2"], source_id + "-new")
        res = run_cli("streams", "--stream", stream_name + "-new", "--checkpoint", ckpt)
        assert res.returncode == 1 and "none of its 3 units is in the checkpoint's vocabulary of 20" in res.stdout
        assert "poyo-rt calibrate" in res.stdout
        del strangers
    finally:
        del known, mixed


def test_streams_command_refuses_bad_options(tmp_path):
    res = run_cli("streams", "--wait", "0")
    assert res.returncode == 2 and "--wait" in res.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("input:\n  layout: counts\n  channel_column: 1\n")
    res = run_cli("streams", str(cfg))
    assert res.returncode == 2 and "input.channel_column" in res.stderr


def test_columns_that_the_stream_shows_to_be_one_are_a_config_error(tmp_path, stream_name, source_id):
    """unit_column 0 and channel_column "unit" pass the config's own checks but name one column of this stream:
    `streams` and `run` both say so (exit 2), neither crashes."""
    from _poyo_ref import CONFIGS, make_pair

    model, _ = make_pair(CONFIGS["small"], n_units=20, n_sessions=1)
    ckpt = str(model.save_pretrained(tmp_path / "m.ckpt"))
    outlet = lsl.make_spike_outlet(stream_name, UNITS[:4], source_id, channel_labels=["unit", "ch", "w0"])
    cfg = tmp_path / "same.yaml"
    cfg.write_text(f"input:\n  name: {stream_name}\n  unit_column: 0\n  channel_column: unit\n")
    try:
        for args in (("streams", str(cfg)), ("run", str(cfg), "--checkpoint", ckpt, "--device", "cpu",
                                                "--duration", "2")):
            res = run_cli(*args)
            assert res.returncode == 2, (args, res.stderr)
            assert "input: channel_column='unit' and unit_column=0 are the same column 0" in res.stderr
            assert "Traceback" not in res.stderr
    finally:
        del outlet


REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_configs_read_the_acquisition_systems_they_name(tmp_path, stream_name, source_id):
    """Each example config in configs/ decodes a stream laid out as the system it names publishes it (the
    surveyed layouts: ../shared/data/README.md), and says what is missing when a part is."""
    from _poyo_ref import CONFIGS, make_pair

    model, _ = make_pair(CONFIGS["small"], n_units=20, n_sessions=1)
    ckpt = str(model.save_pretrained(tmp_path / "m.ckpt"))

    def streams(config: str, cwd) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "poyo_rt.cli", "streams", str(REPO_CONFIGS / config), "--stream",
                               stream_name, "--checkpoint", ckpt], capture_output=True, text=True, timeout=120, cwd=cwd)

    # Neural Data Simulator: [unit index, 0, 48 waveform samples], int16, no unit list in <desc>
    nds = lsl.make_spike_outlet(stream_name, UNITS[:8], source_id, channel_format="int16", type="SpikeEvents",
                                channel_labels=["channels", "units"] + [str(i) for i in range(48)], write_units=False)
    res = streams("nds-spike-events.yaml", tmp_path)  # its unit id file is not there yet
    assert res.returncode == 2 and "input.unit_ids" in res.stderr and "nds-units.txt" in res.stderr
    (tmp_path / "nds-units.txt").write_text("\n".join(UNITS[:8]) + "\n")
    res = streams("nds-spike-events.yaml", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is decodable (events): 8 of 8 units known" in res.stdout
    default = streams("default.yaml", tmp_path)  # the default input expects a unit list in <desc>
    assert default.returncode == 1 and "neither <desc><units>" in default.stdout and "input.unit_ids" in default.stdout
    del nds
    nds = lsl.make_spike_outlet(stream_name, UNITS[:8], source_id + "-nds2", channel_format="int16",
                                type="SpikeEvents", channel_labels=["channels", "units"] + [str(i) for i in range(48)])
    default = streams("default.yaml", tmp_path)  # with a unit list, the default still names no unit column: refused
    assert default.returncode == 1 and "has 50 channels" in default.stdout and "input.unit_column" in default.stdout
    del nds

    # Blackrock spikes: [ch_id, unit_id, waveform], units as (channel, unit) pairs; unit 0 (unsorted) not trained
    pairs = [(1, 1), (1, 2), (5, 1), (12, 0)]
    brk = lsl.make_spike_outlet(stream_name, [f"{c}_{u}" for c, u in pairs], source_id + "-brk",
                                channel_format="int16", channel_labels=["ch_id", "unit_id"] + [f"wf_{i}" for i in
                                                                                             range(6)])
    sorted_only, _ = make_pair(CONFIGS["small"], n_units=3, n_sessions=1)
    sorted_only.unit_emb.vocab = None  # a checkpoint that knows the first three pairs only
    sorted_only.unit_emb.initialize_vocab(["1_1", "1_2", "5_1"])
    ckpt = str(sorted_only.save_pretrained(tmp_path / "brk.ckpt"))
    res = streams("blackrock-spk.yaml", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 of 4 units known, 1 dropped (input.on_unknown_unit: drop)" in res.stdout
    del brk

    # binned counts: one channel per unit, labelled with the unit ids
    cts = lsl.make_spike_outlet(stream_name, UNITS[:3], source_id + "-ct", layout="counts", rate_hz=100.0,
                                write_units=False)
    ckpt = str(tmp_path / "m.ckpt")
    res = streams("binned-counts.yaml", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is decodable (counts): 3 of 3 units known" in res.stdout
    del cts


def test_a_counts_replay_is_what_the_binned_counts_config_decodes(stream_name):
    """`poyo-rt replay --spike-layout counts` publishes what configs/binned-counts.yaml reads (and the events
    default does not)."""
    replay = subprocess.Popen([sys.executable, "-m", "poyo_rt.cli", "replay", "synthetic", "--synthetic-duration", "20",
                               "--synthetic-units", "12", "--spike-layout", "counts", "--bin-ms", "20", "--name",
                               stream_name, "--no-behavior", "--no-progress"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        res = run_cli("streams", str(REPO_CONFIGS / "binned-counts.yaml"), "--stream", stream_name, "--wait", "3")
        assert res.returncode == 0, res.stdout + res.stderr
        row = next(line for line in res.stdout.splitlines() if line.startswith("*"))
        assert "50 Hz" in row and "counts, 12 units" in row and "12  " in row
        res = run_cli("streams", "--stream", stream_name, "--wait", "3")  # the default config: events
        assert res.returncode == 1 and "events stream" in res.stdout and "12 channels" in res.stdout
    finally:
        replay.terminate()
        replay.communicate(timeout=10)

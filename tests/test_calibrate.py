"""Calibration of a trained POYO to a new session (poyo_rt/train/calibrate.py, ``poyo-rt calibrate``).

The bundled checkpoint was trained on one synthetic population (seed 0). A population drawn with another seed has
other tuning; renamed, its units are unknown to the model. Calibration must make the frozen model decode it, leave
every weight the checkpoint had untouched (so the old session decodes bit for bit as before), write a checkpoint
torch_brain reads, and refuse what it cannot do with errors that name the problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from poyo_rt.errors import ConfigError
from poyo_rt.model import collate
from poyo_rt.registry import MODALITY_REGISTRY
from poyo_rt.replay import Session, generate_session
from poyo_rt.runtime.launch import session_index
from poyo_rt.train import evaluate_causal, load_decoder, train
from poyo_rt.train.calibrate import calibration_config, new_words, warm_start
from poyo_rt.train.command import add_parser
from poyo_rt.train.evaluate import MODEL_INPUT_KEYS

BUNDLED = Path(__file__).resolve().parents[1] / "poyo_rt" / "assets" / "default.ckpt"
SPEC = MODALITY_REGISTRY["hand_velocity_2d"]


def renamed(session: Session, session_id: str, prefix: str) -> Session:
    """``session`` under a new session id, every unit id prefixed (units the model has never seen)."""
    return dataclasses.replace(session, session_id=session_id, unit_ids=[f"{prefix}/{u}" for u in session.unit_ids])


def _forward(model, session: Session, t0s) -> torch.Tensor:
    """The model's outputs on windows [t0, t0 + 1 s) of ``session``, one query at each window's end."""
    samples = []
    for t0 in t0s:
        view = session.temporal_view(t0, t0 + 1.0)
        view.hand.timestamps = np.array([1.0])
        view.hand.vel = np.zeros((1, 2), dtype=np.float32)
        samples.append(model.tokenize(view))
    batch = collate(samples)["model_inputs"]
    with torch.no_grad():
        return model.eval()(**{k: batch[k] for k in MODEL_INPUT_KEYS})


def test_new_words_keeps_order_and_skips_known_and_repeats():
    assert new_words(["NA", "a", "b"], ["c", "a", "d", "c", "b"]) == ["c", "d"]
    assert new_words(["NA", "a"], []) == []


@pytest.fixture(scope="module")
def calibrated():
    """The bundled model calibrated on 54 s of another population (seed 1, 64 renamed units), 120 steps."""
    torch.manual_seed(0)
    session = renamed(generate_session(n_units=64, duration_s=120.0, seed=1), "pop1", "pop1")
    start = warm_start(BUNDLED, [session])
    base = {k: v.clone() for k, v in start.model.state_dict().items() if isinstance(v, torch.Tensor)}
    t_split = session.start_s + 0.5 * session.duration_s
    before = evaluate_causal(start.model, session, norm=start.norm, tick_hz=10.0, t_start_s=t_split)["r2_mean"]
    config = calibration_config(start, steps=120, lr=1e-2, warmup_steps=20, batch_size=16, split=0.5,
                                val_fraction=0.1, val_every=60, log_every=60, val_tick_hz=10.0, end_weight=3.0)
    result = train([session], config, start=start, offline_eval=False)
    after = evaluate_causal(result.model, session, norm=result.norm, tick_hz=10.0, t_start_s=t_split)["r2_mean"]
    return dataclasses.make_dataclass("Calibrated", ["session", "start", "base", "result", "before", "after"])(
        session, start, base, result, before, after)


def test_calibration_decodes_a_population_the_model_never_saw(calibrated):
    # measured: -0.12 before, 0.90 after (training from scratch on the same 54 s and steps: 0.66)
    assert calibrated.before < 0.1
    assert calibrated.after > 0.75
    assert calibrated.result.heldout["pop1"]["causal"]["r2_mean"] == pytest.approx(calibrated.after, abs=0.05)


def test_calibration_changes_only_the_new_rows_and_the_old_session_decodes_as_before(calibrated):
    model, start, base = calibrated.result.model, calibrated.start, calibrated.base
    state = model.state_dict()
    for key, value in base.items():
        if key in ("unit_emb.weight", "session_emb.weight"):
            continue
        assert torch.equal(state[key], value), key
    n_old_units = 65  # "NA" + the bundled model's 64 units
    assert torch.equal(state["unit_emb.weight"][:n_old_units], base["unit_emb.weight"][:n_old_units])
    assert torch.equal(state["session_emb.weight"][:2], base["session_emb.weight"][:2])
    new_rows = state["unit_emb.weight"][n_old_units:] != base["unit_emb.weight"][n_old_units:]
    assert new_rows.any(dim=1).all() and len(start.new_units) == 64  # every new unit learned something
    assert not torch.equal(state["session_emb.weight"][2], base["session_emb.weight"][2])

    original, _, _ = load_decoder(BUNDLED)
    old_session = generate_session(n_units=64, duration_s=300.0, seed=0)  # the bundled model's own session
    t0s = [240.0, 251.3, 287.9]
    assert torch.equal(_forward(model, old_session, t0s), _forward(original, old_session, t0s))


def test_calibrated_checkpoint_loads_in_torch_brain_and_defaults_to_its_session(calibrated, tmp_path):
    from torch_brain.models import POYO as TBPOYO

    from poyo_rt.model.checkpoint import read_checkpoint

    path = calibrated.result.model.save_pretrained(tmp_path / "cal.ckpt", **calibrated.start.extra())
    ours, _, meta = load_decoder(path)
    theirs = TBPOYO.load_pretrained(path).eval()
    assert list(theirs.unit_emb.vocab) == list(ours.unit_emb.vocab)
    session = calibrated.session
    samples = []
    for t0 in (70.0, 90.5):
        view = session.temporal_view(t0, t0 + 1.0)
        view.hand.timestamps = np.linspace(0.1, 1.0, 5)
        view.hand.vel = np.zeros((5, 2), dtype=np.float32)
        samples.append(ours.tokenize(view))
    inputs = {k: v for k, v in collate(samples)["model_inputs"].items() if k in MODEL_INPUT_KEYS}
    tb_inputs = {k: v for k, v in inputs.items() if k not in ("output_session_index", "output_mask")}
    tb_inputs["session_index"] = inputs["output_session_index"][:, 0]
    with torch.no_grad():
        a, b = ours(**inputs), theirs(**tb_inputs)
    mask = inputs["output_mask"]  # padded queries differ by design (torch_brain has one session per sample)
    assert mask.sum() == 10 and (a[mask] - b[mask]).abs().max().item() <= 1e-5

    assert meta["default_session"] == "pop1" and meta["calibration"]["new_units"] == 64
    assert meta["calibration"]["base_sessions"] == ["synthetic-seed0"]
    assert read_checkpoint(path)["hyper_parameters"]["poyo_rt"]["calibration"]["trainable"] == "new"
    assert session_index(ours, None, default=meta["default_session"]) == ours.session_emb.vocab["pop1"]
    assert session_index(ours, "synthetic-seed0", default="pop1") == ours.session_emb.vocab["synthetic-seed0"]
    with pytest.raises(ConfigError, match="2 sessions"):
        session_index(ours, None)


def test_trainable_all_trains_every_weight():
    session = renamed(generate_session(n_units=8, duration_s=20.0, seed=3), "s3", "s3")
    start = warm_start(BUNDLED, [session], trainable="all")
    base = {k: v.clone() for k, v in start.model.state_dict().items() if isinstance(v, torch.Tensor)}
    config = calibration_config(start, steps=3, batch_size=4, warmup_steps=1, split=0.8, val_fraction=0.0,
                                log_every=1)
    result = train([session], config, start=start, offline_eval=False)
    changed = [k for k, v in result.model.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert "readout.weight" in changed and "enc_atn.to_q.weight" in changed
    assert result.norm == start.norm  # the checkpoint's normalisation is kept


def test_warm_start_and_config_refuse_what_calibration_cannot_do():
    bundled_own = generate_session(n_units=8, duration_s=20.0, seed=0)  # session id synthetic-seed0: known
    with pytest.raises(ValueError, match="already in the checkpoint"):
        warm_start(BUNDLED, [bundled_own])
    one_channel = renamed(bundled_own, "mono", "mono")
    one_channel = dataclasses.replace(one_channel, behavior=one_channel.behavior[:, :1], behavior_labels=["vx"])
    with pytest.raises(ValueError, match="1 behaviour channels"):
        warm_start(BUNDLED, [one_channel])
    with pytest.raises(ValueError, match="trainable"):
        warm_start(BUNDLED, [renamed(bundled_own, "x", "x")], trainable="some")
    start = warm_start(BUNDLED, [renamed(bundled_own, "x", "x")])
    with pytest.raises(ValueError, match="dim"):
        calibration_config(start, dim=128)
    config = calibration_config(start, steps=2)
    assert (config.dim, config.depth, config.window_s, config.readout) == (64, 2, 1.0, "hand_velocity_2d")
    with pytest.raises(ValueError, match="not in the model's vocabularies"):
        start.check([renamed(bundled_own, "y", "y")], config)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_cli_calibrate_writes_a_checkpoint_that_evaluate_scores(tmp_path, capsys):
    out, summary = tmp_path / "cal.ckpt", tmp_path / "cal.json"
    common = ["--synthetic-duration", "20", "--synthetic-units", "8"]
    with pytest.raises(ConfigError, match="--session-id"):  # synthetic:0's id is the bundled model's own
        args = _parse("calibrate", str(BUNDLED), "synthetic:0", *common, "--out", str(out))
        args.func(args)
    args = _parse("calibrate", str(BUNDLED), "synthetic:5", *common, "--steps", "3", "--batch-size", "4",
                  "--warmup-steps", "1", "--val-every", "2", "--log-every", "1", "--out", str(out), "--json",
                  str(summary))
    assert args.steps == 3 and args.lr == pytest.approx(1e-2)  # calibrate's own default lr
    assert args.func(args) == 0 and out.is_file()
    payload = json.loads(summary.read_text())
    assert len(payload["losses"]) == 3 and payload["calibration"]["new_sessions"] == ["synthetic-seed5"]
    # synthetic sessions share unit ids (syn-u000 ...): the bundled model knows all 8, so only the session trains
    assert payload["calibration"]["new_units"] == 0
    args = _parse("evaluate", str(out), "synthetic:5", *common, "--split", "0.8", "--no-offline")
    assert args.func(args) == 0
    assert "causal" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--lr"):
        args = _parse("calibrate", str(BUNDLED), "synthetic:5", *common, "--lr", "-1", "--out", str(out))
        args.func(args)
    with pytest.raises(SystemExit) as exc:
        _parse("calibrate", "--help")
    assert exc.value.code == 0 and "--trainable" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("pyxdf") is None, reason="pyxdf not installed (test dependency)")
def test_cli_calibrate_from_a_labrecorder_style_xdf_names_its_streams_with_reader_options(tmp_path):
    """A lab's way in: the new session's first minutes recorded by LabRecorder next to other streams. Two
    regular numeric streams (a joystick's velocity, EMG) leave the behaviour stream ambiguous: the error lists
    them, ``-O behavior_stream=Joystick`` picks one, and the options are kept in the summary (and checkpoint)."""
    from test_readers import XdfStream, write_xdf

    s = generate_session(n_units=12, duration_s=24.0, seed=3)
    units = "".join(f"<unit><id>rig2/u{i:02d}</id></unit>" for i in range(len(s.unit_ids)))
    labels = "<channels><channel><label>vx</label></channel><channel><label>vy</label></channel></channels>"
    t0 = 5000.0  # an LSL clock reading, not zero
    path = tmp_path / "today.xdf"
    write_xdf(path, [
        XdfStream(1, "PeerSpikes", "SpikeEvents", "int32", 0, s.spike_units.astype(np.int32), s.spike_times_s + t0,
                  f"<units>{units}</units><value_meaning>unit index</value_meaning>"),
        XdfStream(2, "Joystick", "Control", "float32", 100, s.behavior, s.behavior_times_s + t0, labels),
        XdfStream(3, "EMG", "EMG", "float32", 100, np.zeros((len(s.behavior_times_s), 4)), s.behavior_times_s + t0),
    ], chunk=1000)
    out, summary = tmp_path / "today.ckpt", tmp_path / "today.json"
    run = ["calibrate", str(BUNDLED), str(path), "--steps", "2", "--batch-size", "4", "--warmup-steps", "1",
           "--val-every", "2", "--no-offline-eval", "--out", str(out), "--json", str(summary)]
    with pytest.raises(ConfigError, match="Joystick") as exc:
        args = _parse(*run)
        args.func(args)
    assert exc.value.field == "SESSION" and "EMG" in str(exc.value)
    with pytest.raises(ConfigError, match="unexpected keyword") as exc:
        args = _parse(*run, "-O", "behaviour_stream=Joystick")  # misspelt: read_xdf has no such option
        args.func(args)
    assert exc.value.field == "--reader-option"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        args = _parse(*run, "-O", "behavior_stream")
        args.func(args)
    with pytest.raises(ConfigError, match="synthetic"):
        args = _parse("calibrate", str(BUNDLED), "synthetic:5", "-O", "behavior_stream=Joystick", "--out", str(out))
        args.func(args)
    assert not out.exists()

    args = _parse(*run, "-O", "behavior_stream=Joystick", "-O", "behavior_labels=[\"vx\", \"vy\"]")
    assert args.func(args) == 0 and out.is_file()
    payload = json.loads(summary.read_text())
    assert payload["sources"] == [{"path": str(path), "behavior_stream": "Joystick", "behavior_labels": ["vx", "vy"]}]
    assert payload["calibration"]["new_units"] == 12 and payload["calibration"]["new_sessions"] == ["today"]
    model, _, meta = load_decoder(out)
    assert meta["default_session"] == "today" and "rig2/u11" in model.unit_emb.vocab


def test_cli_calibrate_reads_a_real_labrecorder_file(tmp_path):
    """The XDF LabRecorder wrote (../shared/data, 5 s, 8 units): read as the reader's tests read it, its 8
    units are new to the bundled model; calibrate gives them rows and evaluate then scores the file."""
    from test_readers import XDF_PATH

    if not XDF_PATH.is_file() or importlib.util.find_spec("pyxdf") is None:
        pytest.skip(f"real data or pyxdf absent: {XDF_PATH}")
    out, summary = tmp_path / "rec.ckpt", tmp_path / "rec.json"
    args = _parse("calibrate", str(BUNDLED), str(XDF_PATH), "--split", "1", "--val-fraction", "0", "--steps", "2",
                  "--batch-size", "2", "--warmup-steps", "1", "--out", str(out), "--json", str(summary))
    assert args.func(args) == 0
    calibration = json.loads(summary.read_text())["calibration"]
    assert calibration["new_units"] == 8 and calibration["new_sessions"] == ["labrecorder_spikes_behavior"]
    args = _parse("evaluate", str(out), str(XDF_PATH), "--no-offline")
    assert args.func(args) == 0

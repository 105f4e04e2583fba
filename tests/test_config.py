"""Run configuration: YAML -> dataclasses, defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poyo_rt.config import RunConfig, config_from_dict, load_config, with_overrides
from poyo_rt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_equals_builtin_defaults():
    """configs/default.yaml documents every field with its default: it must match the dataclasses."""
    assert load_config(REPO / "configs" / "default.yaml") == RunConfig()
    assert load_config(None) == RunConfig()


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


@pytest.mark.parametrize(
    "raw, field, words",
    [
        ({"engine": {"tick_hz": "fast"}}, "engine.tick_hz", "number"),
        ({"engine": {"tick_hz": -1}}, "engine.tick_hz", ">= 0"),
        ({"engine": {"tickhz": 50}}, "engine.tickhz", "unknown field"),
        ({"engine": {"buckets": [256, 100]}}, "engine.buckets", "multiples of 8"),
        ({"engine": {"n_outputs": 0}}, "engine.n_outputs", ">= 1"),
        ({"input": {"layout": "spikes"}}, "input.layout", "events"),
        ({"input": {"unit_column": 1.5}}, "input.unit_column", "integer"),
        ({"input": {"lsl_config": "x.cfg"}}, "input.lsl_config", "lsl_scope: site"),
        ({"model": {"device": "tpu"}}, "model.device", "one of"),
        ({"model": {"compile": "yes"}}, "model.compile", "true or false"),
        ({"model": {"fused": "yes"}}, "model.fused", "true or false"),
        ({"model": {"kernels": "cuda"}}, "model.kernels", "one of"),
        ({"model": {"kernels": "triton", "device": "cpu"}}, "model.kernels", "CUDA"),
        ({"model": {"kernels": "triton", "compile": True}}, "model.kernels", "compile false"),
        ({"output": {"topic": ""}}, "output.topic", "empty"),
        ({"metrics": {"log_every_s": -2}}, "metrics.log_every_s", ">= 0"),
        ({"modle": {}}, "modle", "unknown field"),
        ({"engine": [1, 2]}, "engine", "mapping"),
    ],
)
def test_errors_name_the_field(raw, field, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert err.value.field == field and words in str(err.value)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  tick_hz: 100\n  buckets: [256, 512]\ninput:\n  unit_column: units\n")
    cfg = load_config(path)
    assert cfg.engine.tick_hz == 100.0 and isinstance(cfg.engine.tick_hz, float)
    assert cfg.engine.buckets == (256, 512) and cfg.input.unit_column == "units"
    cfg2 = with_overrides(cfg, model={"device": "cpu", "checkpoint": None}, engine={"duration_s": 3})
    assert cfg2.model.device == "cpu" and cfg2.engine.duration_s == 3.0 and cfg2.engine.tick_hz == 100.0
    assert config_from_dict({"model": {"device": "cpu"}}).model.kernels == "auto"  # the default runs anywhere
    with pytest.raises(ConfigError, match="engine.spin_ms"):
        config_from_dict({"engine": {"spin_ms": -1}})
    assert config_from_dict({"model": {"device": "cuda", "precision": "tf32"}}).model.precision == "tf32"
    for bad in ({"device": "cpu"}, {"kernels": "triton"}, {"fused": False}, {"compile": True}):
        with pytest.raises(ConfigError, match="model.precision"):
            config_from_dict({"model": {"precision": "tf32", **bad}})
    with pytest.raises(ConfigError, match="engine.duration_s"):
        with_overrides(cfg, engine={"duration_s": -1})


def test_thread_policy():
    from poyo_rt.runtime.threads import MAX_AUTO_THREADS, apply_threads, auto_threads

    assert auto_threads("cpu", cores=1) == 1
    assert auto_threads("cpu", cores=2) == 1  # leave a core for LSL, the publisher and the player
    assert auto_threads("cpu", cores=6) == 5
    assert auto_threads("cpu", cores=64) == MAX_AUTO_THREADS
    assert auto_threads("cuda", cores=64) == 1
    assert load_config(None).model.threads == "auto"
    assert config_from_dict({"model": {"threads": 3}}).model.threads == 3
    assert config_from_dict({"model": {"threads": None}}).model.threads is None
    for bad in (0, "many", 1.5):
        with pytest.raises(ConfigError, match="model.threads"):
            config_from_dict({"model": {"threads": bad}})
    old = torch.get_num_threads()
    try:
        assert apply_threads(None, "cpu") == old
        assert apply_threads(1, "cpu") == 1 and torch.get_num_threads() == 1
        assert apply_threads("auto", "cpu") == auto_threads("cpu") == torch.get_num_threads()
        with pytest.raises(ValueError, match="threads"):
            apply_threads(True, "cpu")
    finally:
        torch.set_num_threads(old)


def test_realtime_priority_is_applied_and_restored_or_refused_with_a_warning(caplog):
    import os

    from poyo_rt.runtime.threads import RealtimePriority

    assert config_from_dict({"engine": {"realtime_priority": 10}}).engine.realtime_priority == 10
    with pytest.raises(ConfigError, match="engine.realtime_priority"):
        config_from_dict({"engine": {"realtime_priority": 100}})
    with pytest.raises(ValueError, match="priority"):
        RealtimePriority(0)
    with RealtimePriority(None) as rt:
        assert not rt.active
    before = os.sched_getscheduler(0)
    with caplog.at_level("WARNING"), RealtimePriority(5) as rt:
        if rt.active:  # root or CAP_SYS_NICE: the thread really is real-time now
            assert os.sched_getscheduler(0) == os.SCHED_FIFO and os.sched_getparam(0).sched_priority == 5
        else:  # refused: said so, scheduling untouched
            assert "refused" in caplog.text and os.sched_getscheduler(0) == before
    assert os.sched_getscheduler(0) == before

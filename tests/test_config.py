"""Run configuration: YAML -> dataclasses, defaults, and errors that name the field."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
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
        ({"engine": {"warm_during_forward": "yes"}}, "engine.warm_during_forward", "true or false"),
        ({"engine": {"buckets": [256, 100]}}, "engine.buckets", "multiples of 8"),
        ({"engine": {"n_outputs": 0}}, "engine.n_outputs", ">= 1"),
        ({"input": {"layout": "spikes"}}, "input.layout", "events"),
        ({"input": {"unit_column": 1.5}}, "input.unit_column", "integer"),
        ({"input": {"lsl_config": "x.cfg"}}, "input.lsl_config", "lsl_scope: site"),
        ({"input": {"layout": "counts", "channel_column": 1}}, "input.channel_column", "events streams only"),
        ({"input": {"unit_ids": []}}, "input.unit_ids", "empty list"),
        ({"input": {"unit_ids": ["a", "b", "a"]}}, "input.unit_ids", "duplicate ids, e.g. ['a']"),
        ({"input": {"unit_ids": ""}}, "input.unit_ids", "empty string"),
        ({"input": {"unit_ids": [1, 2]}}, "input.unit_ids", "string"),
        ({"input": {"unit_column": "ch", "channel_column": "ch"}}, "input.channel_column", "same column"),
        ({"input": {"channel_column": "ch"}}, "input.channel_column", "needs unit_column"),
        ({"model": {"device": "tpu"}}, "model.device", "one of"),
        ({"model": {"compile": "yes"}}, "model.compile", "true or false"),
        ({"model": {"fused": "yes"}}, "model.fused", "true or false"),
        ({"model": {"kernels": "cuda"}}, "model.kernels", "one of"),
        ({"model": {"kernels": "triton", "device": "cpu"}}, "model.kernels", "CUDA"),
        ({"model": {"kernels": "triton", "compile": True}}, "model.kernels", "compile false"),
        ({"model": {"graph_copies": True, "device": "cpu"}}, "model.graph_copies", "CUDA graphs"),
        ({"model": {"graph_copies": True, "cuda_graphs": False}}, "model.graph_copies", "cuda_graphs true"),
        ({"model": {"cuda_warm": "forward"}}, "model.cuda_warm", "one of"),
        ({"model": {"cuda_warm": "replay", "device": "cpu"}}, "model.cuda_warm", "CUDA graphs"),
        ({"model": {"cuda_warm": "launch", "cuda_graphs": False}}, "model.cuda_warm", "cuda_graphs true"),
        ({"model": {"cuda_warm": "launch", "fused": False}}, "model.cuda_warm", "fused not false"),
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


def test_cpu_affinity_config_is_validated_and_checked_against_this_machine():
    from poyo_rt.runtime.launch import build_decoder

    assert load_config(None).engine.cpu_affinity == ()
    assert config_from_dict({"engine": {"cpu_affinity": [1, 0]}}).engine.cpu_affinity == (1, 0)
    for bad in ([-1], [0, 0], "0", [0.5]):
        with pytest.raises(ConfigError, match=r"engine.cpu_affinity"):
            config_from_dict({"engine": {"cpu_affinity": bad}})
    assert with_overrides(load_config(None), engine={"cpu_affinity": [0]}).engine.cpu_affinity == (0,)
    # a core this process may not use is refused before any stream is resolved (no stream named here exists)
    cfg = config_from_dict({"input": {"name": "no-such-stream", "resolve_timeout_s": 30.0},
                            "engine": {"cpu_affinity": [max(os.sched_getaffinity(0)) + 1]}})
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"engine.cpu_affinity.*not available to this process"):
        build_decoder(cfg, model=object())
    assert time.monotonic() - t0 < 5.0


def test_thread_clock_splits_wall_time_into_cpu_wait_and_off_cpu():
    """ThreadClock, real threads and a real competing process: a thread that sleeps is off the CPU, one that
    computes is on it, and one that shares its core with a busy process waits for it about half the time; each
    thread reads its own accounting from one shared clock."""
    from poyo_rt.runtime.threads import ThreadClock

    clock = ThreadClock()

    def span(work):  # (wall, cpu, wait) in ms of work() on the calling thread
        w0, (c0, q0) = time.perf_counter_ns(), clock.read()
        work()
        (c1, q1), w1 = clock.read(), time.perf_counter_ns()
        return (w1 - w0) / 1e6, (c1 - c0) / 1e6, (q1 - q0) / 1e6

    def busy(seconds):
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            pass

    wall, cpu, wait = span(lambda: time.sleep(0.05))
    assert wall >= 50 and cpu < 10 and wall - cpu - wait >= 40  # asleep: off the CPU
    wall, cpu, wait = span(lambda: busy(0.05))
    assert cpu >= 0.5 * wall and cpu <= wall + 0.1

    core = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    seen = {}
    try:
        os.sched_setaffinity(hog.pid, {core})

        def contended():
            os.sched_setaffinity(0, {core})  # this thread only
            seen["worker"] = span(lambda: busy(0.4))

        main_before = clock.read()
        thread = threading.Thread(target=contended)
        thread.start()
        thread.join(10)
        main_after = clock.read()
    finally:
        hog.kill()
        hog.wait()
    wall, cpu, wait = seen["worker"]
    assert wait >= 0.2 * wall and cpu <= 0.8 * wall  # the fair scheduler gives each about half the core
    assert cpu + wait <= wall + 1.0
    assert main_after[1] - main_before[1] < 0.1 * wall * 1e6  # the main thread's own wait (ns), not the worker's
    clock.close()


def _proc_stat(steal_by_core: dict[int, int]) -> str:
    """A /proc/stat as Linux writes it: the sum line, one line per core (steal is the 8th number), the rest."""
    total = sum(steal_by_core.values())
    lines = [f"cpu  46420 0 4456 171768 151 0 431 {total} 0 0"]
    lines += [f"cpu{c} 4116 0 2182 103807 37 0 387 {n} 0 0" for c, n in sorted(steal_by_core.items())]
    return "\n".join(lines + ["intr 1084189 0 0 0", "ctxt 2254812", "btime 1795794200", ""])


def test_steal_clock_reads_the_steal_time_of_its_cores(tmp_path):
    """StealClock, on a real file in /proc/stat's format rewritten between laps: a lap is the steal time of the
    most-robbed core among its own since the last lap, in ns (the kernel counts clock ticks); other cores do
    not count; an unreadable file is -1; this machine's /proc/stat reads."""
    from poyo_rt.runtime.threads import StealClock

    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(_proc_stat({0: 4, 1: 6, 2: 0}))
    pinned, every = StealClock([1], path=str(stat)), StealClock(path=str(stat))
    assert pinned.available and pinned.lap() == 0 and every.lap() == 0
    stat.write_text(_proc_stat({0: 4 + 9, 1: 6 + 3, 2: 0}))  # core 0 lost 9 ticks, core 1 (the pinned one) 3
    assert pinned.lap() == round(3 * tick_ns) and every.lap() == round(9 * tick_ns)
    assert pinned.lap() == 0  # since the previous lap
    stat.write_text(_proc_stat({0: 13, 1: 9, 2: 5}))
    assert StealClock([7], path=str(stat)).lap() == -1  # no such core
    stat.write_text("cpu0 1 2 3\n")  # too few numbers: not a steal count
    assert StealClock(path=str(stat)).lap() == -1
    missing = StealClock(path=str(tmp_path / "absent"))
    assert not missing.available and missing.lap() == -1
    if Path("/proc/stat").exists():
        here = StealClock(os.sched_getaffinity(0))
        assert here.available and here.lap() >= 0
        here.close()


def test_cpu_affinity_pins_only_the_calling_thread_and_restores_it():
    from poyo_rt.runtime.threads import CpuAffinity, format_cores, parse_cores

    assert parse_cores("3") == (3,) and parse_cores("2-4,0,3") == (0, 2, 3, 4)
    for bad in ("a", "3-1", "-1", "1,,2"):
        with pytest.raises(ValueError, match="CPU list"):
            parse_cores(bad)
    assert format_cores({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8" and format_cores([4]) == "4"
    everything = os.sched_getaffinity(0)
    core = max(everything)
    seen: dict[str, object] = {}
    pinned, release = threading.Event(), threading.Event()

    def worker():
        with CpuAffinity([core]) as aff:
            seen["inside"], seen["active"] = os.sched_getaffinity(0), aff.active
            pinned.set()
            release.wait(10)
        seen["after"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker)
    thread.start()
    assert pinned.wait(10)
    # meanwhile the process's other threads (this one included) are off the pinned core, when there is another
    assert os.sched_getaffinity(0) == (everything - {core} or everything)
    release.set()
    thread.join(10)
    assert seen == {"inside": {core}, "active": True, "after": everything}
    assert os.sched_getaffinity(0) == everything  # given back
    with CpuAffinity(()) as aff:
        assert not aff.active and os.sched_getaffinity(0) == everything
    with pytest.raises(ValueError, match=rf"cores \[{core + 1}\] are not available"):
        with CpuAffinity([core + 1]):
            pass
    assert os.sched_getaffinity(0) == everything


def test_unit_ids_from_a_list_or_a_file(tmp_path):
    assert config_from_dict({}).input.unit_id_list() is None
    assert config_from_dict({"input": {"unit_ids": ["b", "a"]}}).input.unit_id_list() == ["b", "a"]
    ids = tmp_path / "units.txt"
    ids.write_text("# electrode_unit, in the stream's unit-index order\nelec1_u1\n\n  elec1_u2  # sorted 2026-12-01\n"
                   "elec7_u1\n")
    assert config_from_dict({"input": {"unit_ids": str(ids)}}).input.unit_id_list() == ["elec1_u1", "elec1_u2",
                                                                                        "elec7_u1"]
    for text, words in (("a\nb\na\n", "duplicate ids"), ("# nothing\n\n", "lists no ids")):
        ids.write_text(text)
        with pytest.raises(ConfigError, match=words) as err:
            config_from_dict({"input": {"unit_ids": str(ids)}}).input.unit_id_list()
        assert err.value.field == "input.unit_ids" and str(ids) in str(err.value)
    with pytest.raises(ConfigError, match="cannot be read") as err:
        config_from_dict({"input": {"unit_ids": str(tmp_path / "missing.txt")}}).input.unit_id_list()
    assert err.value.field == "input.unit_ids"

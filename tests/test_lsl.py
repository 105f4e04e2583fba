"""Tests of poyo_rt.stream.lsl and poyo_rt.stream.units with real LSL outlets and inlets on loopback.

conftest.py has applied the machine-scope LSL config before this module imports pylsl.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pylsl
import pytest

from poyo_rt.errors import StreamFormatError, StreamNotFoundError, UnitMismatchError
from poyo_rt.stream import lsl
from poyo_rt.stream.lsl import (
    DROP_REASONS,
    SpikeInlet,
    configure_lsl,
    local_clock,
    make_spike_outlet,
    match_units,
    resolve_stream,
)

REPO = Path(__file__).resolve().parents[1]
CLOCK_TOL_S = 1e-3  # same-host clock correction reads tens of µs of estimation error


def open_inlet(name: str, **kwargs: object) -> SpikeInlet:
    return SpikeInlet(resolve_stream(name=name, timeout_s=3.0, unique_wait_s=0), **kwargs)


def pull_until_samples(inlet: SpikeInlet, n_samples: int, poll_until) -> tuple[np.ndarray, np.ndarray]:
    """Pull until the inlet has taken ``n_samples`` LSL samples; return all spikes, concatenated."""
    times, units = [], []

    def done() -> bool:
        t, u = inlet.pull()
        times.append(t)
        units.append(u)
        return inlet.n_samples >= n_samples

    poll_until(done, what=f"{n_samples} samples from {inlet.stream_name}")
    return np.concatenate(times), np.concatenate(units)


def zero_drops() -> dict[str, int]:
    return dict.fromkeys(DROP_REASONS, 0)


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def test_configure_lsl_applied_and_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    cfg = Path(os.environ["LSLAPICFG"])
    assert cfg.is_file()
    assert "ResolveScope = machine" in cfg.read_text()
    assert "KnownPeers = {127.0.0.1}" in cfg.read_text()
    before = lsl.lsl_config_description()
    assert before is not None and "machine" in before
    with caplog.at_level(logging.WARNING, logger="poyo_rt.stream.lsl"):
        configure_lsl()  # same choice: silent no-op
        assert not caplog.records
        configure_lsl("site")  # different choice after liblsl read its config: warned, ignored
    assert any("changes nothing" in r.getMessage() for r in caplog.records)
    assert lsl.lsl_config_description() == before


def test_configure_lsl_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        configure_lsl("galaxy")
    with pytest.raises(ValueError, match="config_path"):
        configure_lsl("machine", tmp_path / "missing.cfg")


_PROBE = """
import os, sys
from poyo_rt.stream import lsl
lsl.configure_lsl()
outlet = lsl.make_spike_outlet("cfg-probe-" + str(os.getpid()), ["a"], "cfg-probe-" + str(os.getpid()))
print("LSLAPICFG=" + os.environ.get("LSLAPICFG", ""))
print("DESC=" + lsl.lsl_config_description())
"""


def _run_probe(env_cfg: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    if env_cfg is not None:
        env["LSLAPICFG"] = env_cfg
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=30, check=True
    )


def test_fresh_process_loads_packaged_config_before_first_lsl_call() -> None:
    # liblsl logs where it read its configuration from ([log] level = 0 in loopback.cfg).
    proc = _run_probe(env_cfg=None)
    assert "Configuration loaded from content" in proc.stderr, proc.stderr
    assert f"LSLAPICFG={lsl.packaged_config_path()}" in proc.stdout  # children inherit it


def test_fresh_process_honours_user_lslapicfg(tmp_path: Path) -> None:
    user_cfg = tmp_path / "user_lsl.cfg"
    user_cfg.write_text(lsl.packaged_config_path().read_text())
    proc = _run_probe(env_cfg=str(user_cfg))
    assert f"Configuration loaded from {user_cfg}" in proc.stderr, proc.stderr
    assert "honouring LSLAPICFG" in proc.stdout


# ------------------------------------------------------------------------------------------------
# Resolving
# ------------------------------------------------------------------------------------------------


def test_resolve_by_name_type_source_id(stream_name: str, source_id: str) -> None:
    stream_type = "T" + source_id[-10:]
    outlet = make_spike_outlet(stream_name, ["a", "b"], source_id, type=stream_type)
    uid = outlet.get_info().uid()
    for query in (
        {"name": stream_name},
        {"type": stream_type},
        {"source_id": source_id},
        {"name": stream_name, "source_id": source_id},
        {"name": stream_name, "type": stream_type, "source_id": source_id},
    ):
        assert resolve_stream(**query, timeout_s=3.0, unique_wait_s=0).uid() == uid, query


def test_resolve_not_found_lists_visible_streams(stream_name: str, source_id: str) -> None:
    _outlet = make_spike_outlet(stream_name, ["a"], source_id)
    resolve_stream(name=stream_name, timeout_s=3.0, unique_wait_s=0)  # it is visible
    with pytest.raises(StreamNotFoundError) as err:
        resolve_stream(name=stream_name + "-missing", type="Nope", timeout_s=0.2)
    msg = str(err.value)
    assert f"name='{stream_name}-missing'" in msg and "type='Nope'" in msg
    assert f"source_id='{source_id}'" in msg  # the stream that does exist is listed


def test_resolve_ambiguous_names_both(stream_name: str, source_id: str) -> None:
    _a = make_spike_outlet(stream_name, ["a"], source_id + "-A")
    _b = make_spike_outlet(stream_name, ["a"], source_id + "-B")
    with pytest.raises(StreamNotFoundError, match="ambiguous") as err:
        resolve_stream(name=stream_name, timeout_s=3.0)
    assert source_id + "-A" in str(err.value) and source_id + "-B" in str(err.value)
    # source_id disambiguates
    assert resolve_stream(name=stream_name, source_id=source_id + "-B").source_id() == source_id + "-B"


def test_resolve_rejects_bad_query() -> None:
    with pytest.raises(ValueError, match="at least one"):
        resolve_stream()
    with pytest.raises(ValueError, match="timeout_s"):
        resolve_stream(name="x", timeout_s=0)
    with pytest.raises(TypeError, match="name"):
        resolve_stream(name=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Events streams
# ------------------------------------------------------------------------------------------------


def test_events_int32_round_trip(stream_name: str, source_id: str, poll_until) -> None:
    ids = [f"u{i}" for i in range(5)]
    outlet = make_spike_outlet(stream_name, ids, source_id)
    with open_inlet(stream_name) as inlet:
        assert inlet.layout == "events" and inlet.unit_ids == ids
        assert abs(inlet.clock_offset_s) < CLOCK_TOL_S
        t0 = local_clock()
        pushed_t = t0 + np.arange(20) * 1e-3
        pushed_u = np.arange(20) % 5
        for t, u in zip(pushed_t, pushed_u):
            outlet.push_sample([int(u)], float(t))
        times, units = pull_until_samples(inlet, 20, poll_until)
        assert times.dtype == np.float64 and units.dtype == np.int64
        np.testing.assert_array_equal(units, pushed_u)
        np.testing.assert_allclose(times, pushed_t, atol=CLOCK_TOL_S, rtol=0)
        assert inlet.drops == zero_drops() and inlet.n_spikes == 20


def test_same_host_timestamps_kept_exactly_other_clock_measured(stream_name: str, source_id: str, poll_until) -> None:
    """auto: a stream from this host needs no correction (one clock), so times come back bit-exact;
    always: time_correction() is measured (a few tens of µs of estimation noise, not exactly 0)."""
    outlet = make_spike_outlet(stream_name, ["a", "b"], source_id)
    pushed = local_clock() + np.array([0.0, 1.234567e-4, 2.5e-3])
    with open_inlet(stream_name) as auto, open_inlet(stream_name, clock_correction="always") as measured:
        assert auto.clock_offset_s == 0.0
        assert 0 < abs(measured.clock_offset_s) < CLOCK_TOL_S
        outlet.push_chunk([[0], [1], [0]], pushed.tolist())
        times, _ = pull_until_samples(auto, 3, poll_until)
        np.testing.assert_array_equal(times, pushed)
        times, _ = pull_until_samples(measured, 3, poll_until)
        np.testing.assert_allclose(times, pushed + measured.clock_offset_s, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="clock_correction"):
        open_inlet(stream_name, clock_correction="sometimes")


@pytest.mark.parametrize("unit_column", [0, "channels"])
def test_events_nds_int16_chunk_shares_one_timestamp(
    stream_name: str, source_id: str, poll_until, unit_column: int | str
) -> None:
    ids = [str(i) for i in range(8)]
    labels = ["channels", "units"] + [str(i) for i in range(48)]
    outlet = make_spike_outlet(stream_name, ids, source_id, channel_format="int16", channel_labels=labels)
    with open_inlet(stream_name, unit_column=unit_column) as inlet:
        chunk = np.zeros((4, 50), dtype=np.int16)
        chunk[:, 0] = [1, 3, 3, 7]  # unit index, ordered by unit
        chunk[:, 2:] = np.random.default_rng(0).integers(-300, 300, (4, 48))  # waveform, ignored
        t_chunk = local_clock()
        outlet.push_chunk(chunk, t_chunk)  # irregular stream: every sample gets this timestamp
        times, units = pull_until_samples(inlet, 4, poll_until)
        np.testing.assert_array_equal(units, [1, 3, 3, 7])
        np.testing.assert_allclose(times, t_chunk, atol=CLOCK_TOL_S, rtol=0)
        assert np.all(times == times[0])  # shared timestamps are not "out of order"
        assert inlet.drops == zero_drops()


@pytest.mark.parametrize("with_channel_tags", [True, False], ids=["channel-label-tags", "ids-only"])
def test_events_blackrock_channel_unit_pairs(
    stream_name: str, source_id: str, poll_until, with_channel_tags: bool
) -> None:
    pairs = [(1, 1), (1, 2), (5, 1), (12, 0)]
    if with_channel_tags:
        ids = ["elec1-a", "elec1-b", "elec5-a", "elec12-unsorted"]
        unit_channels = pairs
    else:
        ids = [f"{c}_{u}" for c, u in pairs]  # documented fallback: "{channel}_{unit}"
        unit_channels = None
    labels = ["ch_id", "unit_id"] + [f"wf_{i}" for i in range(6)]
    outlet = make_spike_outlet(
        stream_name, ids, source_id, channel_format="int16", channel_labels=labels,
        unit_channels=unit_channels,
    )
    with open_inlet(stream_name, channel_column="ch_id", unit_column="unit_id") as inlet:
        sent = [(5, 1), (1, 2), (2, 1), (1, 1), (12, 0), (99, 9)]  # (2,1), (99,9): not in the list
        data = np.zeros((len(sent), 8), dtype=np.int16)
        data[:, :2] = sent
        t0 = local_clock()
        stamps = [t0 + 1e-3 * i for i in range(len(sent))]
        outlet.push_chunk(data, stamps)  # true per-spike timestamps
        times, units = pull_until_samples(inlet, len(sent), poll_until)
        np.testing.assert_array_equal(units, [2, 1, 0, 3])
        np.testing.assert_allclose(times, np.array(stamps)[[0, 1, 3, 4]], atol=CLOCK_TOL_S, rtol=0)
        assert inlet.drops["unknown_unit"] == 2
        assert sum(inlet.drops.values()) == 2


def test_events_bad_input_is_dropped_and_counted(
    stream_name: str, source_id: str, poll_until, caplog: pytest.LogCaptureFixture
) -> None:
    outlet = make_spike_outlet(stream_name, ["a", "b", "c"], source_id)
    with open_inlet(stream_name) as inlet, caplog.at_level(logging.WARNING, "poyo_rt.stream.lsl"):
        t0 = local_clock()
        samples = [  # (unit, timestamp)
            (0, t0),  # ok
            (1, float("nan")),  # nonfinite_time
            (1, float("inf")),  # nonfinite_time
            (1, t0 + 100.0),  # future_time
            (2, t0 + 0.002),  # ok
            (2, t0 + 0.001),  # out_of_order (earlier than the previous one)
            (-1, t0 + 0.003),  # negative_unit
            (3, t0 + 0.004),  # unit_out_of_range (3 units)
            (1, t0 + 0.005),  # ok
        ]
        for unit, stamp in samples:
            outlet.push_sample([unit], stamp)
        times, units = pull_until_samples(inlet, len(samples), poll_until)
        np.testing.assert_array_equal(units, [0, 2, 1])
        np.testing.assert_allclose(times, [t0, t0 + 0.002, t0 + 0.005], atol=CLOCK_TOL_S, rtol=0)
        expected = zero_drops() | {
            "nonfinite_time": 2, "future_time": 1, "out_of_order": 1, "negative_unit": 1,
            "unit_out_of_range": 1,
        }
        assert inlet.drops == expected
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_events_float_units_non_integer_dropped(stream_name: str, source_id: str, poll_until) -> None:
    outlet = make_spike_outlet(stream_name, ["a", "b"], source_id, channel_format="float32")
    with open_inlet(stream_name) as inlet:
        t0 = local_clock()
        values = [1.0, 0.5, float("nan"), float("inf"), -2.0, 0.0, 7.0]
        outlet.push_chunk(np.array(values, np.float32)[:, None], [t0 + 1e-4 * i for i in range(7)])
        _, units = pull_until_samples(inlet, len(values), poll_until)
        np.testing.assert_array_equal(units, [1, 0])
        assert inlet.drops == zero_drops() | {
            "non_integer_unit": 3, "negative_unit": 1, "unit_out_of_range": 1,
        }


def test_max_chunk_bounds_one_pull(stream_name: str, source_id: str, poll_until) -> None:
    outlet = make_spike_outlet(stream_name, ["a"], source_id)
    with open_inlet(stream_name, max_chunk=4) as inlet:
        outlet.push_chunk(np.zeros((10, 1), np.int32), local_clock())
        poll_until(lambda: len(inlet.pull()[0]) == 4, what="a first full pull")
        assert inlet.backlogged
        sizes = [4]
        poll_until(lambda: sizes.append(len(inlet.pull()[0])) or sum(sizes) == 10, what="the rest")
        assert max(sizes) == 4


# ------------------------------------------------------------------------------------------------
# Counts streams
# ------------------------------------------------------------------------------------------------


def test_counts_become_spikes_at_bin_timestamps(stream_name: str, source_id: str, poll_until) -> None:
    ids = ["w", "x", "y", "z"]
    rate = 100.0
    outlet = make_spike_outlet(stream_name, ids, source_id, layout="counts", rate_hz=rate)
    with open_inlet(stream_name) as inlet:
        assert inlet.layout == "counts" and inlet.nominal_srate_hz == rate
        bins = np.array([[0, 1, 0, 2], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0]], np.int32)
        t0 = local_clock()
        stamps = [t0, t0 + 0.01, t0 + 0.02, t0 + 0.06]  # 0.06: bins at 0.03, 0.04, 0.05 never came
        outlet.push_chunk(bins, stamps)
        times, units = pull_until_samples(inlet, 4, poll_until)
        np.testing.assert_array_equal(units, [1, 3, 3, 0, 2, 2, 2])
        expected_t = [t0, t0, t0, t0 + 0.01, t0 + 0.06, t0 + 0.06, t0 + 0.06]
        np.testing.assert_allclose(times, expected_t, atol=CLOCK_TOL_S, rtol=0)
        assert inlet.drops == zero_drops() | {"missed_samples": 3}


def test_counts_bad_values_dropped(stream_name: str, source_id: str, poll_until) -> None:
    outlet = make_spike_outlet(
        stream_name, ["a", "b", "c"], source_id, layout="counts", rate_hz=50.0, channel_format="float32"
    )
    with open_inlet(stream_name, max_count_per_bin=10) as inlet:
        bins = np.array([[1, -1, 0.5], [np.nan, 2, 1e9]], np.float32)
        t0 = local_clock()
        outlet.push_chunk(bins, [t0, t0 + 0.02])
        times, units = pull_until_samples(inlet, 2, poll_until)
        np.testing.assert_array_equal(units, [0, 1, 1])
        np.testing.assert_allclose(times, [t0, t0 + 0.02, t0 + 0.02], atol=CLOCK_TOL_S, rtol=0)
        assert inlet.drops == zero_drops() | {
            "negative_count": 1, "non_integer_count": 2, "count_too_large": 1,
        }


def test_unit_list_from_xml_and_from_channel_labels(stream_name: str, source_id: str) -> None:
    ids = ["n1", "n2", "n3"]
    _with_units = make_spike_outlet(stream_name + "-xml", ids, source_id + "-xml", layout="counts", rate_hz=10)
    _labels_only = make_spike_outlet(
        stream_name + "-lab", ids, source_id + "-lab", layout="counts", rate_hz=10, write_units=False
    )
    with open_inlet(stream_name + "-xml") as a, open_inlet(stream_name + "-lab") as b:
        assert a.unit_ids == ids and b.unit_ids == ids


def test_events_unit_list_missing_or_given(stream_name: str, source_id: str, poll_until) -> None:
    _outlet = make_spike_outlet(stream_name, ["p", "q"], source_id, write_units=False)
    info = resolve_stream(name=stream_name, timeout_s=3.0, unique_wait_s=0)
    with pytest.raises(StreamFormatError, match="unit_ids="):
        SpikeInlet(info)
    with SpikeInlet(info, unit_ids=["p", "q"]) as inlet:
        assert inlet.unit_ids == ["p", "q"]
    _other = make_spike_outlet(stream_name + "-2", ["p", "q"], source_id + "-2")
    with pytest.raises(StreamFormatError, match="publishes 2 units"):
        open_inlet(stream_name + "-2", unit_ids=["q", "p"])


# ------------------------------------------------------------------------------------------------
# Format errors at open time
# ------------------------------------------------------------------------------------------------


def test_wrong_channel_count_or_column_is_a_format_error(stream_name: str, source_id: str) -> None:
    labels = ["ch_id", "unit_id", "wf_0"]
    _outlet = make_spike_outlet(stream_name, ["1_1", "1_2"], source_id, channel_labels=labels, rate_hz=30)
    info = resolve_stream(name=stream_name, timeout_s=3.0, unique_wait_s=0)
    with pytest.raises(StreamFormatError, match="3 channels.*unit_column"):
        SpikeInlet(info, layout="events")
    with pytest.raises(StreamFormatError, match="3 channels but 2 units"):
        SpikeInlet(info, layout="counts")
    with pytest.raises(StreamFormatError, match="unit_column=5"):
        SpikeInlet(info, layout="events", unit_column=5)
    with pytest.raises(StreamFormatError, match="no channel labelled unit_column='unit'"):
        SpikeInlet(info, layout="events", unit_column="unit")
    with pytest.raises(ValueError, match="same column"):
        SpikeInlet(info, layout="events", unit_column=1, channel_column="unit_id")
    with pytest.raises(StreamFormatError, match=r"is regular \(30 Hz, 3 channels\).*layout counts"):
        SpikeInlet(info, layout="events", unit_column=0)  # valid columns, but a regular stream holds bins


def test_a_counts_stream_is_never_read_as_events(stream_name: str, source_id: str) -> None:
    """One channel per unit at a bin rate: with the events layout (and a unit column, as a run config always
    gives one) its first unit's counts would pass for unit indices; refused instead, the fix named."""
    _outlet = make_spike_outlet(stream_name, ["a", "b", "c"], source_id, layout="counts", rate_hz=100.0)
    info = resolve_stream(name=stream_name, timeout_s=3.0, unique_wait_s=0)
    with pytest.raises(StreamFormatError, match="input.layout: counts"):
        SpikeInlet(info, layout="events", unit_column=0)
    with SpikeInlet(info) as inlet:  # auto: a regular stream is counts
        assert inlet.layout == "counts"


def test_string_stream_is_a_format_error(stream_name: str, source_id: str) -> None:
    info = pylsl.StreamInfo(stream_name, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
    _outlet = pylsl.StreamOutlet(info)
    with pytest.raises(StreamFormatError, match="'string'"):
        open_inlet(stream_name)


def test_inlet_rejects_bad_arguments(stream_name: str, source_id: str) -> None:
    _outlet = make_spike_outlet(stream_name, ["a"], source_id)
    info = resolve_stream(name=stream_name, timeout_s=3.0, unique_wait_s=0)
    with pytest.raises(ValueError, match="max_chunk"):
        SpikeInlet(info, max_chunk=0)
    with pytest.raises(ValueError, match="layout"):
        SpikeInlet(info, layout="spikes")
    with pytest.raises(TypeError, match="unit_column"):
        SpikeInlet(info, unit_column=1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Loss, reconnection, lifetime
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stream_disappears_and_returns(stream_name: str, source_id: str, poll_until) -> None:
    ids = ["a", "b"]
    outlet = make_spike_outlet(stream_name, ids, source_id)
    inlet = open_inlet(stream_name, reconnect_poll_s=0.02)
    outlet.push_sample([1], local_clock())
    poll_until(lambda: len(inlet.pull()[0]) == 1, what="a first spike")

    del outlet
    gc.collect()
    poll_until(lambda: inlet.pull() and not inlet.connected, what="the loss to be noticed")
    assert inlet.lost_count == 1 and inlet.reconnect_count == 0
    assert len(inlet.pull()[0]) == 0  # disconnected: empty, no exception

    # a stream with the same source_id but other units is refused, not silently mapped
    impostor = make_spike_outlet(stream_name, ["a", "b", "c"], source_id)
    poll_until(lambda: inlet.pull() and inlet.rejected_reconnects == 1, what="the impostor refusal")
    assert not inlet.connected
    del impostor
    gc.collect()

    outlet = make_spike_outlet(stream_name, ids, source_id)
    poll_until(lambda: inlet.pull() and inlet.connected, timeout_s=5.0, what="reconnection")
    assert inlet.reconnect_count == 1 and inlet.lost_count == 1
    assert inlet.last_disconnect_s is not None and inlet.last_disconnect_s > 0
    t1 = local_clock()
    outlet.push_sample([0], t1)
    times, units = pull_until_samples(inlet, 2, poll_until)  # 1 before the loss + 1 now
    np.testing.assert_array_equal(units, [0])
    np.testing.assert_allclose(times, [t1], atol=CLOCK_TOL_S, rtol=0)
    inlet.close()


def test_close_and_context_manager(stream_name: str, source_id: str) -> None:
    _outlet = make_spike_outlet(stream_name, ["a"], source_id)
    with open_inlet(stream_name) as inlet:
        assert inlet.connected
    assert not inlet.connected
    inlet.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        inlet.pull()


# ------------------------------------------------------------------------------------------------
# Unit matching (pure)
# ------------------------------------------------------------------------------------------------


def test_match_units_error_mode() -> None:
    vocab = ["s1/u0", "s1/u1", "s1/u2"]
    np.testing.assert_array_equal(match_units(["s1/u2", "s1/u0"], vocab), [2, 0])
    with pytest.raises(UnitMismatchError, match="1 of 3 .*'s1/u9'.*poyo-rt calibrate"):
        match_units(["s1/u2", "s1/u9", "s1/u0"], vocab)


def test_match_units_drop_mode() -> None:
    vocab = ["a", "b", "c"]
    mapping = match_units(["c", "zz", "a"], vocab, on_unknown="drop")
    assert mapping.dtype == np.int64
    np.testing.assert_array_equal(mapping, [2, -1, 0])
    with pytest.raises(UnitMismatchError, match="none of.*poyo-rt calibrate"):
        match_units(["x", "y"], vocab, on_unknown="drop")


def test_match_units_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="on_unknown"):
        match_units(["a"], ["a"], on_unknown="ignore")
    with pytest.raises(ValueError, match="vocab_unit_ids has duplicate"):
        match_units(["a"], ["a", "a"])
    with pytest.raises(TypeError, match="stream_unit_ids"):
        match_units("abc", ["a"])  # type: ignore[arg-type]

"""Session readers: MAT/NPZ binned counts, NWB, XDF (real LabRecorder file and files built here to the
XDF specification), torch_brain/temporaldata HDF5, and clear errors for files that are not what they claim."""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path

import numpy as np
import pytest

from poyo_rt.replay import Session, SessionFormatError, detect_format, read_session
from poyo_rt.replay.readers import parse_reader_options, spikes_from_binned_counts


def _shared_data() -> Path:
    env = os.environ.get("POYO_RT_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


MAT_PATH = _shared_data() / "m1_stevenson_2011.mat"
XDF_PATH = _shared_data() / "labrecorder_spikes_behavior.xdf"
needs_mat = pytest.mark.skipif(not MAT_PATH.is_file(), reason=f"real data absent: {MAT_PATH}")
needs_xdf = pytest.mark.skipif(not XDF_PATH.is_file(), reason=f"real data absent: {XDF_PATH}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_pyxdf = pytest.mark.skipif(not _has("pyxdf"), reason="pyxdf not installed (test dependency)")
needs_pynwb = pytest.mark.skipif(not _has("pynwb"), reason="pynwb not installed (test dependency)")
needs_scipy = pytest.mark.skipif(not _has("scipy"), reason="scipy not installed (test dependency)")


# --- MAT / NPZ binned counts -------------------------------------------------------------
@pytest.fixture(scope="module")
def real_mat() -> tuple[Session, dict]:
    if not MAT_PATH.is_file():
        pytest.skip(f"real data absent: {MAT_PATH}")
    import scipy.io

    return read_session(MAT_PATH), scipy.io.loadmat(str(MAT_PATH))


@needs_mat
@needs_scipy
def test_real_mat_counts_units_and_behaviour(real_mat):
    session, raw = real_mat
    assert session.n_units == 171 and session.n_spikes == 2_352_815
    assert session.session_id == "m1_stevenson_2011" and session.unit_ids[0] == "m1_stevenson_2011/u000"
    assert session.behavior.shape == (15536, 2) and session.behavior_labels == ["vx", "vy"]
    np.testing.assert_array_equal(session.behavior_times_s, raw["time"][0])
    np.testing.assert_allclose(session.behavior, raw["handVel"][:2].T.astype(np.float32))
    assert session.metadata["bin_width_s"] == pytest.approx(0.05)
    assert session.metadata["spike_placement"] == "uniform" and session.metadata["spike_placement_seed"] == 0


@needs_mat
@needs_scipy
def test_real_mat_every_spike_inside_its_bin(real_mat):
    session, raw = real_mat
    centres, counts = raw["time"][0], raw["spikes"]
    times, units, bins = spikes_from_binned_counts(counts, centres, 0.05, seed=0)
    np.testing.assert_array_equal(times, session.spike_times_s)  # the reader's placement, exactly
    np.testing.assert_array_equal(units, session.spike_units)
    offset = times - centres[bins]
    assert offset.min() >= -0.025 and offset.max() < 0.025
    rebuilt = np.zeros(counts.shape, dtype=np.int64)
    np.add.at(rebuilt, (units, bins), 1)
    np.testing.assert_array_equal(rebuilt, counts)


@needs_mat
@needs_scipy
def test_real_mat_seed_controls_placement(real_mat):
    session, _ = real_mat
    again = read_session(MAT_PATH, seed=0)
    other = read_session(MAT_PATH, seed=1)
    np.testing.assert_array_equal(again.spike_times_s, session.spike_times_s)
    assert other.n_spikes == session.n_spikes
    assert not np.array_equal(other.spike_times_s, session.spike_times_s)


def _small_binned() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    centres = 1.0 + 0.05 * np.arange(40)
    return {
        "time": centres[None, :],
        "spikes": rng.poisson(1.5, size=(5, 40)).astype(np.uint8),
        "handVel": np.vstack([np.sin(centres), np.cos(centres), np.zeros(40)]),
    }


def _counts_per_bin(session: Session, centres: np.ndarray, width: float) -> np.ndarray:
    bins = np.floor((session.spike_times_s - (centres[0] - width / 2)) / width + 1e-9).astype(np.int64)
    out = np.zeros((session.n_units, len(centres)), dtype=np.int64)
    np.add.at(out, (session.spike_units, bins), 1)
    return out


@needs_scipy
def test_small_mat_exact_counts_per_bin(tmp_path):
    import scipy.io

    data = _small_binned()
    scipy.io.savemat(tmp_path / "small.mat", data)
    s = read_session(tmp_path / "small.mat", seed=3)
    np.testing.assert_array_equal(_counts_per_bin(s, data["time"][0], 0.05), data["spikes"])
    np.testing.assert_allclose(s.behavior, data["handVel"][:2].T.astype(np.float32))
    assert s.unit_ids == [f"small/u{i:03d}" for i in range(5)]
    centred = read_session(tmp_path / "small.mat", placement="center", unit_prefix="")
    assert centred.unit_ids[0] == "u000"
    assert set(np.round(centred.spike_times_s, 9)) <= set(np.round(data["time"][0], 9))


def test_mat_v73_is_read_with_h5py(tmp_path):
    import h5py

    data = _small_binned()
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in data.items():
            f[key] = value.T  # MATLAB writes column-major: (1, T) appears as (T, 1)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(128))
    s = read_session(path, seed=1)
    np.testing.assert_array_equal(_counts_per_bin(s, data["time"][0], 0.05), data["spikes"])
    np.testing.assert_allclose(s.behavior, data["handVel"][:2].T.astype(np.float32))


def test_npz_binned_counts_with_custom_keys_and_orientation(tmp_path):
    data = _small_binned()
    np.savez(tmp_path / "binned.npz", t=data["time"][0], counts=data["spikes"].T.astype(np.float64),
             vel=data["handVel"][:2].T)
    s = read_session(tmp_path / "binned.npz", time_key="t", spikes_key="counts", behavior_key="vel",
                     behavior_channels=None, session_id="custom")
    assert s.session_id == "custom" and s.n_units == 5
    np.testing.assert_array_equal(_counts_per_bin(s, data["time"][0], 0.05), data["spikes"])
    assert s.behavior.shape == (40, 2) and s.behavior_labels == ["vx", "vy"]


@needs_scipy
def test_binned_errors_name_the_problem(tmp_path):
    import scipy.io

    data = _small_binned()
    scipy.io.savemat(tmp_path / "nokey.mat", {k: v for k, v in data.items() if k != "spikes"})
    with pytest.raises(SessionFormatError, match="missing key 'spikes'"):
        read_session(tmp_path / "nokey.mat")
    scipy.io.savemat(tmp_path / "shape.mat", {**data, "spikes": np.zeros((5, 39))})
    with pytest.raises(SessionFormatError, match="spikes"):
        read_session(tmp_path / "shape.mat")
    scipy.io.savemat(tmp_path / "neg.mat", {**data, "spikes": -np.ones((5, 40))})
    with pytest.raises(SessionFormatError, match=">= 0"):
        read_session(tmp_path / "neg.mat")
    scipy.io.savemat(tmp_path / "frac.mat", {**data, "spikes": np.full((5, 40), 0.5)})
    with pytest.raises(SessionFormatError, match="whole counts"):
        read_session(tmp_path / "frac.mat")
    np.savez(tmp_path / "obj.npz", time=np.array([object()], dtype=object))
    with pytest.raises(SessionFormatError, match="pickle"):
        read_session(tmp_path / "obj.npz")


# --- wrong files -------------------------------------------------------------------------
def test_wrong_magic_and_unknown_files(tmp_path):
    for suffix in (".mat", ".xdf", ".npz", ".nwb", ".h5"):
        path = tmp_path / f"fake{suffix}"
        path.write_bytes(b"this is not a session file at all")
        with pytest.raises(SessionFormatError, match="fake"):
            read_session(path)
    (tmp_path / "mystery.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(SessionFormatError, match="unknown session format"):
        read_session(tmp_path / "mystery.bin")
    with open(tmp_path / "really_npz.xdf", "wb") as f:  # content says npz, suffix says xdf
        np.savez(f, x=np.zeros(2))
    with pytest.raises(SessionFormatError, match="looks like npz"):
        read_session(tmp_path / "really_npz.xdf")
    with pytest.raises(FileNotFoundError):
        read_session(tmp_path / "missing.xdf")
    with pytest.raises(ValueError, match="format"):
        read_session(tmp_path / "really_npz.xdf", format="csv")


def test_detected_formats_of_content_without_suffix(tmp_path):
    s = Session("x", ["a"], np.array([0.5]), np.array([0]), np.zeros(0), np.zeros((0, 0)), [], {})
    native = s.to_npz(tmp_path / "native.npz")
    renamed = tmp_path / "native_noext"
    renamed.write_bytes(native.read_bytes())
    assert detect_format(renamed) == "npz"
    assert read_session(renamed).unit_ids == ["a"]


# --- NWB ---------------------------------------------------------------------------------
def _write_nwb(path: Path, *, extra_vel: bool = False) -> dict:
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    spikes = {3: [0.10, 0.75, 1.20], 7: [0.05, 0.80], 9: [0.30, 0.31, 0.32, 1.90]}
    vel = np.stack([np.linspace(-1, 1, 20), np.linspace(2, 0, 20)], axis=1)
    stamps = 0.1 * np.arange(20) + 0.01
    nwb = NWBFile(session_description="test", identifier="nwb-test-id", session_id="nwb-session",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    nwb.add_unit_column("label", "unit label")
    for uid, times in spikes.items():
        nwb.add_unit(spike_times=times, id=uid, label=f"ch{uid}")
    module = nwb.create_processing_module("behavior", "behaviour")
    module.add(TimeSeries(name="hand_vel", data=vel, unit="m/s", timestamps=stamps))
    module.add(TimeSeries(name="speed", data=np.hypot(*vel.T), unit="m/s", timestamps=stamps))
    if extra_vel:
        nwb.add_acquisition(TimeSeries(name="cursor_vel", data=vel * 2, unit="m/s", rate=10.0, starting_time=0.5))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return {"spikes": spikes, "vel": vel, "stamps": stamps}


@needs_pynwb
def test_nwb_read_back_exactly(tmp_path):
    truth = _write_nwb(tmp_path / "rec.nwb")
    s = read_session(tmp_path / "rec.nwb")
    assert s.session_id == "nwb-session" and s.unit_ids == ["3", "7", "9"]
    expected = sorted((t, i) for i, times in enumerate(truth["spikes"].values()) for t in times)
    np.testing.assert_array_equal(s.spike_times_s, [t for t, _ in expected])
    np.testing.assert_array_equal(s.spike_units, [i for _, i in expected])
    np.testing.assert_array_equal(s.behavior_times_s, truth["stamps"])
    np.testing.assert_array_equal(s.behavior, truth["vel"].astype(np.float32))
    assert s.behavior_labels == ["vx", "vy"] and s.metadata["behavior_path"] == "processing/behavior/hand_vel"
    labelled = read_session(tmp_path / "rec.nwb", unit_id_column="label", behavior_path="behavior/speed",
                            behavior_labels=["speed"])
    assert labelled.unit_ids == ["ch3", "ch7", "ch9"] and labelled.behavior.shape == (20, 1)


@needs_pynwb
def test_nwb_ambiguous_behaviour_lists_candidates(tmp_path):
    truth = _write_nwb(tmp_path / "two.nwb", extra_vel=True)
    with pytest.raises(SessionFormatError, match="acquisition/cursor_vel"):
        read_session(tmp_path / "two.nwb")
    s = read_session(tmp_path / "two.nwb", behavior_path="cursor_vel")
    np.testing.assert_allclose(s.behavior_times_s, 0.5 + 0.1 * np.arange(20))
    np.testing.assert_array_equal(s.behavior, (truth["vel"] * 2).astype(np.float32))
    with pytest.raises(SessionFormatError, match="not found"):
        read_session(tmp_path / "two.nwb", behavior_path="behavior/nope")
    with pytest.raises(ValueError, match="unit_id_column"):
        read_session(tmp_path / "two.nwb", behavior_path="cursor_vel", unit_id_column="nope")


# --- XDF: a writer following the specification ---------------------------------------------
def _varlen(n: int) -> bytes:
    if n < 1 << 8:
        return b"\x01" + struct.pack("<B", n)
    if n < 1 << 32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


_XDF_DTYPES = {"int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4", "double64": "<f8"}


class XdfStream:
    """One stream to write: header fields, samples (S, C) with timestamps (S,), clock offsets."""

    def __init__(self, stream_id: int, name: str, type_: str, fmt: str, srate: float, values, stamps,
                 desc: str = "", offsets: tuple = ()):
        self.stream_id, self.name, self.type, self.fmt, self.srate = stream_id, name, type_, fmt, srate
        self.values = values if fmt == "string" else np.asarray(values).reshape(len(stamps), -1)
        self.stamps = np.asarray(stamps, dtype=np.float64)
        self.desc, self.offsets = desc, offsets  # offsets: ((collection_time, offset_value), ...)

    @property
    def channels(self) -> int:
        return 1 if self.fmt == "string" else self.values.shape[1]

    def header(self) -> bytes:
        xml = (f'<?xml version="1.0"?><info><name>{self.name}</name><type>{self.type}</type>'
               f"<channel_count>{self.channels}</channel_count><nominal_srate>{self.srate}</nominal_srate>"
               f"<channel_format>{self.fmt}</channel_format><source_id>src-{self.name}</source_id>"
               f"<version>1.1</version><created_at>100.0</created_at><uid>{uuid.uuid4()}</uid>"
               f"<desc>{self.desc}</desc></info>")
        return _chunk(2, struct.pack("<I", self.stream_id) + xml.encode())

    def samples(self, lo: int, hi: int) -> bytes:
        parts = []
        for i in range(lo, hi):
            stamp = b"\x08" + struct.pack("<d", self.stamps[i])
            if self.fmt == "string":
                raw = self.values[i].encode()
                parts.append(stamp + _varlen(len(raw)) + raw)
            else:
                parts.append(stamp + np.asarray(self.values[i], dtype=_XDF_DTYPES[self.fmt]).tobytes())
        return _chunk(3, struct.pack("<I", self.stream_id) + _varlen(hi - lo) + b"".join(parts))

    def clock_offsets(self) -> bytes:
        return b"".join(_chunk(4, struct.pack("<Idd", self.stream_id, t, v)) for t, v in self.offsets)

    def footer(self) -> bytes:
        offsets = "".join(f"<offset><time>{t}</time><value>{v}</value></offset>" for t, v in self.offsets)
        xml = (f'<?xml version="1.0"?><info><first_timestamp>{self.stamps[0]}</first_timestamp>'
               f"<last_timestamp>{self.stamps[-1]}</last_timestamp><sample_count>{len(self.stamps)}</sample_count>"
               f"<clock_offsets>{offsets}</clock_offsets></info>")
        return _chunk(6, struct.pack("<I", self.stream_id) + xml.encode())


def write_xdf(path: Path, streams: list[XdfStream], chunk: int = 7) -> bytes:
    """FileHeader, StreamHeaders, interleaved Samples chunks, a Boundary, ClockOffsets, StreamFooters."""
    out = [b"XDF:", _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    out += [s.header() for s in streams]
    longest = max(len(s.stamps) for s in streams)
    for lo in range(0, longest, chunk):
        out += [s.samples(lo, min(lo + chunk, len(s.stamps))) for s in streams if lo < len(s.stamps)]
    out.append(_chunk(5, uuid.UUID("6a3b9bc2-7df9-4e76-a4e5-a8a96bfcad73").bytes))
    out += [s.clock_offsets() for s in streams]
    out += [s.footer() for s in streams]
    data = b"".join(out)
    path.write_bytes(data)
    return data


_UNITS_DESC = ("<units>" + "".join(f"<unit><id>n{i}</id><channel>{i // 2}</channel><label>l{i}</label></unit>"
                                   for i in range(3)) + "</units><value_meaning>unit index</value_meaning>")
_LABELS = "<channels><channel><label>vx</label></channel><channel><label>vy</label></channel></channels>"


def _test_streams() -> dict[str, XdfStream]:
    rng = np.random.default_rng(11)
    spike_t = np.sort(rng.uniform(10.0, 12.0, 40))
    spike_u = rng.integers(0, 3, 40).astype(np.int32)
    beh_t = 10.0 + 0.01 * np.arange(200)
    beh = np.stack([np.sin(beh_t), np.cos(beh_t)], axis=1).astype(np.float32)
    count_t = 10.0 + 0.02 * np.arange(100)
    counts = rng.poisson(0.4, size=(100, 4)).astype(np.int16)
    count_labels = "<channels>" + "".join(f"<channel><label>cu{i}</label></channel>" for i in range(4)) + "</channels>"
    return {
        "spikes": XdfStream(1, "Spikes", "SpikeEvents", "int32", 0, spike_u, spike_t, _UNITS_DESC),
        # the behaviour recorder's clock is 10 s behind: its offsets must be added
        "behavior": XdfStream(2, "Kinematics", "Behavior", "float32", 100, beh, beh_t, _LABELS,
                              offsets=((11.0, 10.0), (13.0, 10.0))),
        "counts": XdfStream(3, "BinnedCounts", "Counts", "int16", 50, counts, count_t, count_labels,
                            offsets=((11.0, 0.0), (13.0, 0.0))),
        "eeg": XdfStream(4, "Aux", "EEG", "double64", 100, np.zeros((200, 3)), beh_t),
        "markers": XdfStream(5, "Markers", "Markers", "string", 0, ["start", "stop"], [10.0, 12.0]),
    }


@needs_pyxdf
def test_built_xdf_events_and_clock_offsets(tmp_path):
    st = _test_streams()
    write_xdf(tmp_path / "built.xdf", list(st.values()))
    s = read_session(tmp_path / "built.xdf", dejitter_timestamps=False)
    assert s.unit_ids == ["n0", "n1", "n2"] and s.metadata["spike_format"] == "events"
    np.testing.assert_allclose(s.spike_times_s, st["spikes"].stamps, atol=1e-9)
    np.testing.assert_array_equal(s.spike_units, st["spikes"].values[:, 0])
    np.testing.assert_allclose(s.behavior_times_s, st["behavior"].stamps + 10.0, atol=1e-9)  # offset applied
    np.testing.assert_array_equal(s.behavior, st["behavior"].values)
    assert s.behavior_labels == ["vx", "vy"] and s.metadata["behavior_stream"]["name"] == "Kinematics"
    raw = read_session(tmp_path / "built.xdf", synchronize_clocks=False, dejitter_timestamps=False)
    np.testing.assert_allclose(raw.behavior_times_s, st["behavior"].stamps, atol=1e-9)
    dejittered = read_session(tmp_path / "built.xdf")  # pyxdf's default refit of regular stamps
    np.testing.assert_allclose(dejittered.behavior_times_s, st["behavior"].stamps + 10.0, atol=1e-6)


@needs_pyxdf
def test_built_xdf_counts_stream(tmp_path):
    st = _test_streams()
    write_xdf(tmp_path / "built.xdf", list(st.values()))
    s = read_session(tmp_path / "built.xdf", spike_stream="BinnedCounts", behavior_stream="Behavior",
                     dejitter_timestamps=False, behavior_channels=["vy"])
    assert s.metadata["spike_format"] == "counts" and s.unit_ids == ["cu0", "cu1", "cu2", "cu3"]
    counts = st["counts"].values
    assert s.n_spikes == counts.sum()
    sample = np.rint((s.spike_times_s - 10.0) / 0.02).astype(np.int64)
    np.testing.assert_allclose(s.spike_times_s, st["counts"].stamps[sample], atol=1e-9)  # at sample times
    rebuilt = np.zeros_like(counts, dtype=np.int64)
    np.add.at(rebuilt, (sample, s.spike_units), 1)
    np.testing.assert_array_equal(rebuilt, counts)
    assert s.behavior_labels == ["vy"] and s.behavior.shape == (200, 1)


@needs_pyxdf
def test_built_xdf_wide_events_and_id_values(tmp_path):
    """An NDS-like events stream: [unit, 0, waveform...] int16, plus values that are unit ids."""
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 1, 30))
    units = rng.integers(0, 5, 30)
    wide = np.c_[units, np.zeros(30), rng.integers(-50, 50, (30, 4))].astype(np.int16)
    labels = "<channels>" + "".join(f"<channel><label>{x}</label></channel>"
                                    for x in ("channels", "units", "0", "1", "2", "3")) + "</channels>"
    ids_desc = ("<units>" + "".join(f"<unit><id>{10 + i}</id></unit>" for i in range(5))
                + "</units><value_meaning>unit id</value_meaning>")
    beh = XdfStream(2, "Beh", "Behavior", "float32", 10, np.zeros((10, 2)), 0.1 * np.arange(10))
    write_xdf(tmp_path / "wide.xdf", [XdfStream(1, "NDS spikes", "SpikeEvents", "int16", 0, wide, t, labels), beh])
    s = read_session(tmp_path / "wide.xdf", unit_column="channels")
    assert s.unit_ids == [f"unit{i}" for i in range(int(units.max()) + 1)]
    np.testing.assert_array_equal(s.spike_units, units)
    write_xdf(tmp_path / "ids.xdf", [XdfStream(1, "spk", "SpikeEvents", "int32", 0, units + 10, t, ids_desc), beh])
    s = read_session(tmp_path / "ids.xdf")
    assert s.unit_ids == ["10", "11", "12", "13", "14"]
    np.testing.assert_array_equal(s.spike_units, units)


@needs_pyxdf
def test_xdf_selection_and_corruption_errors(tmp_path):
    st = _test_streams()
    write_xdf(tmp_path / "nospikes.xdf", [st["behavior"], st["eeg"]])
    with pytest.raises(SessionFormatError, match="spike stream.*'Kinematics'"):
        read_session(tmp_path / "nospikes.xdf")
    write_xdf(tmp_path / "twobeh.xdf", [st["spikes"], st["eeg"], XdfStream(6, "More", "EEG", "float32", 100,
                                                                             np.zeros((5, 2)), np.arange(5.0))])
    with pytest.raises(SessionFormatError, match="behaviour stream.*'Aux'"):
        read_session(tmp_path / "twobeh.xdf")
    assert read_session(tmp_path / "twobeh.xdf", behavior_stream="Aux").behavior.shape == (200, 3)
    write_xdf(tmp_path / "spikesonly.xdf", [st["spikes"], st["markers"]])
    with pytest.raises(SessionFormatError, match="behaviour"):
        read_session(tmp_path / "spikesonly.xdf")
    assert read_session(tmp_path / "spikesonly.xdf", require_behavior=False).behavior.shape == (0, 0)
    bad_index = XdfStream(1, "Spikes", "SpikeEvents", "int32", 0, [0, 5], [1.0, 2.0], _UNITS_DESC)
    write_xdf(tmp_path / "badindex.xdf", [bad_index, st["behavior"]])
    with pytest.raises(SessionFormatError, match="index 5 out of range"):
        read_session(tmp_path / "badindex.xdf")

    data = write_xdf(tmp_path / "full.xdf", list(st.values()))
    (tmp_path / "cut.xdf").write_bytes(data[: len(data) // 2 + 3])
    with pytest.raises(SessionFormatError, match="corrupt"):
        read_session(tmp_path / "cut.xdf")
    (tmp_path / "garbage.xdf").write_bytes(b"XDF:" + bytes(range(256)) * 4)
    with pytest.raises(SessionFormatError):
        read_session(tmp_path / "garbage.xdf")


@needs_xdf
@needs_pyxdf
def test_real_labrecorder_xdf():
    s = read_session(XDF_PATH)
    assert s.n_spikes == 797 and s.n_units == 8
    assert s.unit_ids == [str(i) for i in range(8)]
    assert s.behavior.shape == (501, 2) and s.behavior_labels == ["vx", "vy"]
    np.testing.assert_allclose(np.diff(s.behavior_times_s), 0.01, atol=1e-6)  # 100 Hz
    assert np.all(np.isfinite(s.spike_times_s)) and np.all(np.diff(s.spike_times_s) >= 0)
    assert set(np.unique(s.spike_units)) <= set(range(8))
    assert s.metadata["spike_stream"]["source_id"] == "peer-spikes-0001"
    assert len(s.metadata["spike_stream"]["clock_offsets_s"]) == 1
    assert abs(s.spike_times_s[0] - s.behavior_times_s[0]) < 0.5  # both on the recorder's LSL clock


# --- torch_brain / temporaldata HDF5 --------------------------------------------------------
def test_temporaldata_hdf5(tmp_path):
    pytest.importorskip("torch_brain")
    import h5py
    from torch_brain.data import ArrayDict, Data, Interval, IrregularTimeSeries, RegularTimeSeries

    spikes = IrregularTimeSeries(timestamps=np.array([0.1, 0.2, 0.5, 0.9]), unit_index=np.array([0, 1, 0, 2]),
                                 domain="auto")
    vel = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    data = Data(spikes=spikes, units=ArrayDict(id=np.array(["a", "b", "c"])),
                cursor=RegularTimeSeries(vel=vel, sampling_rate=10.0, domain_start=0.3),
                hand=IrregularTimeSeries(timestamps=np.linspace(0, 1, 5), vel=np.ones((5, 2), dtype=np.float32),
                                         domain="auto"),
                session=Data(id="tb-session"), domain=Interval(0.0, 1.0))
    with h5py.File(tmp_path / "tb.h5", "w") as f:
        data.to_hdf5(f)
    s = read_session(tmp_path / "tb.h5")
    assert s.session_id == "tb-session" and s.unit_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(s.spike_times_s, [0.1, 0.2, 0.5, 0.9])
    np.testing.assert_array_equal(s.spike_units, [0, 1, 0, 2])
    assert s.metadata["behavior_key"] == "hand.vel" and s.behavior.shape == (5, 2)
    c = read_session(tmp_path / "tb.h5", behavior_key="cursor.vel")
    np.testing.assert_allclose(c.behavior_times_s, 0.3 + 0.1 * np.arange(10))
    np.testing.assert_array_equal(c.behavior, vel)
    with pytest.raises(SessionFormatError, match="candidates"):
        read_session(tmp_path / "tb.h5", behavior_key="finger.vel")


def test_parse_reader_options_json_values_text_fallback_and_errors():
    got = parse_reader_options(["behavior_stream=PeerBehavior", "behavior_channels=[0, 1]", "strict=false",
                                "unit_column=2", " unit_prefix =rig2/", "unit_column=units"])
    assert got == {"behavior_stream": "PeerBehavior", "behavior_channels": [0, 1], "strict": False,
                   "unit_prefix": "rig2/", "unit_column": "units"}  # a repeated key: the last wins
    assert parse_reader_options([]) == {} and parse_reader_options(["empty="]) == {"empty": ""}
    for bad in ("nokey", "=1", "two words=1", "1x=2"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_reader_options([bad])

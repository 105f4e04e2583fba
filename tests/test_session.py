"""Session: validation names the bad field; slice/split/window semantics; NPZ round trip without pickle;
the temporal view tokenizes with POYO."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from poyo_rt.replay import Session, read_session
from poyo_rt.replay.session import NPZ_MARKER, sort_spikes


def _fields(**overrides: object) -> dict:
    fields = dict(
        session_id="s1",
        unit_ids=["a", "b", "c"],
        spike_times_s=np.array([0.0, 0.1, 0.1, 0.5, 0.9, 1.0, 1.5]),
        spike_units=np.array([0, 1, 2, 0, 1, 2, 0]),
        behavior_times_s=np.arange(0.0, 2.0, 0.25),
        behavior=np.arange(16, dtype=np.float32).reshape(8, 2),
        behavior_labels=["vx", "vy"],
        metadata={"format": "test"},
    )
    fields.update(overrides)
    return fields


@pytest.fixture
def session() -> Session:
    return Session(**_fields())


def test_fields_are_coerced_and_summarised(session: Session):
    assert session.spike_times_s.dtype == np.float64 and session.spike_units.dtype == np.int64
    assert session.behavior.dtype == np.float32 and session.behavior_times_s.dtype == np.float64
    assert (session.n_units, session.n_spikes) == (3, 7)
    assert session.start_s == 0.0 and session.end_s == 1.75 and session.duration_s == 1.75
    s32 = Session(**_fields(spike_units=np.array([0, 1, 2, 0, 1, 2, 0], dtype=np.int32),
                            behavior=np.zeros((8, 2), dtype=np.float64)))
    assert s32.spike_units.dtype == np.int64 and s32.behavior.dtype == np.float32
    assert "s1" in repr(session)


@pytest.mark.parametrize(
    ("overrides", "field", "exc"),
    [
        (dict(session_id=""), "session_id", ValueError),
        (dict(unit_ids=["a", "b", "a"]), "unit_ids", ValueError),
        (dict(unit_ids=["a", 2, "c"]), "unit_ids", TypeError),
        (dict(spike_times_s=np.array([0.0, 0.1, 0.05, 0.5, 0.9, 1.0, 1.5])), "spike_times_s", ValueError),
        (dict(spike_times_s=np.array([0.0, 0.1, np.nan, 0.5, 0.9, 1.0, 1.5])), "spike_times_s", ValueError),
        (dict(spike_times_s=np.zeros((7, 1))), "spike_times_s", ValueError),
        (dict(spike_units=np.array([0, 1, 3, 0, 1, 2, 0])), "spike_units", ValueError),
        (dict(spike_units=np.array([0, 1, -1, 0, 1, 2, 0])), "spike_units", ValueError),
        (dict(spike_units=np.array([0, 1, 2])), "spike_units", ValueError),
        (dict(spike_units=np.array([0.0, 1, 2, 0, 1, 2, 0])), "spike_units", TypeError),
        (dict(behavior_times_s=np.arange(0.0, 2.0, 0.25)[::-1].copy()), "behavior_times_s", ValueError),
        (dict(behavior=np.zeros((7, 2))), "behavior", ValueError),
        (dict(behavior=np.zeros(8)), "behavior", ValueError),
        (dict(behavior=np.where(np.eye(8, 2) > 0, np.nan, 0.0)), "behavior", ValueError),
        (dict(behavior_labels=["vx"]), "behavior_labels", ValueError),
        (dict(metadata=[1, 2]), "metadata", TypeError),
    ],
)
def test_validation_names_the_bad_field(overrides: dict, field: str, exc: type):
    with pytest.raises(exc, match=field):
        Session(**_fields(**overrides))


def test_validate_catches_later_mutation(session: Session):
    session.spike_units[0] = 7
    with pytest.raises(ValueError, match="spike_units"):
        session.validate()


def test_empty_session_is_valid():
    s = Session("empty", [], np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 0)), [], {})
    assert s.n_spikes == 0 and s.duration_s == 0.0
    assert s.window(1.0, 0.5)[0].size == 0


def test_slice_is_half_open_and_can_be_relative(session: Session):
    part = session.slice(0.1, 1.0)
    np.testing.assert_array_equal(part.spike_times_s, [0.1, 0.1, 0.5, 0.9])
    np.testing.assert_array_equal(part.spike_units, [1, 2, 0, 1])
    np.testing.assert_array_equal(part.behavior_times_s, [0.25, 0.5, 0.75])
    assert part.unit_ids == session.unit_ids and "time_offset_s" not in part.metadata

    rel = session.slice(0.5, 1.5, relative=True)
    np.testing.assert_allclose(rel.spike_times_s, [0.0, 0.4, 0.5])
    np.testing.assert_array_equal(rel.behavior, session.behavior[2:6])
    np.testing.assert_allclose(rel.behavior_times_s, [0.0, 0.25, 0.5, 0.75])
    assert rel.metadata["time_offset_s"] == 0.5
    rel2 = rel.slice(0.25, 1.0, relative=True)  # offsets accumulate
    assert rel2.metadata["time_offset_s"] == 0.75
    np.testing.assert_allclose(rel2.spike_times_s + 0.75, [0.9, 1.0])

    rel.spike_units[:] = 0  # a slice owns its arrays
    assert session.spike_units[3] == 0 and session.spike_units[4] == 1
    assert session.slice(3.0, 4.0).n_spikes == 0
    with pytest.raises(ValueError, match="t0_s"):
        session.slice(1.0, 0.5)


def test_split_by_time_covers_everything(session: Session):
    first, second = session.split(0.5)  # at 0.875 s
    assert first.n_spikes + second.n_spikes == session.n_spikes
    assert first.spike_times_s.max() < 0.875 <= second.spike_times_s.min()
    assert second.spike_times_s[-1] == 1.5 and second.behavior_times_s[-1] == 1.75  # last event kept
    assert len(first.behavior) + len(second.behavior) == len(session.behavior)
    for bad in (0.0, 1.0, -0.1, 2):
        with pytest.raises(ValueError, match="fraction"):
            session.split(bad)


def test_window_returns_times_relative_to_window_start(session: Session):
    times, units = session.window(1.0, 0.9)  # [0.1, 1.0)
    np.testing.assert_allclose(times, [0.0, 0.0, 0.4, 0.8], atol=1e-12)
    np.testing.assert_array_equal(units, [1, 2, 0, 1])
    assert times.dtype == np.float64 and units.dtype == np.int64
    times, _ = session.window(1.5, 0.5)  # 1.5 itself excluded
    np.testing.assert_allclose(times, [0.0])
    with pytest.raises(ValueError, match="window_s"):
        session.window(1.0, 0.0)


def test_npz_round_trip_without_pickle(session: Session, tmp_path):
    path = session.to_npz(tmp_path / "s1")
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as npz:  # every array is plain
        assert int(npz[NPZ_MARKER]) == 1
        assert json.loads(str(npz["metadata_json"])) == {"format": "test"}
    for loaded in (Session.from_npz(path), read_session(path)):
        assert loaded.session_id == "s1" and loaded.unit_ids == ["a", "b", "c"]
        np.testing.assert_array_equal(loaded.spike_times_s, session.spike_times_s)
        np.testing.assert_array_equal(loaded.spike_units, session.spike_units)
        np.testing.assert_array_equal(loaded.behavior_times_s, session.behavior_times_s)
        np.testing.assert_array_equal(loaded.behavior, session.behavior)
        assert loaded.behavior_labels == ["vx", "vy"] and loaded.metadata == {"format": "test"}
    with zipfile.ZipFile(path) as zf:  # no object arrays hiding in the archive
        assert all(name.endswith(".npy") for name in zf.namelist())


def test_npz_rejects_missing_marker_and_unserialisable_metadata(session: Session, tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=NPZ_MARKER):
        Session.from_npz(tmp_path / "other.npz")
    session.metadata["bad"] = object()
    with pytest.raises(ValueError, match="metadata"):
        session.to_npz(tmp_path / "bad.npz")


def test_sort_spikes_is_stable():
    t, u = sort_spikes(np.array([0.2, 0.1, 0.2, 0.0]), np.array([1, 2, 0, 3]))
    np.testing.assert_array_equal(t, [0.0, 0.1, 0.2, 0.2])
    np.testing.assert_array_equal(u, [3, 2, 1, 0])


def test_temporal_view_tokenizes_with_poyo(session: Session):
    from poyo_rt.model import POYO
    from poyo_rt.registry import MODALITY_REGISTRY

    view = session.temporal_view(0.5, 1.5)
    np.testing.assert_allclose(view.spikes.timestamps, [0.0, 0.4, 0.5])
    np.testing.assert_array_equal(view.spikes.unit_index, [0, 1, 2])
    assert list(view.units.id) == ["a", "b", "c"] and view.session.id == "s1"
    np.testing.assert_allclose(view.hand.timestamps, [0.0, 0.25, 0.5, 0.75])
    assert view.hand.vel.shape == (4, 2) and view.absolute_start == 0.5

    model = POYO(sequence_length=1.0, readout_spec=MODALITY_REGISTRY["hand_velocity_2d"], latent_step=0.25,
                 num_latents_per_step=2, dim=16, depth=1, dim_head=8, cross_heads=1, self_heads=2)
    model.unit_emb.initialize_vocab(session.unit_ids)
    model.session_emb.initialize_vocab([session.session_id])
    tokens = model.tokenize(view)
    assert tokens["session_id"] == "s1" and tokens["absolute_start"] == 0.5
    np.testing.assert_array_equal(np.asarray(tokens["target_values"].obj), view.hand.vel)
    # 3 spikes + a start and an end token per unit
    assert len(np.asarray(tokens["model_inputs"]["input_unit_index"].obj)) == 3 + 2 * 3

    cursor = session.temporal_view(0.0, 1.0, behavior_name="cursor")
    assert cursor.cursor.vel.shape == (4, 2) and not hasattr(cursor, "hand")
    with pytest.raises(ValueError, match="behavior_name"):
        session.temporal_view(0.0, 1.0, behavior_name="spikes")

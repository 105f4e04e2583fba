"""Synthetic reaching session: deterministic, realistic rates, tuned (linearly decodable), refractory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from poyo_rt.replay import Session, generate_session
from poyo_rt.replay.synthetic import min_jerk_speed


@pytest.fixture(scope="module")
def session() -> Session:
    return generate_session(n_units=64, duration_s=300.0, seed=0)


def _binned_sqrt_counts(s: Session, bin_s: float) -> np.ndarray:
    n_bins = int(round((s.behavior_times_s[-1] + s.metadata["dt_s"]) / bin_s))
    idx = np.minimum((s.spike_times_s / bin_s).astype(np.int64), n_bins - 1)
    counts = np.zeros((n_bins, s.n_units))
    np.add.at(counts, (idx, s.spike_units), 1)
    return np.sqrt(counts)


def test_shapes_ids_and_defaults(session: Session):
    assert session.n_units == 64 and session.unit_ids[0] == "syn-u000" and session.unit_ids[-1] == "syn-u063"
    assert session.behavior.shape == (30000, 2) and session.behavior.dtype == np.float32
    assert session.behavior_labels == ["vx", "vy"]
    np.testing.assert_allclose(np.diff(session.behavior_times_s), 0.01, atol=1e-9)  # 100 Hz
    assert session.spike_times_s.min() >= 0.0 and session.spike_times_s.max() < 300.0
    assert session.metadata["n_reaches"] > 200  # out and back, ~0.5-1 s each with holds
    assert len(session.metadata["units"]["preferred_direction_rad"]) == 64


def test_same_seed_same_session_other_seed_differs():
    a = generate_session(n_units=8, duration_s=20.0, seed=3)
    b = generate_session(n_units=8, duration_s=20.0, seed=3)
    c = generate_session(n_units=8, duration_s=20.0, seed=4)
    np.testing.assert_array_equal(a.spike_times_s, b.spike_times_s)
    np.testing.assert_array_equal(a.spike_units, b.spike_units)
    np.testing.assert_array_equal(a.behavior, b.behavior)
    assert a.metadata == b.metadata
    assert a.n_spikes != c.n_spikes or not np.array_equal(a.spike_times_s, c.spike_times_s)
    assert not np.array_equal(a.behavior, c.behavior)


def test_rates_are_realistic(session: Session):
    mean_hz = np.bincount(session.spike_units, minlength=64) / 300.0
    assert 2.0 <= mean_hz.min() and mean_hz.max() <= 40.0
    assert 8.0 <= mean_hz.mean() <= 25.0
    counts = _binned_sqrt_counts(session, 0.1) ** 2  # 100 ms bins
    peak_hz = np.percentile(counts, 99.5, axis=0) / 0.1
    assert peak_hz.max() <= 130.0 and np.median(peak_hz) >= 30.0  # peaks of ~40-80 Hz, Poisson noise on top


def test_velocity_is_center_out_with_bell_profiles(session: Session):
    speed = np.hypot(*session.behavior.T)
    assert 0.15 <= np.percentile(speed, 99) <= 0.5  # m/s, as real reaching
    assert np.mean(speed < 0.02) > 0.2  # holds between reaches
    direction = np.arctan2(session.behavior[:, 1], session.behavior[:, 0])[speed > 0.15]
    octant = np.round(direction / (np.pi / 4)) % 8
    assert len(np.unique(octant)) == 8
    assert np.abs(direction - np.round(direction / (np.pi / 4)) * (np.pi / 4)).mean() < np.deg2rad(8)
    phase = np.linspace(0, 1, 1001)
    profile = min_jerk_speed(phase)
    assert np.argmax(profile) == 500 and abs(np.trapezoid(profile, phase) - 1.0) < 1e-6


def test_refractory_period_respected(session: Session):
    order = np.lexsort((session.spike_times_s, session.spike_units))
    t, u = session.spike_times_s[order], session.spike_units[order]
    isi = np.diff(t)[u[1:] == u[:-1]]
    assert isi.min() >= 0.002
    s = generate_session(n_units=4, duration_s=30.0, seed=1, refractory_s=0.01)
    order = np.lexsort((s.spike_times_s, s.spike_units))
    t, u = s.spike_times_s[order], s.spike_units[order]
    assert np.diff(t)[u[1:] == u[:-1]].min() >= 0.01


def test_velocity_is_linearly_decodable(session: Session):
    """Ridge regression on sqrt counts (50 ms bins, 250 ms of history), trained on 80 %, tested on 20 %."""
    bin_s, history = 0.05, 5
    x = _binned_sqrt_counts(session, bin_s)
    y = session.behavior.reshape(len(x), -1, 2).mean(axis=1)
    feats = np.concatenate([x[history - 1 - k: len(x) - k] for k in range(history)], axis=1)
    y = y[history - 1:]
    a = np.c_[feats, np.ones(len(feats))]
    n_train = int(0.8 * len(a))
    w = np.linalg.solve(a[:n_train].T @ a[:n_train] + np.eye(a.shape[1]), a[:n_train].T @ y[:n_train])
    pred, truth = a[n_train:] @ w, y[n_train:]
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert r2.min() > 0.5, r2


def test_generation_is_fast():
    t0 = time.perf_counter()
    generate_session(n_units=64, duration_s=300.0, seed=5)
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(n_units=0), "n_units"),
        (dict(n_units=2.5), "n_units"),
        (dict(duration_s=-1.0), "duration_s"),
        (dict(dt_s=0.0), "dt_s"),
        (dict(reach_duration_s=(1.0, 0.5)), "reach_duration_s"),
        (dict(refractory_s=-0.001), "refractory_s"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, field: str):
    with pytest.raises(ValueError, match=field):
        generate_session(**kwargs)

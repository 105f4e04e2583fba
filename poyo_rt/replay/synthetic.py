"""A synthetic motor-cortex session: tuned neurons driven by simulated center-out reaches.

Kinematics (metres, seconds). Trials repeat ``hold at centre -> reach out -> hold at target ->
reach back``; every out-reach picks one of 8 targets (45 deg apart, a few degrees of jitter,
``reach_distance_m`` +-5 %), each reach lasts ``reach_duration_s`` (uniform) with a minimum-jerk
(bell-shaped) speed profile, and a small smooth velocity noise is added throughout.

Neurons. Unit u fires as an inhomogeneous Poisson process with an absolute refractory period::

    rate_u(t) = baseline_u + gain_u * min(|v|/v_ref, 1.25) * (1 + cos(theta - pref_u)) / 2      [Hz]

evaluated on the velocity ``lag_u`` seconds later (cortex leads movement by 0..150 ms), where
``v = v(t + lag_u)``, ``theta`` its direction and ``v_ref`` the peak speed of the fastest nominal
reach. Baselines are 2-20 Hz and gains 30-60 Hz, so peaks reach ~40-80 Hz. Spikes are drawn in
continuous time by thinning (candidates at the unit's maximum rate, kept with probability
rate/max), then candidates closer than ``refractory_s`` to the previous kept spike are removed,
in order, which makes a Poisson process with dead time.

Everything is vectorised numpy and deterministic for a seed.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from poyo_rt.replay.session import Session

log = logging.getLogger(__name__)

__all__ = ["generate_session", "min_jerk_speed", "reach_velocity"]


def min_jerk_speed(phase: np.ndarray) -> np.ndarray:
    """Minimum-jerk speed profile for a unit distance and unit duration, at ``phase`` in [0, 1].

    ``30 s^2 - 60 s^3 + 30 s^4`` (peak 1.875 at s = 0.5, integral 1); 0 outside [0, 1].
    """
    s = np.asarray(phase, dtype=np.float64)
    out = 30.0 * s**2 - 60.0 * s**3 + 30.0 * s**4
    return np.where((s >= 0.0) & (s <= 1.0), out, 0.0)


def reach_velocity(
    times_s: np.ndarray, onsets_s: np.ndarray, durations_s: np.ndarray, displacements_m: np.ndarray
) -> np.ndarray:
    """Velocity (len(times_s), 2) m/s of non-overlapping minimum-jerk reaches.

    Reach k starts at ``onsets_s[k]`` (sorted), lasts ``durations_s[k]`` and moves by
    ``displacements_m[k]`` (2,) metres.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    k = np.searchsorted(onsets_s, times_s, side="right") - 1  # reach that started last
    valid = k >= 0
    kk = np.where(valid, k, 0)
    phase = (times_s - onsets_s[kk]) / durations_s[kk]
    speed = np.where(valid, min_jerk_speed(phase), 0.0) / durations_s[kk]  # 1/s
    return speed[:, None] * displacements_m[kk]  # (T, 2) m/s


def _smooth_noise(rng: np.random.Generator, times_s: np.ndarray, std: float, knot_s: float = 0.05) -> np.ndarray:
    """Smooth 2-D noise (len(times_s), 2): Gaussian knots every ``knot_s`` seconds, linearly interpolated."""
    n_knots = int(math.ceil(times_s[-1] / knot_s)) + 2
    knots = rng.normal(0.0, std, size=(n_knots, 2))
    knot_t = np.arange(n_knots) * knot_s
    return np.stack([np.interp(times_s, knot_t, knots[:, d]) for d in range(2)], axis=1)


def _remove_refractory(times_s: np.ndarray, units: np.ndarray, refractory_s: float) -> np.ndarray:
    """Keep-mask of spikes sorted by (unit, time): drop those within ``refractory_s`` of the previous kept one."""
    keep = np.ones(times_s.size, dtype=bool)
    idx = np.arange(times_s.size)
    while idx.size > 1:
        t, u = times_s[idx], units[idx]
        bad = (u[1:] == u[:-1]) & (np.diff(t) < refractory_s)  # bad[i]: spike i+1 too close to spike i
        if not bad.any():
            break
        first = bad & ~np.concatenate([[False], bad[:-1]])  # first violation of each run (its predecessor is kept)
        keep[idx[1:][first]] = False
        idx = idx[keep[idx]]
    return keep


def generate_session(
    *,
    n_units: int = 64,
    duration_s: float = 300.0,
    seed: int = 0,
    dt_s: float = 0.01,
    session_id: str | None = None,
    reach_distance_m: float = 0.10,
    reach_duration_s: tuple[float, float] = (0.5, 1.0),
    hold_s: tuple[float, float] = (0.2, 0.6),
    velocity_noise_m_s: float = 0.005,
    baseline_hz: tuple[float, float] = (2.0, 20.0),
    gain_hz: tuple[float, float] = (30.0, 60.0),
    max_lag_s: float = 0.15,
    refractory_s: float = 0.002,
) -> Session:
    """Simulate ``duration_s`` seconds of ``n_units`` velocity-tuned neurons during center-out reaching.

    Args:
        n_units: number of units (ids ``syn-u000``, ``syn-u001``, ...).
        duration_s: session length, seconds; spikes and behaviour lie in ``[0, duration_s)``.
        seed: seed of the one ``numpy.random.Generator`` used (same seed, same session).
        dt_s: behaviour sampling step, seconds (0.01 = 100 Hz); rates are interpolated on this grid.
        session_id: defaults to ``f"synthetic-seed{seed}"``.
        reach_distance_m, reach_duration_s, hold_s: kinematics (metres; (min, max) seconds, uniform).
        velocity_noise_m_s: std of the smooth velocity noise, m/s.
        baseline_hz, gain_hz: (min, max) of the units' baseline and modulation depth, Hz (uniform).
        max_lag_s: units lead the movement by a lag uniform in [0, max_lag_s] seconds.
        refractory_s: absolute refractory period, seconds.

    Returns:
        A :class:`Session` with behaviour ``(M, 2)`` float32 hand velocity in m/s, labels ``vx, vy``,
        ``M = floor(duration_s / dt_s)`` samples at ``arange(M) * dt_s``; ``metadata`` holds the
        generator parameters and each unit's ``preferred_direction_rad``, ``baseline_hz``, ``gain_hz``, ``lag_s``.
    """
    _check_positive("n_units", n_units, integer=True)
    _check_positive("duration_s", duration_s)
    _check_positive("dt_s", dt_s)
    _check_positive("reach_distance_m", reach_distance_m)
    for name, rng_pair in (("reach_duration_s", reach_duration_s), ("hold_s", hold_s),
                           ("baseline_hz", baseline_hz), ("gain_hz", gain_hz)):
        lo, hi = (float(x) for x in rng_pair)
        if not (0 <= lo <= hi) or (name == "reach_duration_s" and lo <= 0):
            raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {rng_pair!r}")
    if not 0 <= max_lag_s < 10:
        raise ValueError(f"max_lag_s must be in [0, 10), got {max_lag_s}")
    if not 0 <= refractory_s < 0.1:
        raise ValueError(f"refractory_s must be in [0, 0.1), got {refractory_s}")
    if velocity_noise_m_s < 0:
        raise ValueError(f"velocity_noise_m_s must be >= 0, got {velocity_noise_m_s}")
    duration_s, dt_s = float(duration_s), float(dt_s)
    rng = np.random.default_rng(seed)

    # --- reach schedule: cycles of [hold centre, out, hold target, back] -----------------
    sim_end_s = duration_s + max_lag_s + 2 * dt_s
    min_cycle = 2 * reach_duration_s[0] + 2 * max(hold_s[0], 1e-3)
    n_cycles = int(math.ceil(sim_end_s / min_cycle)) + 1
    holds = rng.uniform(*hold_s, size=(n_cycles, 2))
    moves = rng.uniform(*reach_duration_s, size=(n_cycles, 2))
    targets = rng.integers(0, 8, size=n_cycles)
    angles = targets * (np.pi / 4) + rng.normal(0.0, np.deg2rad(3.0), size=n_cycles)
    dists = reach_distance_m * (1.0 + 0.05 * rng.standard_normal(n_cycles))
    out = np.stack([np.cos(angles), np.sin(angles)], axis=1) * dists[:, None]  # (C, 2) m
    # per cycle: hold0, out, hold1, back -> onsets of the two movements
    seg = np.stack([holds[:, 0], moves[:, 0], holds[:, 1], moves[:, 1]], axis=1).reshape(-1)
    seg_start = np.concatenate([[0.0], np.cumsum(seg)[:-1]]).reshape(n_cycles, 4)
    onsets = seg_start[:, [1, 3]].reshape(-1)  # (2C,) out, back, out, back, ...
    durations = moves.reshape(-1)
    displacements = np.stack([out, -out], axis=1).reshape(-1, 2)

    # --- kinematics on the dt grid (covers lags) ----------------------------------------
    n_grid = int(math.ceil(sim_end_s / dt_s)) + 1
    grid_t = np.arange(n_grid) * dt_s
    vel = reach_velocity(grid_t, onsets, durations, displacements)
    if velocity_noise_m_s > 0:
        vel = vel + _smooth_noise(rng, grid_t, velocity_noise_m_s)

    # --- units ----------------------------------------------------------------------------
    pref = rng.uniform(0.0, 2 * np.pi, size=n_units)
    baseline = rng.uniform(*baseline_hz, size=n_units)
    gain = rng.uniform(*gain_hz, size=n_units)
    lag = rng.uniform(0.0, max_lag_s, size=n_units)
    v_ref = 1.875 * reach_distance_m / reach_duration_s[0]  # peak speed of the fastest nominal reach, m/s

    n_beh = int(math.floor(duration_s / dt_s + 1e-9))
    rate_t = np.arange(n_beh + 1) * dt_s  # rate grid (one extra point for interpolation at the end)
    rates = np.empty((n_beh + 1, n_units))  # (T+1, U) Hz
    for u in range(n_units):  # U calls of np.interp; the rest is vectorised
        vx = np.interp(rate_t + lag[u], grid_t, vel[:, 0])
        vy = np.interp(rate_t + lag[u], grid_t, vel[:, 1])
        speed = np.hypot(vx, vy)
        cos_d = np.where(speed > 0, (vx * np.cos(pref[u]) + vy * np.sin(pref[u])) / np.maximum(speed, 1e-12), 0.0)
        rates[:, u] = baseline[u] + gain[u] * np.minimum(speed / v_ref, 1.25) * (1.0 + cos_d) / 2.0

    # --- thinning: candidates at each unit's max rate, kept with prob rate/max ---------------
    r_max = rates.max(axis=0)  # (U,)
    n_cand = rng.poisson(r_max * duration_s)
    cand_u = np.repeat(np.arange(n_units, dtype=np.int64), n_cand)
    cand_t = rng.uniform(0.0, duration_s, size=cand_u.size)
    order = np.lexsort((cand_t, cand_u))  # by unit, then time
    cand_t, cand_u = cand_t[order], cand_u[order]
    pos = cand_t / dt_s
    i = np.minimum(pos.astype(np.int64), n_beh - 1)
    w = pos - i
    r = (1.0 - w) * rates[i, cand_u] + w * rates[i + 1, cand_u]
    accept = rng.random(cand_u.size) * r_max[cand_u] < r
    cand_t, cand_u = cand_t[accept], cand_u[accept]
    if refractory_s > 0:
        keep = _remove_refractory(cand_t, cand_u, refractory_s)
        cand_t, cand_u = cand_t[keep], cand_u[keep]
    order = np.argsort(cand_t, kind="stable")
    spike_t, spike_u = cand_t[order], cand_u[order]

    beh_t = rate_t[:n_beh]
    beh = np.stack([np.interp(beh_t, grid_t, vel[:, d]) for d in range(2)], axis=1).astype(np.float32)
    n_reaches = int(np.count_nonzero(onsets < duration_s))
    width = max(3, len(str(n_units - 1)))
    metadata = {
        "format": "synthetic",
        "generator": "poyo_rt.replay.synthetic.generate_session",
        "seed": int(seed) if isinstance(seed, (int, np.integer)) else str(seed),
        "dt_s": dt_s,
        "duration_s": duration_s,
        "behavior_units": "m/s",
        "reach_distance_m": float(reach_distance_m),
        "reach_duration_s": [float(x) for x in reach_duration_s],
        "hold_s": [float(x) for x in hold_s],
        "velocity_noise_m_s": float(velocity_noise_m_s),
        "refractory_s": float(refractory_s),
        "n_reaches": n_reaches,
        "units": {
            "preferred_direction_rad": pref.tolist(),
            "baseline_hz": baseline.tolist(),
            "gain_hz": gain.tolist(),
            "lag_s": lag.tolist(),
        },
    }
    session = Session(
        session_id=session_id or f"synthetic-seed{seed}",
        unit_ids=[f"syn-u{u:0{width}d}" for u in range(n_units)],
        spike_times_s=spike_t,
        spike_units=spike_u,
        behavior_times_s=beh_t,
        behavior=beh,
        behavior_labels=["vx", "vy"],
        metadata=metadata,
    )
    log.debug("generated %r (%d reaches)", session, n_reaches)
    return session


def _check_positive(name: str, value: object, integer: bool = False) -> None:
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")

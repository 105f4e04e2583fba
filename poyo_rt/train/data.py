"""Training data: window sampling, augmentation and behaviour normalisation.

Pure numpy functions do the maths (window placement, unit dropout, re-placing spikes in their bins,
z-scoring, loss weights); :class:`WindowSource` is the thin state around one session's training time
range (its current spike positions and a normalised copy of its behaviour) that turns a window start
into one :meth:`POYO.tokenize` sample.

Times are seconds in the session's own clock unless a name says ``_rel`` (relative to a window start).
Shapes: N spikes, U units, M behaviour samples, D behaviour channels, K windows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import numpy as np

from poyo_rt.registry import ModalitySpec
from poyo_rt.replay.session import Session

log = logging.getLogger(__name__)

__all__ = [
    "Normalization",
    "fit_normalization",
    "normalize",
    "denormalize",
    "epoch_windows",
    "end_aligned_windows",
    "shard",
    "sample_keep_count",
    "unit_dropout",
    "bin_layout",
    "redraw_in_bins",
    "end_ramp_weights",
    "readout_names",
    "WindowSource",
    "WindowSampler",
]


# --- behaviour normalisation -----------------------------------------------------------------
@dataclass(frozen=True)
class Normalization:
    """Per-channel z-scoring of the behaviour: ``z = (x - mean) / std`` (``mean``, ``std`` in behaviour units)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalization mean ({len(self.mean)}) and std ({len(self.std)}) lengths differ")
        for i, s in enumerate(self.std):
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"Normalization std[{i}] must be finite and > 0, got {s}")
        for i, m in enumerate(self.mean):
            if not math.isfinite(m):
                raise ValueError(f"Normalization mean[{i}] must be finite, got {m}")

    def to_dict(self) -> dict[str, list[float]]:
        """Plain data for a checkpoint: ``{"mean": [...], "std": [...]}``."""
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        """Inverse of :meth:`to_dict`; names the missing key."""
        for key in ("mean", "std"):
            if key not in d:
                raise ValueError(f"behaviour normalisation needs a {key!r} list, got keys {sorted(d)}")
        return cls(tuple(float(x) for x in d["mean"]), tuple(float(x) for x in d["std"]))

    @classmethod
    def identity(cls, dim: int) -> "Normalization":
        return cls((0.0,) * dim, (1.0,) * dim)


def fit_normalization(values: np.ndarray | Sequence[np.ndarray], min_std: float = 1e-8) -> Normalization:
    """Mean and std per channel of ``values`` (M, D) (or a list of such arrays, pooled).

    A channel whose std is below ``min_std`` (e.g. a constant) gets std 1, so it passes through centred.
    """
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    stacked = np.concatenate([np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in arrays], axis=0)
    if stacked.shape[0] < 2:
        raise ValueError(f"need at least 2 behaviour samples to fit a normalisation, got {stacked.shape[0]}")
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    std = np.where(std < min_std, 1.0, std)
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


def normalize(values: np.ndarray, norm: Normalization) -> np.ndarray:
    """``(values - mean) / std`` for ``values`` (..., D) in behaviour units -> z units (same dtype as float32+)."""
    values = np.asarray(values)
    return ((values - np.asarray(norm.mean)) / np.asarray(norm.std)).astype(np.result_type(values, np.float32))


def denormalize(values: np.ndarray, norm: Normalization) -> np.ndarray:
    """Inverse of :func:`normalize`: z units (..., D) -> behaviour units."""
    values = np.asarray(values)
    return (values * np.asarray(norm.std) + np.asarray(norm.mean)).astype(np.result_type(values, np.float32))


# --- window placement ---------------------------------------------------------------------------
def epoch_windows(
    intervals: Sequence[tuple[float, float]], window_s: float, rng: np.random.Generator
) -> np.ndarray:
    """One epoch of windows covering each interval, shuffled: ``(K, 2)`` float64 rows ``(interval index, t0_s)``.

    Interval ``[a, b)`` is tiled by consecutive windows ``[t0, t0 + window_s)`` on a grid shifted by a random
    ``u`` in ``[0, window_s)`` (``t0 = a - u + k window_s``); the partial windows at both ends are moved inside
    (``t0`` clamped to ``[a, b - window_s]``). So every window lies inside its interval, every instant of the
    interval is in at least one window of every epoch, and windows overlap only at the two ends. An interval
    shorter than ``window_s`` contributes nothing.
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    rows = []
    for i, (a, b) in enumerate(intervals):
        a, b = float(a), float(b)
        if b - a < window_s:
            continue
        u = rng.uniform(0.0, window_s)
        t0 = a - u + np.arange(int(math.ceil((b - a + u) / window_s))) * window_s
        t0 = np.unique(np.clip(t0, a, b - window_s))
        rows.append(np.stack([np.full(t0.size, float(i)), t0], axis=1))
    if not rows:
        raise ValueError(f"no interval is at least window_s={window_s} s long: {list(intervals)}")
    out = np.concatenate(rows, axis=0)
    return out[rng.permutation(len(out))]


def end_aligned_windows(
    behavior_times_s: Sequence[np.ndarray], intervals: Sequence[tuple[float, float]], window_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One epoch of windows that END at a behaviour sample, shuffled: ``(K, 2)`` rows ``(interval index, t0_s)``.

    For interval ``[a, b)`` with behaviour times ``behavior_times_s[i]``, every sample ``t`` with
    ``a + window_s <= t < b`` gives the window ``[t - window_s, t)`` (the causal decoder's view of ``t``).
    """
    rows = []
    for i, ((a, b), times) in enumerate(zip(intervals, behavior_times_s)):
        times = np.asarray(times, dtype=np.float64)
        ends = times[(times >= float(a) + window_s) & (times < float(b))]
        rows.append(np.stack([np.full(ends.size, float(i)), ends - window_s], axis=1))
    out = np.concatenate(rows, axis=0) if rows else np.zeros((0, 2))
    if len(out) == 0:
        raise ValueError(f"no behaviour sample has window_s={window_s} s of history inside {list(intervals)}")
    return out[rng.permutation(len(out))]


def shard(items: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rows ``rank, rank + world_size, ...`` of ``items`` (as ``DistributedSampler`` shards a shuffled epoch)."""
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    return items[rank::world_size]


# --- augmentation ---------------------------------------------------------------------------------
def sample_keep_count(
    n_units: int, rng: np.random.Generator, *, min_frac: float = 0.2, mode_frac: float = 0.6,
    max_frac: float = 1.75, peak: float = 4.0,
) -> int:
    """How many of ``n_units`` units a window keeps (torch_brain's ``TriangleDistribution``, scaled to U).

    The density over ``x`` in ``[min_frac U, max_frac U]`` rises linearly from 1 to ``peak`` at ``mode_frac U``
    and falls back to 1 at ``max_frac U``; a draw at or above U keeps every unit. torch_brain's defaults
    (20, 100, 300 units) are these fractions for U ~ 171.
    """
    if n_units < 1:
        raise ValueError(f"n_units must be >= 1, got {n_units}")
    if not 0 < min_frac <= mode_frac <= max_frac:
        raise ValueError(f"need 0 < min_frac <= mode_frac <= max_frac, got {min_frac}, {mode_frac}, {max_frac}")
    lo = max(1, int(math.ceil(min_frac * n_units)))
    hi = max(lo, int(math.floor(max_frac * n_units)))
    mode = min(max(mode_frac * n_units, lo), hi)
    x = np.arange(lo, hi + 1, dtype=np.float64)
    left = 1.0 + (peak - 1.0) * (x - lo) / max(mode - lo, 1e-9)
    right = peak - (peak - 1.0) * (x - mode) / max(hi - mode, 1e-9)
    density = np.where(x <= mode, left, right).clip(min=1e-12)
    k = int(rng.choice(x, p=density / density.sum()))
    return min(k, n_units)


def unit_dropout(
    spike_units: np.ndarray, n_units: int, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drop whole units: keep spikes of units ``keep`` (sorted local indices) and renumber them 0..len(keep)-1.

    Returns ``(spike_mask (N,) bool, new_spike_units (n_kept,) int64)``; the caller keeps ``unit_ids[keep]``,
    so dropped units lose their spikes AND their start/end tokens (as torch_brain's ``UnitDropout``).
    """
    keep = np.asarray(keep, dtype=np.int64)
    relabel = np.full(n_units, -1, dtype=np.int64)
    relabel[keep] = np.arange(keep.size)
    new = relabel[np.asarray(spike_units, dtype=np.int64)]
    mask = new >= 0
    return mask, new[mask]


def bin_layout(session: Session) -> tuple[np.ndarray, float] | None:
    """``(bin_centres_s (M,), bin_width_s)`` of a session read from binned counts, else None.

    Known when the reader placed spikes uniformly in bins (``metadata["spike_placement"] == "uniform"`` with
    ``bin_width_s``) and the behaviour is sampled at the bin centres (MAT/NPZ readers), i.e. consecutive
    behaviour times are one bin width apart (within 5 %: files store rounded times).
    """
    meta = session.metadata
    width = meta.get("bin_width_s")
    if meta.get("spike_placement") != "uniform" or not width or session.behavior_times_s.size < 2:
        return None
    centres = session.behavior_times_s
    if np.abs(np.diff(centres) - width).max() > 0.05 * width:
        return None
    return centres.copy(), float(width)


def redraw_in_bins(
    spike_times_s: np.ndarray, spike_units: np.ndarray, bin_centres_s: np.ndarray, bin_width_s: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-place every spike uniformly inside its bin ``[c - w/2, c + w/2)``, ``c`` the nearest bin centre.

    ``bin_centres_s`` (M,) sorted. Returns ``(times_s (N,), units (N,))`` sorted by time. A spike keeps its
    bin, so binned counts are unchanged (up to spikes in the sub-millisecond overlaps of bins whose stored
    centres were rounded, which go to the nearer centre).
    """
    t = np.asarray(spike_times_s, dtype=np.float64)
    c = np.asarray(bin_centres_s, dtype=np.float64)
    k = np.clip(np.searchsorted(c, t), 1, len(c) - 1)
    k = np.where(np.abs(t - c[k - 1]) <= np.abs(c[k] - t), k - 1, k)  # nearest centre
    lower = c[k] - bin_width_s / 2
    times = lower + rng.random(k.size) * bin_width_s
    times = np.minimum(times, np.nextafter(lower + bin_width_s, -np.inf))
    order = np.argsort(times, kind="stable")
    return times[order], np.asarray(spike_units, dtype=np.int64)[order]


# --- loss weights ----------------------------------------------------------------------------------
def end_ramp_weights(t_rel_s: np.ndarray, window_s: float, end_weight: float) -> np.ndarray:
    """Loss weight of targets at window-relative times ``t_rel_s`` (n,): linear from 1 at 0 to ``end_weight``
    at ``window_s``, then scaled to mean 1 over the window (so the loss scale does not depend on it)."""
    if not end_weight > 0:
        raise ValueError(f"end_weight must be > 0, got {end_weight}")
    ramp = 1.0 + (end_weight - 1.0) * np.clip(np.asarray(t_rel_s, dtype=np.float64) / window_s, 0.0, 1.0)
    return (ramp / ((1.0 + end_weight) / 2.0)).astype(np.float32)


def readout_names(spec: ModalitySpec) -> tuple[str, str]:
    """``(behavior_name, value_name)`` of a readout whose keys are ``<name>.timestamps`` / ``<name>.<value>``."""
    ts_parts, val_parts = spec.timestamp_key.split("."), spec.value_key.split(".")
    if len(ts_parts) != 2 or len(val_parts) != 2 or ts_parts[0] != val_parts[0] or ts_parts[1] != "timestamps":
        raise ValueError(
            f"readout keys must look like '<name>.timestamps' and '<name>.<value>', got "
            f"{spec.timestamp_key!r} and {spec.value_key!r}"
        )
    return val_parts[0], val_parts[1]


# --- one session's training time range ------------------------------------------------------------
class WindowSource:
    """Training windows of one session restricted to ``[t_start_s, t_end_s)``.

    Holds the current spike positions (redrawn in their bins by :meth:`redraw_spikes` when the session came
    from binned counts) and the behaviour z-scored by ``norm``. :meth:`sample` builds one tokenized window.
    """

    def __init__(self, session: Session, t_start_s: float, t_end_s: float, norm: Normalization,
                 spec: ModalitySpec):
        if not t_end_s > t_start_s:
            raise ValueError(f"training range of {session.session_id!r} is empty: [{t_start_s}, {t_end_s})")
        if session.behavior.shape[1] != len(norm.mean):
            raise ValueError(f"session {session.session_id!r} has {session.behavior.shape[1]} behaviour channels, "
                             f"the normalisation {len(norm.mean)}")
        if session.behavior.shape[1] != spec.dim:
            raise ValueError(f"session {session.session_id!r} has {session.behavior.shape[1]} behaviour channels, "
                             f"the readout needs {spec.dim}")
        self.session_id = session.session_id
        self.unit_ids = np.asarray(session.unit_ids, dtype=str)
        self.t_start_s, self.t_end_s = float(t_start_s), float(t_end_s)
        i0, i1 = np.searchsorted(session.spike_times_s, [self.t_start_s, self.t_end_s], side="left")
        self.spike_times_s = session.spike_times_s[i0:i1].copy()
        self.spike_units = session.spike_units[i0:i1].copy()
        b0, b1 = np.searchsorted(session.behavior_times_s, [self.t_start_s, self.t_end_s], side="left")
        self.behavior_times_s = session.behavior_times_s[b0:b1].copy()
        self.behavior_z = normalize(session.behavior[b0:b1], norm).astype(np.float32)  # (M, D)
        self.bins = bin_layout(session)
        self.behavior_name, self.value_name = readout_names(spec)

    @property
    def interval(self) -> tuple[float, float]:
        return self.t_start_s, self.t_end_s

    def redraw_spikes(self, rng: np.random.Generator) -> bool:
        """Re-place the spikes inside their bins; False (nothing done) when the source is not binned.

        Spikes are then clipped to the training range: a redraw never moves a spike out of it.
        """
        if self.bins is None:
            return False
        times, units = redraw_in_bins(self.spike_times_s, self.spike_units, *self.bins, rng)
        inside = (times >= self.t_start_s) & (times < self.t_end_s)
        self.spike_times_s, self.spike_units = times[inside], units[inside]
        return True

    def window_view(
        self, t0_s: float, window_s: float, *, rng: np.random.Generator | None = None, dropout: bool = False,
        end_query: bool = False,
    ) -> SimpleNamespace:
        """A temporaldata-like view of ``[t0_s, t0_s + window_s)`` for ``POYO.tokenize`` (times relative to t0).

        ``dropout`` drops a random subset of whole units (``rng`` needed). ``end_query`` puts the single target
        at the window end (relative time ``window_s``), the behaviour sample at ``t0_s + window_s``; otherwise the
        targets are every behaviour sample inside the window.
        """
        t1_s = t0_s + window_s
        s0, s1 = np.searchsorted(self.spike_times_s, [t0_s, t1_s], side="left")
        times_rel = self.spike_times_s[s0:s1] - t0_s
        units = self.spike_units[s0:s1]
        unit_ids = self.unit_ids
        if dropout:
            if rng is None:
                raise ValueError("unit dropout needs an rng")
            n = len(unit_ids)
            keep = np.sort(rng.permutation(n)[: sample_keep_count(n, rng)])
            mask, units = unit_dropout(units, n, keep)
            times_rel, unit_ids = times_rel[mask], unit_ids[keep]
        if end_query:
            j = int(np.searchsorted(self.behavior_times_s, t1_s - 1e-9, side="left"))
            j = min(j, len(self.behavior_times_s) - 1)
            beh_t = np.array([window_s], dtype=np.float64)
            beh = self.behavior_z[j : j + 1]
        else:
            b0, b1 = np.searchsorted(self.behavior_times_s, [t0_s, t1_s], side="left")
            beh_t, beh = self.behavior_times_s[b0:b1] - t0_s, self.behavior_z[b0:b1]
        behaviour = SimpleNamespace(timestamps=beh_t)
        setattr(behaviour, self.value_name, beh)
        view = SimpleNamespace(
            spikes=SimpleNamespace(timestamps=times_rel, unit_index=units),
            units=SimpleNamespace(id=unit_ids),
            session=SimpleNamespace(id=self.session_id),
            absolute_start=t0_s, start=0.0, end=window_s, config=None,
        )
        setattr(view, self.behavior_name, behaviour)
        return view

    def sample(self, model: Any, t0_s: float, *, window_s: float, rng: np.random.Generator, dropout: bool,
               end_query: bool, end_weight: float) -> dict:
        """One tokenized training window (``model.tokenize`` output), targets z-scored and loss-weighted."""
        data = self.window_view(t0_s, window_s, rng=rng, dropout=dropout, end_query=end_query)
        sample = model.tokenize(data)
        if not end_query and end_weight != 1.0:
            ts = getattr(data, self.behavior_name).timestamps
            sample["target_weights"].obj = end_ramp_weights(ts, window_s, end_weight)
        return sample


class WindowSampler:
    """Endless stream of window batches ``[(source index, t0_s), ...]`` for one rank.

    Every epoch is the same shuffled list on every rank (seeded by ``(seed, epoch)``), sharded by rank;
    ``on_epoch(epoch)`` runs before each epoch (the trainer redraws spike positions there).
    """

    def __init__(self, sources: Sequence[WindowSource], *, window_s: float, batch_size: int, seed: int,
                 end_aligned: bool, rank: int = 0, world_size: int = 1, on_epoch: Any = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sources = list(sources)
        self.window_s, self.batch_size, self.seed = window_s, batch_size, seed
        self.end_aligned, self.rank, self.world_size = end_aligned, rank, world_size
        self.on_epoch = on_epoch
        self.epoch = -1

    def epoch_items(self, epoch: int) -> np.ndarray:
        """This rank's ``(K_r, 2)`` windows of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        intervals = [s.interval for s in self.sources]
        if self.end_aligned:
            items = end_aligned_windows([s.behavior_times_s for s in self.sources], intervals, self.window_s, rng)
        else:
            items = epoch_windows(intervals, self.window_s, rng)
        return shard(items, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, float]]]:
        pending: list[tuple[int, float]] = []
        while True:
            self.epoch += 1
            if self.on_epoch is not None:
                self.on_epoch(self.epoch)
            items = self.epoch_items(self.epoch)
            if len(items) == 0:
                raise ValueError(f"rank {self.rank} got no training windows (world_size {self.world_size})")
            pending.extend((int(i), float(t0)) for i, t0 in items)
            while len(pending) >= self.batch_size:
                yield pending[: self.batch_size]
                pending = pending[self.batch_size :]

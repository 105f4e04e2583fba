"""One in-memory recorded session: spike events plus a behaviour time series.

Used by replay (played out over LSL), training and the demo. Times are seconds (float64) in the
session's own clock (for XDF that is the LSL clock; for NWB the file's reference time); a
:meth:`Session.slice` with ``relative=True`` shifts them so the slice starts at 0 and records the shift
in ``metadata["time_offset_s"]``.

Shapes: N spikes, U units, M behaviour samples, D behaviour channels.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Session", "NPZ_MARKER", "NPZ_VERSION", "sort_spikes"]

#: Key present in every NPZ written by :meth:`Session.to_npz` (its value is :data:`NPZ_VERSION`).
NPZ_MARKER = "poyo_rt_session_version"
NPZ_VERSION = 1
_NPZ_ARRAYS = ("spike_times_s", "spike_units", "behavior_times_s", "behavior")
_NPZ_STRINGS = ("session_id", "unit_ids", "behavior_labels", "metadata_json")


def sort_spikes(times_s: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spike times (N,) float64 and units (N,) int64 sorted by time (stable: ties keep their order)."""
    times_s = np.asarray(times_s, dtype=np.float64).reshape(-1)
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    order = np.argsort(times_s, kind="stable")
    return times_s[order], units[order]


def _plain_str(value: Any) -> Any:
    """``bytes`` and ``np.str_`` as plain ``str``; anything else unchanged (validation judges it)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value) if isinstance(value, str) else value


def _as_array(name: str, value: Any, dtype: type, ndim: int) -> np.ndarray:
    """Coerce ``value`` to ``dtype`` without changing its kind (no float -> int); raise naming ``name``."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    want = np.dtype(dtype)
    if arr.size == 0:
        return arr.astype(want)
    if want.kind == "i" and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if want.kind == "f" and arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=want)


def _check_sorted(name: str, times: np.ndarray) -> None:
    if not np.all(np.isfinite(times)):
        bad = int(np.flatnonzero(~np.isfinite(times))[0])
        raise ValueError(f"{name} must be finite, got {times[bad]} at index {bad}")
    if times.size > 1:
        steps = np.diff(times)
        if np.any(steps < 0):
            bad = int(np.flatnonzero(steps < 0)[0])
            raise ValueError(
                f"{name} must be sorted (non-decreasing), got {times[bad]!r} then {times[bad + 1]!r} at index {bad}"
            )


@dataclass(eq=False)
class Session:
    """A recorded (or simulated) session held in memory.

    Attributes:
        session_id: non-empty name of the session.
        unit_ids: U unique unit ids (str).
        spike_times_s: (N,) float64 spike times, seconds, sorted (ties allowed).
        spike_units: (N,) int64 index into ``unit_ids`` of each spike.
        behavior_times_s: (M,) float64 behaviour sample times, seconds, sorted.
        behavior: (M, D) float32 behaviour values (e.g. hand velocity); finite.
        behavior_labels: D channel labels (e.g. ``["vx", "vy"]``).
        metadata: JSON-serialisable facts about the source (format, path, seed, ...).

    Arrays are coerced to the dtypes above (an int kind is never made from floats); then
    :meth:`validate` runs and raises ``ValueError``/``TypeError`` naming the bad field.
    """

    session_id: str
    unit_ids: list[str]
    spike_times_s: np.ndarray
    spike_units: np.ndarray
    behavior_times_s: np.ndarray
    behavior: np.ndarray
    behavior_labels: list[str]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.unit_ids = [_plain_str(u) for u in list(self.unit_ids)]
        self.behavior_labels = [_plain_str(x) for x in list(self.behavior_labels)]
        self.spike_times_s = _as_array("spike_times_s", self.spike_times_s, np.float64, 1)
        self.spike_units = _as_array("spike_units", self.spike_units, np.int64, 1)
        self.behavior_times_s = _as_array("behavior_times_s", self.behavior_times_s, np.float64, 1)
        self.behavior = _as_array("behavior", self.behavior, np.float32, 2)
        if self.metadata is None:
            self.metadata = {}
        self.validate()

    # --- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field; raise ``ValueError`` (or ``TypeError``) naming the first bad one."""
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError(f"session_id must be a non-empty str, got {self.session_id!r}")
        for i, u in enumerate(self.unit_ids):
            if not isinstance(u, str) or not u:
                raise TypeError(f"unit_ids must be non-empty str, got {u!r} at index {i}")
        if len(set(self.unit_ids)) != len(self.unit_ids):
            dups = sorted(u for u, n in Counter(self.unit_ids).items() if n > 1)
            raise ValueError(f"unit_ids must be unique, duplicated: {dups[:10]}")
        for name in ("spike_times_s", "spike_units", "behavior_times_s", "behavior"):
            if not isinstance(getattr(self, name), np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(getattr(self, name)).__name__}")
        _check_sorted("spike_times_s", self.spike_times_s)
        if self.spike_units.shape != self.spike_times_s.shape:
            raise ValueError(
                f"spike_units must have the shape of spike_times_s {self.spike_times_s.shape}, "
                f"got {self.spike_units.shape}"
            )
        if self.spike_units.size:
            lo, hi = int(self.spike_units.min()), int(self.spike_units.max())
            if lo < 0 or hi >= len(self.unit_ids):
                bad = lo if lo < 0 else hi
                raise ValueError(f"spike_units must index unit_ids (0..{len(self.unit_ids) - 1}), got {bad}")
        _check_sorted("behavior_times_s", self.behavior_times_s)
        if self.behavior.shape[0] != self.behavior_times_s.shape[0]:
            raise ValueError(
                f"behavior must have one row per behavior_times_s sample ({self.behavior_times_s.shape[0]}), "
                f"got shape {self.behavior.shape}"
            )
        if not np.all(np.isfinite(self.behavior)):
            row = int(np.flatnonzero(~np.isfinite(self.behavior).all(axis=1))[0])
            raise ValueError(f"behavior must be finite, got {self.behavior[row].tolist()} at row {row}")
        if len(self.behavior_labels) != self.behavior.shape[1]:
            raise ValueError(
                f"behavior_labels must name the {self.behavior.shape[1]} behavior columns, got {self.behavior_labels!r}"
            )
        for i, lab in enumerate(self.behavior_labels):
            if not isinstance(lab, str):
                raise TypeError(f"behavior_labels must be str, got {lab!r} at index {i}")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(self.metadata).__name__}")

    # --- summary -------------------------------------------------------------------------
    @property
    def start_s(self) -> float:
        """Earliest spike or behaviour time, seconds (0.0 for an empty session)."""
        firsts = [a[0] for a in (self.spike_times_s, self.behavior_times_s) if a.size]
        return float(min(firsts)) if firsts else 0.0

    @property
    def end_s(self) -> float:
        """Latest spike or behaviour time, seconds (the last event, not a recording end)."""
        lasts = [a[-1] for a in (self.spike_times_s, self.behavior_times_s) if a.size]
        return float(max(lasts)) if lasts else 0.0

    @property
    def duration_s(self) -> float:
        """``end_s - start_s``, seconds."""
        return self.end_s - self.start_s

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    @property
    def n_spikes(self) -> int:
        return int(self.spike_times_s.size)

    def __repr__(self) -> str:
        return (
            f"Session({self.session_id!r}, units={self.n_units}, spikes={self.n_spikes}, "
            f"behavior={self.behavior.shape} {self.behavior_labels}, {self.start_s:.3f}..{self.end_s:.3f} s)"
        )

    # --- time selection ------------------------------------------------------------------
    def _spike_range(self, t0_s: float, t1_s: float) -> tuple[int, int]:
        i0 = int(np.searchsorted(self.spike_times_s, t0_s, side="left"))
        i1 = int(np.searchsorted(self.spike_times_s, t1_s, side="left"))
        return i0, max(i0, i1)

    def _behavior_range(self, t0_s: float, t1_s: float) -> tuple[int, int]:
        i0 = int(np.searchsorted(self.behavior_times_s, t0_s, side="left"))
        i1 = int(np.searchsorted(self.behavior_times_s, t1_s, side="left"))
        return i0, max(i0, i1)

    def slice(self, t0_s: float, t1_s: float, relative: bool = False) -> "Session":
        """Spikes and behaviour with ``t0_s <= t < t1_s`` (seconds) as a new Session (arrays copied).

        ``relative=True`` shifts times so ``t0_s`` becomes 0 and adds the shift to
        ``metadata["time_offset_s"]`` (absolute time = relative time + time_offset_s).
        Unit ids are kept whole, also units without spikes in the slice.
        """
        t0_s, t1_s = float(t0_s), float(t1_s)
        if not (np.isfinite(t0_s) and np.isfinite(t1_s)) or t1_s < t0_s:
            raise ValueError(f"slice needs finite t0_s <= t1_s, got t0_s={t0_s}, t1_s={t1_s}")
        s0, s1 = self._spike_range(t0_s, t1_s)
        b0, b1 = self._behavior_range(t0_s, t1_s)
        shift = t0_s if relative else 0.0
        metadata = copy.deepcopy(self.metadata)
        if relative:
            metadata["time_offset_s"] = float(self.metadata.get("time_offset_s", 0.0)) + t0_s
        return Session(
            session_id=self.session_id,
            unit_ids=list(self.unit_ids),
            spike_times_s=self.spike_times_s[s0:s1] - shift,
            spike_units=self.spike_units[s0:s1].copy(),
            behavior_times_s=self.behavior_times_s[b0:b1] - shift,
            behavior=self.behavior[b0:b1].copy(),
            behavior_labels=list(self.behavior_labels),
            metadata=metadata,
        )

    def split(self, fraction: float) -> tuple["Session", "Session"]:
        """Split by time at ``start_s + fraction * duration_s`` into (first, second), absolute times kept.

        The first holds ``[start_s, t_split)``, the second ``[t_split, end_s]`` (the last event included).
        """
        fraction = float(fraction)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        t_split = self.start_s + fraction * self.duration_s
        after_end = float(np.nextafter(self.end_s, np.inf))
        return self.slice(self.start_s, t_split), self.slice(t_split, after_end)

    def window(self, t_end_s: float, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Spikes of ``[t_end_s - window_s, t_end_s)`` as ``(times_rel (n,) float64, units (n,) int64)``.

        ``times_rel`` are seconds relative to the window start (``t_end_s - window_s``), in
        ``[0, window_s)``, as POYO's tokenizer expects. Arrays are fresh (not views).
        """
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        t0 = float(t_end_s) - float(window_s)
        i0, i1 = self._spike_range(t0, float(t_end_s))
        return self.spike_times_s[i0:i1] - t0, self.spike_units[i0:i1].copy()

    def temporal_view(
        self, t0_s: float, t1_s: float, *, behavior_name: str = "hand", value_name: str = "vel"
    ) -> SimpleNamespace:
        """A torch_brain/temporaldata-like view of ``[t0_s, t1_s)`` for :meth:`poyo_rt.model.POYO.tokenize`.

        Attributes (times in seconds relative to ``t0_s``): ``spikes.timestamps`` (n,),
        ``spikes.unit_index`` (n,), ``units.id`` (U,) str array, ``session.id``,
        ``<behavior_name>.timestamps`` (m,) and ``<behavior_name>.<value_name>`` (m, D) float32
        (default ``hand.timestamps`` / ``hand.vel``, the ``hand_velocity_2d`` modality),
        ``absolute_start`` (= ``t0_s``), ``start`` / ``end`` (0 and ``t1_s - t0_s``), ``config`` None.
        """
        t0_s, t1_s = float(t0_s), float(t1_s)
        if not t1_s > t0_s:
            raise ValueError(f"temporal_view needs t0_s < t1_s, got t0_s={t0_s}, t1_s={t1_s}")
        for name, value in (("behavior_name", behavior_name), ("value_name", value_name)):
            if not isinstance(value, str) or not value.isidentifier() or value in ("spikes", "units", "session"):
                raise ValueError(f"{name} must be an identifier other than spikes/units/session, got {value!r}")
        s0, s1 = self._spike_range(t0_s, t1_s)
        b0, b1 = self._behavior_range(t0_s, t1_s)
        behaviour = SimpleNamespace(timestamps=self.behavior_times_s[b0:b1] - t0_s)
        setattr(behaviour, value_name, self.behavior[b0:b1].copy())
        view = SimpleNamespace(
            spikes=SimpleNamespace(
                timestamps=self.spike_times_s[s0:s1] - t0_s, unit_index=self.spike_units[s0:s1].copy()
            ),
            units=SimpleNamespace(id=np.asarray(self.unit_ids, dtype=str)),
            session=SimpleNamespace(id=self.session_id),
            absolute_start=t0_s,
            start=0.0,
            end=t1_s - t0_s,
            config=None,
        )
        setattr(view, behavior_name, behaviour)
        return view

    # --- native NPZ ----------------------------------------------------------------------
    def to_npz(self, path: str | Path, *, compress: bool = True) -> Path:
        """Write the session as a poyo-rt NPZ (plain arrays + JSON metadata; loads with ``allow_pickle=False``).

        Returns the path written (numpy appends ``.npz`` when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        try:
            metadata_json = json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-serialisable to write an NPZ: {exc}") from exc
        arrays = {
            NPZ_MARKER: np.array(NPZ_VERSION, dtype=np.int64),
            "session_id": np.array(self.session_id, dtype=str),
            "unit_ids": np.array(self.unit_ids, dtype=str).reshape(-1),
            "behavior_labels": np.array(self.behavior_labels, dtype=str).reshape(-1),
            "metadata_json": np.array(metadata_json, dtype=str),
            "spike_times_s": self.spike_times_s,
            "spike_units": self.spike_units,
            "behavior_times_s": self.behavior_times_s,
            "behavior": self.behavior,
        }
        (np.savez_compressed if compress else np.savez)(path, **arrays)
        log.debug("wrote %r to %s", self, path)
        return path

    @classmethod
    def from_npz(cls, path: str | Path) -> "Session":
        """Read an NPZ written by :meth:`to_npz` (``allow_pickle=False``).

        Raises ``ValueError`` when the file lacks the poyo-rt marker or a key, or has a newer version.
        """
        with np.load(Path(path), allow_pickle=False) as npz:
            return cls._from_npz_mapping(npz, str(path))

    @classmethod
    def _from_npz_mapping(cls, npz: Any, where: str) -> "Session":
        keys = set(npz.files)
        if NPZ_MARKER not in keys:
            raise ValueError(f"{where}: not a poyo-rt session NPZ (no {NPZ_MARKER!r} key; keys: {sorted(keys)})")
        version = int(npz[NPZ_MARKER])
        if version > NPZ_VERSION:
            raise ValueError(f"{where}: {NPZ_MARKER}={version} is newer than this poyo-rt reads ({NPZ_VERSION})")
        missing = [k for k in _NPZ_ARRAYS + _NPZ_STRINGS if k not in keys]
        if missing:
            raise ValueError(f"{where}: poyo-rt session NPZ lacks keys {missing}")
        try:
            metadata = json.loads(str(npz["metadata_json"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: metadata_json is not valid JSON: {exc}") from exc
        behavior = npz["behavior"]
        return cls(
            session_id=str(npz["session_id"]),
            unit_ids=[str(u) for u in npz["unit_ids"].tolist()],
            spike_times_s=npz["spike_times_s"],
            spike_units=npz["spike_units"],
            behavior_times_s=npz["behavior_times_s"],
            behavior=behavior,
            behavior_labels=[str(x) for x in npz["behavior_labels"].tolist()],
            metadata=metadata,
        )

"""Read recorded sessions into a :class:`~poyo_rt.replay.session.Session`.

:func:`read_session` picks the reader from the file's suffix and checks the file's first bytes
agree (a ``.xdf`` that is not XDF is a :class:`SessionFormatError`, not a confusing crash later);
an unknown suffix is resolved from the content alone.

============  =====================================================================  =============
format        what is read                                                           reader
============  =====================================================================  =============
``mat``       MATLAB v5/v7 (scipy) or v7.3 (h5py) of binned counts: ``time`` (T,)    :func:`read_binned`
              bin centres s, ``spikes`` (U, T) counts, ``handVel`` (D, T)
``npz``       the same binned keys, or a poyo-rt native NPZ (:meth:`Session.to_npz`)  :func:`read_binned`
``nwb``       units table ``spike_times`` + one behaviour ``TimeSeries`` (pynwb)      :func:`read_nwb`
``xdf``       a spike stream (events or counts) + a behaviour stream (pyxdf)          :func:`read_xdf`
``temporaldata``  torch_brain/temporaldata ``Data`` HDF5 (h5py; no torch_brain needed)   :func:`read_temporaldata`
============  =====================================================================  =============

Binned counts only locate spikes to their bin: each spike is placed uniformly at random inside
``[centre - width/2, centre + width/2)`` by a ``numpy.random.default_rng(seed)`` (default seed 0)
drawn in (unit, bin) order, so the same file and seed give the same times
(:func:`spikes_from_binned_counts`; ``placement="center"`` puts them at the centre instead).

Times stay in the source's clock (XDF: the recorder's LSL clock after clock-offset correction;
NWB: seconds from the session's reference time). Optional dependencies are imported on use:
scipy (MAT v5), h5py (MAT v7.3, NWB, temporaldata), pynwb (NWB), pyxdf (XDF).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from poyo_rt.errors import PoyoRtError
from poyo_rt.replay.session import NPZ_MARKER, Session, sort_spikes

log = logging.getLogger(__name__)

__all__ = [
    "SessionFormatError",
    "FORMATS",
    "detect_format",
    "read_session",
    "parse_reader_options",
    "read_binned",
    "read_nwb",
    "read_xdf",
    "read_temporaldata",
    "spikes_from_binned_counts",
]

FORMATS = ("mat", "npz", "nwb", "xdf", "temporaldata")

_SUFFIX_FORMAT = {".mat": "mat", ".npz": "npz", ".nwb": "nwb", ".xdf": "xdf", ".xdfz": "xdf", ".h5": "hdf5",
                  ".hdf5": "hdf5"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PREFERRED_TEMPORALDATA_KEYS = ("hand.vel", "cursor.vel", "behavior.hand_vel", "finger.vel")


class SessionFormatError(PoyoRtError, ValueError):
    """A file is not the session format it claims to be, or lacks what a session needs."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


def _optional(module: str, package: str, what: str) -> Any:
    """Import an optional dependency, or raise ImportError saying which package reads ``what``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"reading {what} needs the {package!r} package: pip install {package}") from exc


# --- dispatch ------------------------------------------------------------------------------
def _sniff(path: Path) -> str | None:
    """Format from the first bytes: mat, npz, xdf, nwb, temporaldata, hdf5 (other HDF5) or None."""
    with open(path, "rb") as f:
        head = f.read(1024 + 8)
    if head.startswith(b"XDF:"):
        return "xdf"
    if head.startswith(b"\x1f\x8b") and path.suffix == ".xdfz":
        return "xdf"
    if head.startswith(b"MATLAB"):
        return "mat"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if any(head[off:off + 8] == _HDF5_MAGIC for off in (0, 512, 1024)):
        return _sniff_hdf5(path)
    return None


def _sniff_hdf5(path: Path) -> str:
    h5py = _optional("h5py", "h5py", "HDF5 files (MAT v7.3, NWB, temporaldata)")

    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if "nwb_version" in attrs or "nwb_version" in f or _attr_str(attrs.get("namespace")) == "core":
                return "nwb"
            if _attr_str(attrs.get("object")) == "Data":
                return "temporaldata"
    except OSError:
        return "hdf5"
    return "hdf5"


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        return _attr_str(value.reshape(-1)[0])
    return str(value)


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (one of :data:`FORMATS`), from its suffix checked against its content.

    Raises :class:`SessionFormatError` when the content is not what the suffix claims, or neither
    tells a supported format; ``FileNotFoundError`` when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"session file not found: {path}")
    found = _sniff(path)
    claimed = _SUFFIX_FORMAT.get(path.suffix.lower())
    if claimed is None:
        if found in FORMATS:
            return found
        raise SessionFormatError(path, f"unknown session format (suffix {path.suffix!r}, content {_head(path)!r}); "
                                       f"supported: {', '.join(FORMATS)}")
    if claimed == "hdf5":
        if found in ("nwb", "temporaldata"):
            return found
        raise SessionFormatError(path, f"HDF5 file is neither NWB nor a torch_brain/temporaldata Data file "
                                       f"(content sniffed as {found or 'not HDF5'}, starts {_head(path)!r})")
    if found != claimed:
        detail = f"it looks like {found}" if found else f"it starts with {_head(path)!r}"
        raise SessionFormatError(path, f"suffix {path.suffix!r} claims {claimed} but {detail} (wrong magic)")
    return claimed


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def read_session(path: str | Path, *, format: str | None = None, **options: Any) -> Session:
    """Read a session file; ``options`` go to the format's reader (see the module table).

    ``format`` forces one of :data:`FORMATS` (the content is still checked). Raises
    :class:`SessionFormatError` (a ``ValueError``) for files that are not what they claim,
    ``FileNotFoundError`` for missing ones, ``TypeError`` for options the reader does not take.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    fmt = detect_format(path)
    if format is not None:
        if format != fmt:
            raise SessionFormatError(path, f"format={format!r} requested but the file is {fmt}")
    readers = {"mat": read_binned, "npz": read_binned, "nwb": read_nwb, "xdf": read_xdf,
               "temporaldata": read_temporaldata}
    session = readers[fmt](path, **options)
    log.info("read %r from %s (%s)", session, path, fmt)
    return session


def parse_reader_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLIs' ``-O/--reader-option``) as keyword options for :func:`read_session`.

    VALUE is parsed as JSON when it can be (``-O 'behavior_channels=[0,1]'``, ``-O strict=false``), else kept
    as text (``-O behavior_stream=PeerBehavior``). Raises ``ValueError`` naming a malformed item; a later
    repeat of a KEY wins.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--reader-option must be KEY=VALUE with KEY an identifier, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[key.strip()] = value
    return options


# --- binned counts (MAT / NPZ) -----------------------------------------------------------
def spikes_from_binned_counts(
    counts: np.ndarray,
    bin_centres_s: np.ndarray,
    bin_width_s: float,
    *,
    placement: str = "uniform",
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spike events from binned counts: ``(times_s (N,) f64, units (N,) i64, bins (N,) i64)`` sorted by time.

    Args:
        counts: (U, T) non-negative integer counts per unit per bin.
        bin_centres_s: (T,) bin centres, seconds.
        bin_width_s: bin width, seconds; bin t spans ``[centre_t - w/2, centre_t + w/2)``.
        placement: ``"uniform"``: each spike uniform at random in its bin, drawn from
            ``np.random.default_rng(seed)`` in (unit, bin) order (reproducible);
            ``"center"``: every spike at its bin centre.
        seed: the generator's seed (``placement="uniform"``).
    """
    counts = np.asarray(counts)
    centres = np.asarray(bin_centres_s, dtype=np.float64).reshape(-1)
    if counts.ndim != 2 or counts.shape[1] != centres.size:
        raise ValueError(f"counts must be (U, T={centres.size}), got shape {counts.shape}")
    if not bin_width_s > 0:
        raise ValueError(f"bin_width_s must be > 0, got {bin_width_s}")
    if placement not in ("uniform", "center"):
        raise ValueError(f"placement must be 'uniform' or 'center', got {placement!r}")
    unit_nz, bin_nz = np.nonzero(counts)  # C order: by unit, then bin
    reps = counts[unit_nz, bin_nz].astype(np.int64)
    units = np.repeat(unit_nz.astype(np.int64), reps)
    bins = np.repeat(bin_nz.astype(np.int64), reps)
    if placement == "center":
        times = centres[bins]
    else:
        lower = centres[bins] - bin_width_s / 2
        upper = centres[bins] + bin_width_s / 2
        times = lower + np.random.default_rng(seed).random(units.size) * bin_width_s
        times = np.minimum(times, np.nextafter(upper, -np.inf))  # [lower, upper) despite rounding
    order = np.argsort(times, kind="stable")
    return times[order], units[order], bins[order]


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a MAT file in MATLAB orientation (v5/v7 via scipy, v7.3 via h5py)."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 7.3"):
        h5py = _optional("h5py", "h5py", "MAT v7.3 files")
        out = {}
        with h5py.File(path, "r") as h5:
            for key, obj in h5.items():
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "iufb":
                    out[key] = np.asarray(obj[()]).T  # MATLAB stores column-major
        return out
    sio = _optional("scipy.io", "scipy", "MAT files")
    try:
        raw = sio.loadmat(str(path))
    except Exception as exc:  # scipy raises many kinds for corrupt files
        raise SessionFormatError(path, f"cannot read MAT file: {type(exc).__name__}: {exc}") from exc
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def read_binned(
    path: str | Path,
    *,
    time_key: str = "time",
    spikes_key: str = "spikes",
    behavior_key: str | None = "handVel",
    behavior_channels: Sequence[int] | None = (0, 1),
    behavior_labels: Sequence[str] | None = None,
    bin_width_s: float | None = None,
    placement: str = "uniform",
    seed: int | None = 0,
    session_id: str | None = None,
    unit_prefix: str | None = None,
) -> Session:
    """Read binned counts from a ``.mat`` or ``.npz`` (or a poyo-rt native NPZ, returned as saved).

    Args:
        time_key: (T,) or (1, T) bin centre times, seconds, strictly increasing.
        spikes_key: (U, T) (or (T, U)) non-negative integer counts.
        behavior_key: (D, T) or (T, D) behaviour sampled at the bin centres; None for none.
        behavior_channels: which behaviour channels to keep (default x, y of ``handVel``); None = all.
        behavior_labels: labels of the kept channels (default ``vx, vy`` for two, else ``<key><i>``).
        bin_width_s: bin width, seconds; default the median difference of ``time``, rounded to 1 ns.
        placement, seed: where spikes go inside their bins (see :func:`spikes_from_binned_counts`).
        session_id: default the file stem. unit_prefix: default ``f"{session_id}/"``; ids are
            ``f"{unit_prefix}u{index:03d}"``.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz" or _sniff(path) == "npz":
        try:
            npz = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise SessionFormatError(path, f"cannot read NPZ: {type(exc).__name__}: {exc}") from exc
        with npz:
            if NPZ_MARKER in npz.files:
                return Session._from_npz_mapping(npz, str(path))
            try:
                arrays = {k: npz[k] for k in npz.files}
            except ValueError as exc:  # object arrays need pickle: refused
                raise SessionFormatError(path, f"NPZ holds an array that needs pickle (refused): {exc}") from exc
        fmt = "npz"
    else:
        arrays = _load_mat(path)
        fmt = "mat"

    def need(key: str) -> np.ndarray:
        if key not in arrays:
            raise SessionFormatError(path, f"missing key {key!r}; keys present: {sorted(arrays)}")
        arr = np.asarray(arrays[key])
        if arr.dtype.kind not in "iufb":
            raise SessionFormatError(path, f"{key!r} must be numeric, got dtype {arr.dtype}")
        return arr

    time_arr = need(time_key)
    if time_arr.ndim > 2 or (time_arr.ndim == 2 and min(time_arr.shape) != 1):
        raise SessionFormatError(path, f"{time_key!r} must be (T,) or (1, T), got shape {time_arr.shape}")
    centres = time_arr.astype(np.float64).reshape(-1)
    n_bins = centres.size
    if n_bins == 0 or not np.all(np.isfinite(centres)) or np.any(np.diff(centres) <= 0):
        raise SessionFormatError(path, f"{time_key!r} must be finite and strictly increasing bin centres")
    if bin_width_s is None:
        if n_bins < 2:
            raise SessionFormatError(path, "bin_width_s is needed when there is a single bin")
        bin_width_s = round(float(np.median(np.diff(centres))), 9)  # to the ns: 0.05000000000001137 -> 0.05
    elif not bin_width_s > 0:
        raise ValueError(f"bin_width_s must be > 0, got {bin_width_s}")

    counts = need(spikes_key)
    if counts.ndim != 2 or n_bins not in counts.shape:
        raise SessionFormatError(path, f"{spikes_key!r} must be (U, T={n_bins}) counts, got shape {counts.shape}")
    if counts.shape[1] != n_bins:
        counts = counts.T
    if counts.dtype.kind == "f":
        if not np.all(np.isfinite(counts)) or np.any(counts != np.round(counts)):
            raise SessionFormatError(path, f"{spikes_key!r} must hold whole counts, found non-integer values")
    if counts.size and counts.min() < 0:
        raise SessionFormatError(path, f"{spikes_key!r} must be >= 0, found {counts.min()}")
    counts = counts.astype(np.int64)

    session_id = session_id or path.stem
    prefix = f"{session_id}/" if unit_prefix is None else unit_prefix
    times, units, _ = spikes_from_binned_counts(counts, centres, bin_width_s, placement=placement, seed=seed)

    if behavior_key is None:
        beh_t, behavior, labels = np.zeros(0), np.zeros((0, 0), dtype=np.float32), []
    else:
        beh = need(behavior_key).astype(np.float64)
        if beh.ndim == 1 and beh.size == n_bins:
            beh = beh[:, None]
        elif beh.ndim == 2 and beh.shape[1] == n_bins and beh.shape[0] != n_bins:
            beh = beh.T
        elif not (beh.ndim == 2 and beh.shape[0] == n_bins):
            raise SessionFormatError(path, f"{behavior_key!r} must be (D, T={n_bins}) or (T, D), got {beh.shape}")
        if behavior_channels is not None:
            chans = list(behavior_channels)
            if any(not 0 <= c < beh.shape[1] for c in chans):
                raise ValueError(f"behavior_channels {chans} out of range for {behavior_key!r} "
                                 f"with {beh.shape[1]} channels")
            beh = beh[:, chans]
        beh_t, behavior = centres, beh.astype(np.float32)
        labels = _default_labels(behavior.shape[1], behavior_key, behavior_labels)

    return Session(
        session_id=session_id,
        unit_ids=[f"{prefix}u{i:03d}" for i in range(counts.shape[0])],
        spike_times_s=times,
        spike_units=units,
        behavior_times_s=beh_t,
        behavior=behavior,
        behavior_labels=labels,
        metadata={
            "format": fmt,
            "source": str(path),
            "bin_width_s": float(bin_width_s),
            "spike_placement": placement,
            "spike_placement_seed": seed if placement == "uniform" else None,
            "keys": {"time": time_key, "spikes": spikes_key, "behavior": behavior_key},
        },
    )


def _default_labels(n: int, stem: str, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        labels = [str(x) for x in given]
        if len(labels) != n:
            raise ValueError(f"behavior_labels must name {n} channels, got {labels!r}")
        return labels
    if n == 2:
        return ["vx", "vy"]
    if n == 3 and "vel" in stem.lower():
        return ["vx", "vy", "vz"]
    return [f"{stem}{i}" for i in range(n)]


# --- NWB ---------------------------------------------------------------------------------
def _nwb_timeseries(nwbfile: Any) -> dict[str, Any]:
    """All TimeSeries of acquisition and processing by path: ``acquisition/<name>``,
    ``processing/<module>/<name>``, and one level deeper for containers (``.../<container>/<name>``)."""
    from pynwb import TimeSeries

    found: dict[str, Any] = {}

    def visit(prefix: str, obj: Any) -> None:
        if isinstance(obj, TimeSeries):
            found[f"{prefix}/{obj.name}"] = obj
            return
        inner = getattr(obj, "time_series", None) or getattr(obj, "spatial_series", None)
        if isinstance(inner, dict):
            for child in inner.values():
                visit(f"{prefix}/{obj.name}", child)

    for obj in nwbfile.acquisition.values():
        visit("acquisition", obj)
    for mod_name, module in nwbfile.processing.items():
        for obj in module.data_interfaces.values():
            visit(f"processing/{mod_name}", obj)
    return found


def _match_nwb_path(path: Path, wanted: str, available: dict[str, Any]) -> str:
    wanted = wanted.strip("/")
    for candidate in (wanted, f"processing/{wanted}", f"acquisition/{wanted}"):
        if candidate in available:
            return candidate
    by_name = [p for p in available if p.rsplit("/", 1)[-1] == wanted]
    if len(by_name) == 1:
        return by_name[0]
    raise SessionFormatError(path, f"behaviour TimeSeries {wanted!r} not found"
                                   f"{' (ambiguous: ' + str(by_name) + ')' if by_name else ''}; "
                                   f"TimeSeries in the file: {sorted(available)}")


def read_nwb(
    path: str | Path,
    *,
    behavior_path: str | None = None,
    unit_id_column: str | None = None,
    behavior_channels: Sequence[int] | None = None,
    behavior_labels: Sequence[str] | None = None,
    require_behavior: bool = True,
    session_id: str | None = None,
    unit_prefix: str = "",
) -> Session:
    """Read an NWB file: spikes from the units table, behaviour from one TimeSeries.

    Args:
        behavior_path: the behaviour TimeSeries, e.g. ``"behavior/hand_vel"`` (processing module /
            name), ``"processing/behavior/Position/pos"``, ``"acquisition/hand_vel"`` or a bare name
            that is unique. Default: the one TimeSeries whose name contains ``vel`` with 2-D data of
            at least two columns; otherwise an error lists the candidates.
        unit_id_column: units-table column holding the unit ids (default the table's ``id``).
        behavior_channels / behavior_labels: columns kept and their names (default all; ``vx, vy``
            for two columns).
        require_behavior: when False, a file without a matching TimeSeries gives an empty behaviour.
        session_id: default the file's ``session_id``, else its ``identifier``.
        unit_prefix: prepended to every unit id.

    Values are ``data * conversion + offset`` (the TimeSeries' own unit); times are seconds from the
    file's timestamps reference, ``timestamps`` or ``starting_time + i / rate``.
    """
    NWBHDF5IO = _optional("pynwb", "pynwb", "NWB files").NWBHDF5IO
    path = Path(path)
    try:
        io = NWBHDF5IO(str(path), "r", load_namespaces=True)
    except Exception as exc:
        raise SessionFormatError(path, f"cannot open NWB: {type(exc).__name__}: {exc}") from exc
    try:
        nwbfile = io.read()
    except Exception as exc:
        io.close()
        raise SessionFormatError(path, f"cannot read NWB: {type(exc).__name__}: {exc}") from exc
    with io:
        units = nwbfile.units
        if units is None or len(units) == 0:
            raise SessionFormatError(path, "NWB file has no units table (no spike times)")
        if "spike_times" not in units.colnames:
            raise SessionFormatError(path, f"units table has no spike_times column; columns: {list(units.colnames)}")
        if unit_id_column is None:
            raw_ids = np.asarray(units.id.data[:])
        elif unit_id_column in units.colnames:
            raw_ids = np.asarray(units[unit_id_column].data[:])
        else:
            raise ValueError(f"unit_id_column {unit_id_column!r} is not a units column; "
                             f"columns: {list(units.colnames)}")
        unit_ids = [unit_prefix + (u.decode() if isinstance(u, bytes) else str(u)) for u in raw_ids.tolist()]
        index = units["spike_times"]  # VectorIndex: end offsets into the flat spike times
        ends = np.asarray(index.data[:], dtype=np.int64)
        flat = np.asarray(index.target.data[:], dtype=np.float64)
        counts = np.diff(np.concatenate([[0], ends]))
        spike_units = np.repeat(np.arange(len(unit_ids), dtype=np.int64), counts)
        times, spike_units = sort_spikes(flat, spike_units)

        available = _nwb_timeseries(nwbfile)
        if behavior_path is not None:
            chosen: str | None = _match_nwb_path(path, behavior_path, available)
        else:
            cands = [p for p, ts in available.items()
                     if "vel" in p.rsplit("/", 1)[-1].lower() and len(ts.data.shape) == 2 and ts.data.shape[1] >= 2]
            if len(cands) == 1:
                chosen = cands[0]
            elif not require_behavior:
                chosen = None
                log.warning("%s: no single velocity TimeSeries (%s); reading without behaviour", path, cands)
            else:
                raise SessionFormatError(path, f"cannot pick the behaviour TimeSeries automatically: "
                                               f"{'several' if cands else 'no'} 2-D *vel* candidates {cands}; "
                                               f"all TimeSeries: {sorted(available)}; pass behavior_path=")
        if chosen is None:
            beh_t, beh, labels = np.zeros(0), np.zeros((0, 0), dtype=np.float32), []
        else:
            ts = available[chosen]
            data = np.asarray(ts.data[:], dtype=np.float64)
            data = data[:, None] if data.ndim == 1 else data
            if data.ndim != 2:
                raise SessionFormatError(path, f"behaviour {chosen!r} must be (M,) or (M, D), got {data.shape}")
            data = data * float(ts.conversion) + float(getattr(ts, "offset", 0.0) or 0.0)
            beh_t = np.asarray(ts.get_timestamps(), dtype=np.float64)
            if behavior_channels is not None:
                data = data[:, list(behavior_channels)]
            beh = data.astype(np.float32)
            labels = _default_labels(beh.shape[1], ts.name, behavior_labels)
        sid = session_id or nwbfile.session_id or nwbfile.identifier or path.stem
        metadata = {
            "format": "nwb",
            "source": str(path),
            "identifier": str(nwbfile.identifier),
            "behavior_path": chosen,
            "behavior_unit": getattr(available[chosen], "unit", None) if chosen else None,
            "session_start_time": str(nwbfile.session_start_time),
        }
    return Session(session_id=str(sid), unit_ids=unit_ids, spike_times_s=times, spike_units=spike_units,
                   behavior_times_s=beh_t, behavior=beh, behavior_labels=labels, metadata=metadata)


# --- XDF ---------------------------------------------------------------------------------
def _first(value: Any) -> Any:
    """pyxdf wraps every XML value in a list; unwrap one level (None stays None)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _xdf_info(stream: dict, key: str) -> str | None:
    value = _first(stream["info"].get(key))
    return None if value is None else str(value)


def _xdf_desc(stream: dict) -> dict:
    desc = _first(stream["info"].get("desc"))
    return desc if isinstance(desc, dict) else {}


def _xdf_channel_labels(stream: dict) -> list[str | None]:
    channels = _first(_xdf_desc(stream).get("channels"))
    items = channels.get("channel", []) if isinstance(channels, dict) else []
    return [_first(c.get("label")) if isinstance(c, dict) else None for c in items]


def _xdf_units(stream: dict) -> list[str]:
    """Unit ids from ``<desc><units><unit><id>`` (or ``<label>``), in order."""
    units = _first(_xdf_desc(stream).get("units"))
    items = units.get("unit", []) if isinstance(units, dict) else []
    out = []
    for u in items:
        if not isinstance(u, dict):
            continue
        uid = _first(u.get("id")) or _first(u.get("label"))
        if uid is not None:
            out.append(str(uid))
    return out


def _xdf_describe(stream: dict) -> str:
    return (f"{_xdf_info(stream, 'name')!r} (type {_xdf_info(stream, 'type')!r}, "
            f"{_xdf_info(stream, 'channel_count')} ch {_xdf_info(stream, 'channel_format')}, "
            f"{float(_xdf_info(stream, 'nominal_srate') or 0):g} Hz)")


def _xdf_select(path: Path, streams: list[dict], wanted: str | int, role: str) -> dict:
    if isinstance(wanted, int):
        hits = [s for s in streams if s["info"].get("stream_id") == wanted]
    else:
        low = str(wanted).lower()
        hits = [s for s in streams if _xdf_info(s, "name") == wanted]
        hits = hits or [s for s in streams if (_xdf_info(s, "type") or "").lower() == low]
        hits = hits or [s for s in streams if _xdf_info(s, "source_id") == wanted]
    if len(hits) != 1:
        raise SessionFormatError(path, f"{role} stream {wanted!r} matches {len(hits)} streams (by stream id, name, "
                                       f"type or source_id); streams: {[_xdf_describe(s) for s in streams]}")
    return hits[0]


def _xdf_is_numeric(stream: dict) -> bool:
    return (_xdf_info(stream, "channel_format") or "").lower() != "string"


def _xdf_rate(stream: dict) -> float:
    try:
        return float(_xdf_info(stream, "nominal_srate") or 0.0)
    except ValueError:
        return 0.0


@contextmanager
def _capture_pyxdf_errors() -> Iterator[list[str]]:
    """Collect ERROR records pyxdf logs (it logs corruption and carries on)."""
    records: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Handler(level=logging.ERROR)
    pyxdf_log = logging.getLogger("pyxdf")
    pyxdf_log.addHandler(handler)
    try:
        yield records
    finally:
        pyxdf_log.removeHandler(handler)


def read_xdf(
    path: str | Path,
    *,
    spike_stream: str | int | None = None,
    behavior_stream: str | int | None = None,
    spike_format: str = "auto",
    unit_column: int | str = 0,
    unit_value: str = "auto",
    behavior_channels: Sequence[int | str] | None = None,
    behavior_labels: Sequence[str] | None = None,
    require_behavior: bool = True,
    synchronize_clocks: bool = True,
    dejitter_timestamps: bool = True,
    strict: bool = True,
    session_id: str | None = None,
    unit_prefix: str = "",
) -> Session:
    """Read an XDF recording (e.g. from LabRecorder): one spike stream plus one behaviour stream.

    Args:
        spike_stream / behavior_stream: a stream id (int), or a name, type or source_id (str).
            Default spikes: the one stream of type ``SpikeEvents`` or whose name contains ``spike``;
            behaviour: the one other numeric regular-rate stream (ties broken by a type/name with
            behav/vel/kinem/hand/cursor), else an error listing the streams.
        spike_format: ``"events"`` (one sample per spike, its time the spike time), ``"counts"``
            (regular rate, one channel per unit, counts per sample -> that many spikes at the sample
            time) or ``"auto"`` (irregular -> events, regular -> counts).
        unit_column: events: the column (index or channel label) holding the unit; others (waveforms) ignored.
        unit_value: events: ``"index"`` (value indexes the unit list), ``"id"`` (value is a unit id)
            or ``"auto"`` (``id`` when ``<desc><value_meaning>`` says id and every value is one).
        behavior_channels: channels kept (indices or labels; default all); labels from the stream.
        require_behavior: when False a missing behaviour stream gives an empty behaviour.
        synchronize_clocks, dejitter_timestamps: passed to ``pyxdf.load_xdf`` (clock offsets are
            applied, regular streams' timestamps refitted).
        strict: raise when pyxdf reports corruption (it otherwise skips ahead and returns what it read).
        session_id: default the file stem. unit_prefix: prepended to every unit id.

    Unit ids: the spike stream's ``<desc><units><unit><id>`` (else ``<label>``); for counts without
    those, the channel labels, else ``unit{i}``; for events without them, ``unit{i}`` up to the largest index.
    """
    pyxdf = _optional("pyxdf", "pyxdf", "XDF files")
    path = Path(path)
    if spike_format not in ("auto", "events", "counts"):
        raise ValueError(f"spike_format must be 'auto', 'events' or 'counts', got {spike_format!r}")
    if unit_value not in ("auto", "index", "id"):
        raise ValueError(f"unit_value must be 'auto', 'index' or 'id', got {unit_value!r}")
    try:
        with _capture_pyxdf_errors() as errors:
            streams, header = pyxdf.load_xdf(str(path), synchronize_clocks=synchronize_clocks,
                                             dejitter_timestamps=dejitter_timestamps)
    except Exception as exc:
        raise SessionFormatError(path, f"cannot read XDF: {type(exc).__name__}: {exc}") from exc
    if errors and strict:
        raise SessionFormatError(path, f"corrupt XDF ({len(errors)} errors, first: {errors[0]}); "
                                       f"strict=False reads what is intact")
    for msg in errors:
        log.warning("%s: pyxdf: %s", path, msg)
    if not streams:
        raise SessionFormatError(path, "XDF file holds no streams")

    # spike stream
    if spike_stream is not None:
        spk = _xdf_select(path, streams, spike_stream, "spike")
    else:
        cands = [s for s in streams if (_xdf_info(s, "type") or "").lower() == "spikeevents"]
        cands = cands or [s for s in streams if "spike" in (_xdf_info(s, "name") or "").lower()]
        if len(cands) != 1:
            raise SessionFormatError(path, f"cannot pick the spike stream automatically ({len(cands)} candidates); "
                                           f"pass spike_stream=; streams: {[_xdf_describe(s) for s in streams]}")
        spk = cands[0]
    if not _xdf_is_numeric(spk):
        raise SessionFormatError(path, f"spike stream {_xdf_describe(spk)} is not numeric")
    fmt = spike_format if spike_format != "auto" else ("counts" if _xdf_rate(spk) > 0 else "events")
    spk_t = np.asarray(spk["time_stamps"], dtype=np.float64)
    spk_x = np.asarray(spk["time_series"])
    if spk_x.ndim == 1:
        spk_x = spk_x[:, None]
    desc_units = _xdf_units(spk)
    if fmt == "events":
        unit_ids, times, units = _xdf_events(path, spk, spk_t, spk_x, desc_units, unit_column, unit_value)
    else:
        unit_ids, times, units = _xdf_counts(path, spk, spk_t, spk_x, desc_units)
    times, units = sort_spikes(times, units)

    # behaviour stream
    others = [s for s in streams if s is not spk]
    if behavior_stream is not None:
        beh_s: dict | None = _xdf_select(path, streams, behavior_stream, "behaviour")
    else:
        cands = [s for s in others if _xdf_is_numeric(s) and _xdf_rate(s) > 0 and len(s["time_stamps"])]
        if len(cands) > 1:
            hint = re.compile("behav|vel|kinem|hand|cursor", re.I)
            cands = [s for s in cands if hint.search(f"{_xdf_info(s, 'type')} {_xdf_info(s, 'name')}")] or cands
        if len(cands) == 1:
            beh_s = cands[0]
        elif not cands and not require_behavior:
            beh_s = None
            log.warning("%s: no behaviour stream; reading spikes only", path)
        else:
            raise SessionFormatError(path, f"cannot pick the behaviour stream automatically ({len(cands)} "
                                           f"candidates); pass behavior_stream=; streams: "
                                           f"{[_xdf_describe(s) for s in others]}")
    if beh_s is None:
        beh_t, beh, labels = np.zeros(0), np.zeros((0, 0), dtype=np.float32), []
    else:
        if not _xdf_is_numeric(beh_s):
            raise SessionFormatError(path, f"behaviour stream {_xdf_describe(beh_s)} is not numeric")
        beh_t = np.asarray(beh_s["time_stamps"], dtype=np.float64)
        data = np.asarray(beh_s["time_series"], dtype=np.float64)
        data = data[:, None] if data.ndim == 1 else data.reshape(len(beh_t), -1)
        chan_labels = _xdf_channel_labels(beh_s)
        if len(chan_labels) != data.shape[1] or any(c is None for c in chan_labels):
            chan_labels = [f"ch{i}" for i in range(data.shape[1])]
        if behavior_channels is not None:
            idx = [_column_index(path, c, chan_labels, "behavior_channels") for c in behavior_channels]
            data, chan_labels = data[:, idx], [chan_labels[i] for i in idx]
        beh = data.astype(np.float32)
        labels = [str(x) for x in behavior_labels] if behavior_labels is not None else [str(c) for c in chan_labels]
        order = np.argsort(beh_t, kind="stable")
        beh_t, beh = beh_t[order], beh[order]

    metadata = {
        "format": "xdf",
        "source": str(path),
        "time_origin": "lsl_clock" if synchronize_clocks else "per-stream clocks (unsynchronised)",
        "spike_stream": _xdf_stream_meta(spk),
        "spike_format": fmt,
        "behavior_stream": _xdf_stream_meta(beh_s) if beh_s is not None else None,
        "recorded_at": _first(header.get("info", {}).get("datetime")) if isinstance(header, dict) else None,
    }
    return Session(session_id=session_id or path.stem, unit_ids=[unit_prefix + u for u in unit_ids],
                   spike_times_s=times, spike_units=units, behavior_times_s=beh_t, behavior=beh,
                   behavior_labels=labels, metadata=metadata)


def _xdf_stream_meta(stream: dict) -> dict:
    return {
        "name": _xdf_info(stream, "name"),
        "type": _xdf_info(stream, "type"),
        "source_id": _xdf_info(stream, "source_id"),
        "nominal_srate": _xdf_rate(stream),
        "n_samples": int(len(stream["time_stamps"])),
        "clock_offsets_s": [float(v) for v in stream.get("clock_values", [])][:100],
    }


def _column_index(path: Path, col: int | str, labels: Sequence[str | None], what: str) -> int:
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        if not 0 <= col < len(labels):
            raise ValueError(f"{what} {col} out of range for a stream of {len(labels)} channels")
        return int(col)
    if col in labels:
        return list(labels).index(col)
    raise ValueError(f"{what} {col!r} is not a channel label; labels: {list(labels)}")


def _integral(path: Path, values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise SessionFormatError(path, f"{what} must be whole numbers")
    elif values.dtype.kind not in "iu":
        raise SessionFormatError(path, f"{what} must be numeric, got dtype {values.dtype}")
    return values.astype(np.int64)


def _xdf_events(path: Path, stream: dict, t: np.ndarray, x: np.ndarray, desc_units: list[str],
                unit_column: int | str, unit_value: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    labels = _xdf_channel_labels(stream)
    labels = labels if len(labels) == x.shape[1] else [None] * x.shape[1]
    col = _column_index(path, unit_column, labels, "unit_column")
    values = _integral(path, x[:, col] if x.size else np.zeros(0, dtype=np.int64), "spike unit values")
    mode = unit_value
    if mode == "auto":
        meaning = str(_first(_xdf_desc(stream).get("value_meaning")) or "").lower()
        says_id = re.search(r"\bid\b", meaning) is not None and "index" not in meaning
        ids = set(desc_units)
        mode = "id" if says_id and desc_units and all(str(v) in ids for v in np.unique(values)) else "index"
    if mode == "id":
        unit_ids = desc_units or [str(v) for v in np.unique(values)]
        lookup = {u: i for i, u in enumerate(unit_ids)}
        uniq, inverse = np.unique(values, return_inverse=True)
        missing = [int(v) for v in uniq if str(v) not in lookup]
        if missing:
            raise SessionFormatError(path, f"spike values {missing[:10]} are not unit ids of the stream "
                                           f"(first ids: {unit_ids[:10]})")
        units = np.array([lookup[str(v)] for v in uniq], dtype=np.int64)[inverse.reshape(-1)]
    else:
        n = len(desc_units) if desc_units else (int(values.max()) + 1 if values.size else 0)
        unit_ids = desc_units or [f"unit{i}" for i in range(n)]
        if values.size and (values.min() < 0 or values.max() >= n):
            bad = int(values.min()) if values.min() < 0 else int(values.max())
            raise SessionFormatError(path, f"spike unit index {bad} out of range for the {n} units "
                                           f"of the stream's desc")
        units = values
    return unit_ids, t, units


def _xdf_counts(path: Path, stream: dict, t: np.ndarray, x: np.ndarray,
                desc_units: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    n = x.shape[1]
    counts = _integral(path, x, "spike counts")
    if counts.size and counts.min() < 0:
        raise SessionFormatError(path, f"spike counts must be >= 0, found {counts.min()}")
    labels = _xdf_channel_labels(stream)
    if len(desc_units) == n:
        unit_ids = desc_units
    elif len(labels) == n and all(labels) and len(set(labels)) == n:
        unit_ids = [str(lab) for lab in labels]
    else:
        unit_ids = [f"unit{i}" for i in range(n)]
    sample, unit = np.nonzero(counts)
    reps = counts[sample, unit]
    return unit_ids, np.repeat(t[sample], reps), np.repeat(unit.astype(np.int64), reps)


# --- torch_brain / temporaldata HDF5 -----------------------------------------------------
def read_temporaldata(
    path: str | Path,
    *,
    behavior_key: str | None = None,
    behavior_labels: Sequence[str] | None = None,
    require_behavior: bool = True,
    session_id: str | None = None,
    unit_prefix: str = "",
) -> Session:
    """Read a torch_brain/temporaldata ``Data`` HDF5 (as written by ``Data.to_hdf5``) with h5py alone.

    Reads ``spikes.timestamps``, ``spikes.unit_index``, ``units.id``, ``session.id`` and the
    behaviour ``behavior_key`` (dotted, e.g. ``"cursor.vel"``; its group's ``timestamps``, or
    ``domain.start + i / sampling_rate`` for a RegularTimeSeries). Default key: the first present of
    ``hand.vel``, ``cursor.vel``, ``behavior.hand_vel``, ``finger.vel``, else the one 2-D ``*vel*``
    dataset of a time-series group, else an error listing the candidates.
    """
    h5py = _optional("h5py", "h5py", "HDF5 files (MAT v7.3, NWB, temporaldata)")

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SessionFormatError(path, f"cannot open HDF5: {exc}") from exc
    with f:
        if _attr_str(f.attrs.get("object")) != "Data":
            raise SessionFormatError(path, "not a temporaldata Data file (root attribute object != 'Data')")
        for key in ("spikes/timestamps", "spikes/unit_index", "units/id"):
            if key not in f:
                raise SessionFormatError(path, f"missing {key.replace('/', '.')}; top-level keys: {sorted(f)}")
        times = np.asarray(f["spikes/timestamps"][()], dtype=np.float64)
        units = np.asarray(f["spikes/unit_index"][()])
        if units.dtype.kind not in "iu" or units.shape != times.shape:
            raise SessionFormatError(path, f"spikes.unit_index must be integers shaped like spikes.timestamps "
                                           f"{times.shape}, got {units.dtype} {units.shape}")
        raw_ids = np.asarray(f["units/id"][()]).reshape(-1)
        unit_ids = [unit_prefix + (u.decode() if isinstance(u, bytes) else str(u)) for u in raw_ids.tolist()]
        times, units = sort_spikes(times, units)
        sid = session_id
        if sid is None and "session" in f:
            sid = _attr_str(f["session"].attrs.get("id"))
        sid = sid or path.stem

        candidates: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.ndim == 2 and obj.shape[1] >= 2 and obj.dtype.kind == "f":
                parent = obj.parent
                if _attr_str(parent.attrs.get("object")) in ("IrregularTimeSeries", "RegularTimeSeries"):
                    candidates.append(name.replace("/", "."))

        f.visititems(visit)
        key = behavior_key
        if key is None:
            key = next((k for k in _PREFERRED_TEMPORALDATA_KEYS if k in candidates), None)
            if key is None:
                vel = [c for c in candidates if "vel" in c.rsplit(".", 1)[-1].lower()]
                key = vel[0] if len(vel) == 1 else None
            if key is None and require_behavior:
                raise SessionFormatError(path, f"cannot pick the behaviour automatically; pass behavior_key= "
                                               f"(candidates: {candidates})")
        if key is None:
            beh_t, beh, labels = np.zeros(0), np.zeros((0, 0), dtype=np.float32), []
        else:
            h5key = key.replace(".", "/")
            if h5key not in f or not isinstance(f[h5key], h5py.Dataset):
                raise SessionFormatError(path, f"behavior_key {key!r} not found; candidates: {candidates}")
            data = np.asarray(f[h5key][()], dtype=np.float64)
            data = data[:, None] if data.ndim == 1 else data
            group = f[h5key].parent
            kind = _attr_str(group.attrs.get("object"))
            if kind == "RegularTimeSeries":
                rate = float(group.attrs["sampling_rate"])
                start = float(np.asarray(group["domain/start"][()]).reshape(-1)[0]) if "domain/start" in group else 0.0
                beh_t = start + np.arange(data.shape[0]) / rate
            elif "timestamps" in group:
                beh_t = np.asarray(group["timestamps"][()], dtype=np.float64)
            else:
                raise SessionFormatError(path, f"behaviour {key!r} has no timestamps (group object {kind!r})")
            order = np.argsort(beh_t, kind="stable")
            beh_t, beh = beh_t[order], data[order].astype(np.float32)
            labels = _default_labels(beh.shape[1], key.rsplit(".", 1)[-1], behavior_labels)
        metadata = {
            "format": "temporaldata",
            "source": str(path),
            "behavior_key": key,
            "absolute_start": float(np.asarray(f.attrs.get("absolute_start", 0.0))),
        }
    return Session(session_id=str(sid), unit_ids=unit_ids, spike_times_s=times, spike_units=units,
                   behavior_times_s=beh_t, behavior=beh, behavior_labels=labels, metadata=metadata)

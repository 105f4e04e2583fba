"""LSL input: the only module of poyo-rt that imports :mod:`pylsl`.

What it offers:

- :func:`configure_lsl`: applies liblsl's configuration once per process, before any other LSL call.
  By default the packaged ``loopback.cfg`` (machine-scope discovery, loopback peer only, no IPv6),
  so no discovery packet leaves the machine. Every function here calls it implicitly.
- :func:`resolve_stream`: find exactly one stream by name / type / source_id, or a clear error.
- :class:`SpikeInlet`: pulls spike events or binned counts, returns ``(spike_times_s, unit_index)``
  on this machine's :func:`local_clock`, drops and counts bad samples, survives an outlet restart.
- :func:`make_spike_outlet`: an outlet whose ``<desc>`` carries the unit list the inlet reads.
- :func:`match_units` (re-exported from :mod:`poyo_rt.stream.units`): stream unit -> vocabulary index.

Stream metadata read and written here::

    <desc>
      <channels><channel><label>unit</label></channel>...</channels>
      <units>
        <unit><id>elec3_u1</id><channel>3</channel><label>1</label></unit>   (channel, label optional)
        ...
      </units>
    </desc>

Importing this module loads liblsl (pylsl's import only reads the library version); liblsl reads its
configuration lazily at the first real LSL call, which is why :func:`configure_lsl` must come first.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import LostError as _LslLostError
from pylsl.util import TimeoutError as _LslTimeoutError

from poyo_rt.errors import StreamFormatError, StreamNotFoundError
from poyo_rt.stream.units import match_units

__all__ = [
    "DROP_REASONS",
    "SpikeInlet",
    "configure_lsl",
    "local_clock",
    "lsl_config_description",
    "make_spike_outlet",
    "match_units",
    "open_spike_inlet",
    "packaged_config_path",
    "resolve_stream",
]

log = logging.getLogger(__name__)


def _positive(field: str, value: float, integer: bool = False) -> None:
    """ValueError naming ``field`` unless ``value`` is a positive finite number (int if asked)."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value <= 0:
        kind = "a positive int" if integer else "a positive finite number"
        raise ValueError(f"{field} must be {kind}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

_SCOPES = ("machine", "site")
_MACHINE_SCOPE_RE = re.compile(r"^\s*ResolveScope\s*=\s*machine\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class _ConfigState:
    request: tuple[str, str | None] | None = None  # (scope, config_path) once applied
    description: str = ""


_config_state = _ConfigState()
_config_lock = threading.Lock()


def packaged_config_path() -> Path:
    """Path of the packaged machine-scope liblsl config (``poyo_rt/stream/loopback.cfg``)."""
    return Path(__file__).with_name("loopback.cfg")


def _declares_machine_scope(path: Path) -> bool:
    try:
        return bool(_MACHINE_SCOPE_RE.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def configure_lsl(scope: str = "machine", config_path: str | os.PathLike[str] | None = None) -> None:
    """Apply liblsl's configuration, once per process, before any other LSL call.

    Args:
        scope: ``"machine"`` (default): keep LSL discovery on this machine. Uses, in order:
            ``config_path`` if given; else the file named by an ``LSLAPICFG`` environment variable the
            user already set (honoured and logged; a warning if it does not set machine scope); else
            the packaged ``loopback.cfg``, applied with ``pylsl.set_config_content`` and exported as
            ``LSLAPICFG`` so that child processes inherit it.
            ``"site"``: the lab explicitly wants liblsl's normal network discovery: applies
            ``config_path`` if given, else nothing (liblsl then reads ``LSLAPICFG`` / ``lsl_api.cfg``
            itself, or uses its defaults).
        config_path: a liblsl config file (INI) to apply instead.

    liblsl reads its configuration once, at its first use. A second call with the same arguments is a
    no-op; with different ones it logs a warning and changes nothing. liblsl cannot be asked which
    configuration it loaded, so LSL calls made through pylsl directly before this function cannot be
    detected: in poyo-rt, only this module calls pylsl, and it configures first.
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    path: Path | None = None
    if config_path is not None:
        path = Path(config_path).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"config_path: no readable file at {str(config_path)!r}")
    request = (scope, None if path is None else str(path))
    with _config_lock:
        if _config_state.request is not None:
            if _config_state.request != request:
                log.warning(
                    "LSL is already configured (%s); liblsl reads its configuration once per "
                    "process, so configure_lsl(scope=%r, config_path=%r) changes nothing",
                    _config_state.description,
                    scope,
                    config_path,
                )
            return
        _config_state.description = _apply_config(scope, path)
        _config_state.request = request
    log.info("LSL configuration: %s", _config_state.description)


def _apply_config(scope: str, path: Path | None) -> str:
    """Apply one configuration choice; return a description of what was applied."""
    if path is not None:
        pylsl.set_config_filename(str(path))
        if scope == "machine" and not _declares_machine_scope(path):
            log.warning(
                "LSL config %s does not set 'ResolveScope = machine': discovery may leave this machine",
                path,
            )
        return f"scope={scope}, file {path}"
    if scope == "site":
        return "scope=site, liblsl's own configuration lookup (LSLAPICFG, lsl_api.cfg) or defaults"
    env = os.environ.get("LSLAPICFG")
    if env:
        env_path = Path(env).expanduser()
        if env_path.is_file():
            if not _declares_machine_scope(env_path):
                log.warning(
                    "honouring LSLAPICFG=%s, which does not set 'ResolveScope = machine': "
                    "LSL discovery may leave this machine",
                    env,
                )
            return f"scope=machine requested, honouring LSLAPICFG={env}"
        log.warning(
            "LSLAPICFG=%s is not a readable file (liblsl would fall back to its network-wide "
            "defaults); applying the packaged machine-scope config instead",
            env,
        )
    cfg = packaged_config_path()
    pylsl.set_config_content(cfg.read_text(encoding="utf-8"))
    os.environ["LSLAPICFG"] = str(cfg)  # child processes (replay, tools) inherit machine scope
    return f"scope=machine, packaged {cfg}"


def lsl_config_description() -> str | None:
    """What :func:`configure_lsl` applied in this process, or None if it has not run yet."""
    return _config_state.description if _config_state.request is not None else None


def _ensure_configured() -> None:
    if _config_state.request is None:
        configure_lsl()


def local_clock() -> float:
    """This machine's LSL clock, in seconds (the time base of every spike time returned here)."""
    if _config_state.request is None:  # the config goes in before any liblsl call, the clock's included
        configure_lsl()
    return pylsl.local_clock()


# --------------------------------------------------------------------------------------------------
# Resolving
# --------------------------------------------------------------------------------------------------

_VISIBLE_WAIT_S = 0.5  # how long the not-found error path listens for the streams that do exist
_N_LISTED = 20


def _describe_info(info: pylsl.StreamInfo) -> str:
    return (
        f"name={info.name()!r} type={info.type()!r} source_id={info.source_id()!r} "
        f"host={info.hostname()!r}"
    )


def _xpath_literal(field: str, value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{field} cannot contain both ' and \" for an LSL query, got {value!r}")


def _unique_by_uid(infos: list[pylsl.StreamInfo]) -> list[pylsl.StreamInfo]:
    seen: set[str] = set()
    out = []
    for info in infos:
        if info.uid() not in seen:
            seen.add(info.uid())
            out.append(info)
    return out


def resolve_stream(
    name: str | None = None,
    type: str | None = None,  # noqa: A002 - LSL's own word for the content type
    source_id: str | None = None,
    timeout_s: float = 5.0,
    unique_wait_s: float = 0.6,
) -> pylsl.StreamInfo:
    """Find exactly one LSL stream matching all of the given properties.

    Args:
        name, type, source_id: stream properties to match exactly (at least one).
        timeout_s: how long to wait for a first match, in seconds.
        unique_wait_s: after the first match, how long to listen for a second one, in seconds
            (0 trusts the first answer). liblsl queries in rounds 0.5 s apart and, measured here,
            one outlet on the machine answers the first round within a millisecond while the others
            only answer the next one; so a check for ambiguity costs about 0.5 s.

    Returns:
        The stream's ``pylsl.StreamInfo`` (with an empty ``<desc>``; :class:`SpikeInlet` fetches it).

    Raises:
        StreamNotFoundError: nothing matched within ``timeout_s`` (the message lists the streams that
            are visible), or several streams matched (the message lists them: add ``source_id``).
    """
    query: dict[str, str] = {}
    for field, value in (("name", name), ("type", type), ("source_id", source_id)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{field} must be str or None, got {value!r}")
        if not value:
            raise ValueError(f"{field} must not be empty")
        query[field] = value
    if not query:
        raise ValueError("resolve_stream needs at least one of name, type, source_id")
    _positive("timeout_s", timeout_s)
    if not (isinstance(unique_wait_s, (int, float)) and 0 <= unique_wait_s < math.inf):
        raise ValueError(f"unique_wait_s must be a finite number of seconds >= 0, got {unique_wait_s!r}")
    _ensure_configured()
    asked = ", ".join(f"{k}={v!r}" for k, v in query.items())
    if len(query) == 1:
        ((prop, value),) = query.items()

        def query_lsl(minimum: int, wait_s: float) -> list[pylsl.StreamInfo]:
            return pylsl.resolve_byprop(prop, value, minimum=minimum, timeout=wait_s)

    else:
        predicate = " and ".join(f"{k}={_xpath_literal(k, v)}" for k, v in query.items())

        def query_lsl(minimum: int, wait_s: float) -> list[pylsl.StreamInfo]:
            return pylsl.resolve_bypred(predicate, minimum=minimum, timeout=wait_s)

    infos = _unique_by_uid(query_lsl(1, float(timeout_s)))
    if len(infos) == 1 and unique_wait_s > 0:
        infos = _unique_by_uid(infos + query_lsl(2, float(unique_wait_s)))
    if not infos:
        visible = _unique_by_uid(pylsl.resolve_streams(wait_time=_VISIBLE_WAIT_S))
        listed = "; ".join(_describe_info(i) for i in visible[:_N_LISTED]) or "none"
        more = f" (and {len(visible) - _N_LISTED} more)" if len(visible) > _N_LISTED else ""
        raise StreamNotFoundError(
            f"no LSL stream with {asked} appeared within {timeout_s:g} s; "
            f"visible streams: {listed}{more}"
        )
    if len(infos) > 1:
        listed = "; ".join(_describe_info(i) for i in infos[:_N_LISTED])
        raise StreamNotFoundError(
            f"{len(infos)} LSL streams match {asked}, which is ambiguous; add source_id to pick "
            f"one: {listed}"
        )
    return infos[0]


# --------------------------------------------------------------------------------------------------
# Outlet helper (tests, replay)
# --------------------------------------------------------------------------------------------------

_FORMATS = {
    "int8": (pylsl.cf_int8, np.int8),
    "int16": (pylsl.cf_int16, np.int16),
    "int32": (pylsl.cf_int32, np.int32),
    "int64": (pylsl.cf_int64, np.int64),
    "float32": (pylsl.cf_float32, np.float32),
    "double64": (pylsl.cf_double64, np.float64),
}
_FORMAT_NAMES = {
    pylsl.cf_undefined: "undefined",
    pylsl.cf_string: "string",
    **{code: name for name, (code, _) in _FORMATS.items()},
}
_NP_DTYPES = {code: dtype for code, dtype in _FORMATS.values()}
_LAYOUTS = ("events", "counts")


def make_spike_outlet(
    name: str,
    unit_ids: Sequence[str],
    source_id: str,
    layout: str = "events",
    rate_hz: float = 0.0,
    *,
    type: str = "Spikes",  # noqa: A002 - LSL's own word for the content type
    channel_format: str | None = None,
    channel_labels: Sequence[str] | None = None,
    unit_channels: Sequence[tuple[int, int]] | None = None,
    write_units: bool = True,
    chunk_size: int = 0,
    max_buffered: int = 360,
) -> pylsl.StreamOutlet:
    """Create an LSL outlet for spikes, with the unit list in ``<desc><units>``.

    Args:
        name: stream name. source_id: stable id of the source, so inlets can reconnect (non-empty).
        unit_ids: unit ids (U,), in unit-index order.
        layout: ``"events"``: one sample per spike, by default one int32 channel labelled ``unit``
            holding the unit index; ``"counts"``: one channel per unit (labelled with the unit id),
            counts per bin.
        rate_hz: nominal rate in Hz: 0 (irregular) for events, the bin rate (> 0) for counts.
        channel_format: ``int8|int16|int32|int64|float32|double64``; default int32.
        channel_labels: events only: labels of a wider sample (e.g. ``["ch_id", "unit_id", "wf_0"...]``).
        unit_channels: per unit, its ``(channel, unit-on-channel)`` pair, written as ``<channel>`` and
            ``<label>`` for (channel, unit) column layouts.
        write_units: False leaves ``<units>`` out (streams that only label their channels).
        chunk_size, max_buffered: passed to ``pylsl.StreamOutlet`` (max_buffered: s, or x100 samples
            for irregular streams).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(source_id, str) or not source_id:
        raise ValueError(f"source_id must be a non-empty str (inlets reconnect by it), got {source_id!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    ids = [str(u) for u in unit_ids]
    fmt = "int32" if channel_format is None else channel_format
    if fmt not in _FORMATS:
        raise ValueError(f"channel_format must be one of {tuple(_FORMATS)}, got {fmt!r}")
    if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz >= 0):
        raise ValueError(f"rate_hz must be a finite number >= 0, got {rate_hz!r}")
    if layout == "counts":
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0 (the bin rate) for a counts stream, got {rate_hz!r}")
        if channel_labels is not None:
            raise ValueError("channel_labels: a counts stream labels its channels with the unit ids")
        if not ids:
            raise ValueError("unit_ids must not be empty for a counts stream")
        labels = ids
    else:
        labels = ["unit"] if channel_labels is None else [str(c) for c in channel_labels]
        if not labels:
            raise ValueError("channel_labels must not be empty")
    if unit_channels is not None and len(unit_channels) != len(ids):
        raise ValueError(
            f"unit_channels has {len(unit_channels)} pairs but unit_ids has {len(ids)} ids"
        )
    _ensure_configured()
    info = pylsl.StreamInfo(
        name=name,
        type=type,
        channel_count=len(labels),
        nominal_srate=float(rate_hz),
        channel_format=_FORMATS[fmt][0],
        source_id=source_id,
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label in labels:
        channels.append_child("channel").append_child_value("label", label)
    if write_units:
        units = desc.append_child("units")
        for i, unit_id in enumerate(ids):
            unit = units.append_child("unit")
            unit.append_child_value("id", unit_id)
            if unit_channels is not None:
                channel, on_channel = unit_channels[i]
                unit.append_child_value("channel", str(int(channel)))
                unit.append_child_value("label", str(int(on_channel)))
    return pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=max_buffered)


# --------------------------------------------------------------------------------------------------
# Stream layout, parsed from the stream's full info
# --------------------------------------------------------------------------------------------------

DROP_REASONS = (
    "nonfinite_time",  # NaN/inf timestamp
    "future_time",  # later than local_clock() + max_future_s after clock correction
    "out_of_order",  # earlier than the latest timestamp already seen
    "non_integer_unit",  # unit (or channel) value NaN/inf/fractional (float formats)
    "negative_unit",  # unit (or channel) value < 0
    "unit_out_of_range",  # unit index >= number of units
    "unknown_unit",  # (channel, unit) pair not in the unit list
    "non_integer_count",  # counts: NaN/inf/fractional count
    "negative_count",  # counts: count < 0
    "count_too_large",  # counts: count > max_count_per_bin
    "missed_samples",  # counts: bins missing from the timestamps (estimate; see SpikeInlet)
)
"""Keys of :attr:`SpikeInlet.drops`. Events: one sample = one spike. Counts: the time reasons count
bins (samples), the count reasons count channel values, ``missed_samples`` counts bins."""

_PAIR_RE = re.compile(r"^\s*(\d+)_(\d+)\s*$")
Column = int | str | None


@dataclass(frozen=True)
class _StreamSpec:
    """Everything the pull path needs, checked at open time."""

    name: str
    stream_type: str
    source_id: str
    hostname: str
    uid: str
    layout: str  # "events" | "counts"
    n_channels: int
    channel_format: int
    srate_hz: float  # 0 for irregular
    unit_ids: tuple[str, ...]
    unit_col: int | None  # events: column of the unit value
    channel_col: int | None  # events, (channel, unit) pairs: column of the channel value
    pair_keys: np.ndarray | None  # sorted channel * (max_unit + 1) + unit, int64 (U,)
    pair_index: np.ndarray | None  # unit index of each sorted key, int64 (U,)
    max_channel: int
    max_unit: int

    def same_shape(self, other: _StreamSpec) -> str | None:
        """None if ``other`` can replace this stream on reconnect, else what differs."""
        for field in ("layout", "n_channels", "channel_format", "srate_hz", "unit_col", "channel_col"):
            if getattr(self, field) != getattr(other, field):
                return f"{field} {getattr(self, field)!r} -> {getattr(other, field)!r}"
        if self.unit_ids != other.unit_ids:
            return f"unit list of {len(self.unit_ids)} ids -> {len(other.unit_ids)} different ids"
        return None


def _child_elements(parent: pylsl.info.XMLElement, name: str) -> list[pylsl.info.XMLElement]:
    out = []
    node = parent.child(name)
    while not node.empty():
        out.append(node)
        node = node.next_sibling(name)
    return out


def _read_channel_labels(info: pylsl.StreamInfo) -> list[str] | None:
    channels = info.desc().child("channels")
    if channels.empty():
        return None
    labels = [c.child_value("label").strip() for c in _child_elements(channels, "channel")]
    return labels if len(labels) == info.channel_count() else None


def _read_units(info: pylsl.StreamInfo, stream: str) -> list[tuple[str, str, str]] | None:
    """``(id, channel, label)`` per ``<unit>`` (empty str where absent), or None without ``<units>``."""
    units = info.desc().child("units")
    if units.empty():
        return None
    out = []
    for i, unit in enumerate(_child_elements(units, "unit")):
        unit_id = unit.child_value("id").strip()
        channel = unit.child_value("channel").strip()
        label = unit.child_value("label").strip()
        if not unit_id:
            if not (channel and label):
                raise StreamFormatError(
                    f"stream {stream}: <units><unit> #{i} has neither <id> nor <channel> and <label>"
                )
            unit_id = f"{channel}_{label}"
        out.append((unit_id, channel, label))
    return out


def _resolve_column(field: str, column: Column, labels: list[str] | None, n: int, stream: str) -> int:
    if isinstance(column, bool) or not isinstance(column, (int, str)):
        raise TypeError(f"{field} must be an int column index or a channel label, got {column!r}")
    if isinstance(column, int):
        if not 0 <= column < n:
            raise StreamFormatError(
                f"stream {stream} has {n} channels; {field}={column} is not a column of it"
            )
        return column
    if labels is None:
        raise StreamFormatError(
            f"stream {stream} has no channel labels in <desc><channels>; {field}={column!r} cannot be "
            f"found: give a column index instead"
        )
    hits = [i for i, label in enumerate(labels) if label == column]
    if len(hits) != 1:
        what = "no channel" if not hits else f"{len(hits)} channels"
        raise StreamFormatError(
            f"stream {stream}: {what} labelled {field}={column!r}; labels: {labels[:12]!r}"
            + (" ..." if len(labels) > 12 else "")
        )
    return hits[0]


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _pair_table(
    units: list[tuple[str, str, str]], stream: str
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Sorted (channel, unit) keys -> unit index, from each unit's <channel>/<label> or "{ch}_{u}" id."""
    pairs = []
    for unit_id, channel, label in units:
        ch, un = _as_int(channel), _as_int(label)
        if ch is None or un is None:
            match = _PAIR_RE.match(unit_id)
            if match is None:
                raise StreamFormatError(
                    f"stream {stream}: unit {unit_id!r} has no integer <channel> and <label> and its id "
                    f"is not of the form '{{channel}}_{{unit}}'; cannot map (channel, unit) columns"
                )
            ch, un = int(match.group(1)), int(match.group(2))
        if ch < 0 or un < 0:
            raise StreamFormatError(f"stream {stream}: unit {unit_id!r} has a negative channel or unit")
        pairs.append((ch, un))
    if len(set(pairs)) != len(pairs):
        raise StreamFormatError(f"stream {stream}: two units share one (channel, unit) pair")
    max_ch = max((p[0] for p in pairs), default=0)
    max_un = max((p[1] for p in pairs), default=0)
    keys = np.array([c * (max_un + 1) + u for c, u in pairs], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    return keys[order], order.astype(np.int64), max_ch, max_un


def _parse_spec(
    info: pylsl.StreamInfo,
    layout: str,
    unit_column: Column,
    channel_column: Column,
    unit_ids: Sequence[str] | None,
) -> _StreamSpec:
    """Check the stream against the configured layout; raise StreamFormatError naming the problem."""
    stream = repr(info.name())
    n_channels = info.channel_count()
    fmt = info.channel_format()
    srate = float(info.nominal_srate())
    if fmt not in _NP_DTYPES:
        raise StreamFormatError(
            f"stream {stream} has channel format {_FORMAT_NAMES.get(fmt, fmt)!r}; spike streams must "
            f"be numeric ({', '.join(_FORMATS)})"
        )
    if layout == "auto":
        columns_given = unit_column is not None or channel_column is not None
        layout = "events" if columns_given or srate <= 0 else "counts"
    labels = _read_channel_labels(info)
    units = _read_units(info, stream)

    if units is not None:
        ids = [u[0] for u in units]
        if unit_ids is not None and list(unit_ids) != ids:
            raise StreamFormatError(
                f"stream {stream} publishes {len(ids)} units (e.g. {ids[:5]!r}) but unit_ids= gives "
                f"{len(unit_ids)} (e.g. {list(unit_ids)[:5]!r}); drop unit_ids= to use the stream's"
            )
    elif unit_ids is not None:
        ids = list(unit_ids)
        units = [(u, "", "") for u in ids]
    elif layout == "counts" and labels is not None and all(labels):
        ids = list(labels)
        units = [(u, "", "") for u in ids]
    else:
        where = "<desc><units> nor channel labels" if layout == "counts" else "<desc><units>"
        raise StreamFormatError(
            f"stream {stream} ({layout}) has neither {where}; pass unit_ids= to name its units"
        )
    if not ids:
        raise StreamFormatError(f"stream {stream} lists no units")
    if len(set(ids)) != len(ids):
        dups = sorted({u for u in ids if ids.count(u) > 1})
        raise StreamFormatError(f"stream {stream} has duplicate unit ids, e.g. {dups[:5]!r}")

    unit_col = channel_col = None
    pair_keys = pair_index = None
    max_ch = max_un = 0
    if layout == "counts":
        if unit_column is not None or channel_column is not None:
            raise ValueError("unit_column/channel_column apply to events streams, not counts")
        if n_channels != len(ids):
            raise StreamFormatError(
                f"counts stream {stream} has {n_channels} channels but {len(ids)} units; a counts "
                f"stream needs one channel per unit"
            )
    else:
        if unit_column is None:
            if channel_column is not None:
                raise ValueError("channel_column needs unit_column (the unit-on-channel column)")
            if n_channels != 1:
                raise StreamFormatError(
                    f"events stream {stream} has {n_channels} channels (labels "
                    f"{(labels or [])[:6]!r}); without unit_column a single unit-index channel is "
                    f"expected: set unit_column (and channel_column for (channel, unit) pairs)"
                )
            unit_col = 0
        else:
            unit_col = _resolve_column("unit_column", unit_column, labels, n_channels, stream)
            if channel_column is not None:
                channel_col = _resolve_column("channel_column", channel_column, labels, n_channels, stream)
                if channel_col == unit_col:
                    raise ValueError(
                        f"channel_column={channel_column!r} and unit_column={unit_column!r} are the "
                        f"same column {unit_col}"
                    )
                pair_keys, pair_index, max_ch, max_un = _pair_table(units, stream)
    return _StreamSpec(
        name=info.name(),
        stream_type=info.type(),
        source_id=info.source_id(),
        hostname=info.hostname(),
        uid=info.uid(),
        layout=layout,
        n_channels=n_channels,
        channel_format=fmt,
        srate_hz=srate,
        unit_ids=tuple(ids),
        unit_col=unit_col,
        channel_col=channel_col,
        pair_keys=pair_keys,
        pair_index=pair_index,
        max_channel=max_ch,
        max_unit=max_un,
    )


# --------------------------------------------------------------------------------------------------
# Inlet
# --------------------------------------------------------------------------------------------------

_EMPTY_T = np.empty(0, dtype=np.float64)
_EMPTY_T.flags.writeable = False
_EMPTY_U = np.empty(0, dtype=np.int64)
_EMPTY_U.flags.writeable = False


class SpikeInlet:
    """Pulls spikes from one LSL stream as ``(spike_times_s, unit_index)`` arrays.

    Layouts (``layout="auto"`` picks ``events`` for an irregular stream or when a column is given,
    else ``counts``):

    - ``events``: one sample per spike, the sample's timestamp is the spike time. The unit is the only
      channel (default), or column ``unit_column`` (index or channel label) of a wider sample, or the
      pair (``channel_column``, ``unit_column``) looked up in the unit list by each unit's
      ``<channel>``/``<label>`` (or, without them, by an id of the form ``"{channel}_{unit}"``). Other
      columns (waveforms) are ignored. Examples: Neural Data Simulator ``[unit, 0, 48 x waveform]``:
      ``unit_column=0``; Blackrock SPK: ``channel_column="ch_id", unit_column="unit_id"``.
    - ``counts``: one channel per unit, a count per bin; a count c > 0 becomes c spikes at that
      sample's timestamp (the bin's LSL timestamp as pushed, clock-corrected; no half-bin shift).

    Units: ids from ``<desc><units>``; else, for counts, the channel labels; else ``unit_ids=``.
    ``unit_index`` indexes :attr:`unit_ids` (map to a model with :func:`match_units`).

    Clock: returned times are on this machine's :func:`local_clock`. With ``clock_correction="auto"``
    (default) a stream from this host keeps its timestamps as they are (one clock: the offset is exactly
    0, and measuring it would only add -10..-50 µs of estimation noise); a stream from another host is
    corrected with ``time_correction()``, measured once at open (blocks about 0.64 s) and refreshed every
    ``clock_refresh_s`` without blocking. ``"always"`` / ``"never"`` force either behaviour.

    Bad samples are dropped, counted in :attr:`drops` (keys :data:`DROP_REASONS`) and logged at most
    once per ``log_interval_s``. A wrong channel count/format raises StreamFormatError at open.

    Outlet lost: once liblsl reports it (3-6 ms after the outlet's process died, measured on one
    host; a silent network loss can take longer), :attr:`connected` turns False and
    :attr:`lost_count` grows; with ``reconnect=True`` a background resolver looks for a new outlet with
    the same source_id (or the same name and type when the stream has none); once seen (liblsl
    queries every 0.5 s: measured 0.4-0.5 s after the new outlet started), :meth:`pull` opens it
    (blocking info/open calls bounded by ``reconnect_timeout_s``, a few ms on one host), checks it
    has the same layout and units, and counts :attr:`reconnect_count`. Samples pushed while no inlet is connected
    are lost; for regular (counts) streams the gap shows in ``drops["missed_samples"]``, estimated from
    timestamps; for events streams it cannot be counted. A returned outlet with another layout or unit
    list is refused (logged, :attr:`rejected_reconnects`).

    One owner thread: :meth:`pull` is not thread-safe.
    """

    def __init__(
        self,
        info: pylsl.StreamInfo,
        *,
        layout: str = "auto",
        unit_column: Column = None,
        channel_column: Column = None,
        unit_ids: Sequence[str] | None = None,
        max_chunk: int = 4096,
        max_buffer_samples: int = 100_000,
        open_timeout_s: float = 5.0,
        clock_refresh_s: float = 5.0,
        clock_correction: str = "auto",
        max_future_s: float = 1.0,
        max_count_per_bin: int = 1000,
        reconnect: bool = True,
        reconnect_poll_s: float = 0.05,
        reconnect_timeout_s: float = 0.5,
        log_interval_s: float = 5.0,
    ):
        """Open an inlet on ``info`` (from :func:`resolve_stream`) and check its layout.

        Args:
            layout: ``"auto" | "events" | "counts"``.
            unit_column, channel_column: events columns (int index or channel label), see class doc.
            unit_ids: unit ids (U,) for streams that publish none (must equal the stream's if it does).
            max_chunk: most samples one :meth:`pull` takes from liblsl; more stay queued for the next
                call (:attr:`backlogged` tells).
            max_buffer_samples: liblsl's inlet queue, in samples (converted to liblsl's unit: seconds
                for regular streams, hundreds of samples for irregular ones); liblsl drops the oldest
                samples silently beyond it.
            open_timeout_s: bound on each blocking step of opening (info, open, first clock offset), s.
            clock_refresh_s: seconds between non-blocking clock-offset refreshes.
            clock_correction: ``"auto"`` (correct streams from other hosts only), ``"always"``, ``"never"``.
            max_future_s: samples more than this many seconds after local_clock() are dropped.
            max_count_per_bin: counts above this are dropped (a corrupt count must not allocate GBs).
            reconnect: look for the outlet again after it is lost.
            reconnect_poll_s: seconds between checks of the background resolver while disconnected.
            reconnect_timeout_s: bound on the blocking info/open calls of a reconnect, s.
            log_interval_s: at most one drop warning per this many seconds.
        """
        if not isinstance(info, pylsl.StreamInfo):
            raise TypeError(f"info must be a pylsl.StreamInfo (see resolve_stream), got {info!r}")
        if layout not in ("auto", *_LAYOUTS):
            raise ValueError(f"layout must be 'auto', 'events' or 'counts', got {layout!r}")
        _positive("max_chunk", max_chunk, integer=True)
        _positive("max_buffer_samples", max_buffer_samples, integer=True)
        _positive("max_count_per_bin", max_count_per_bin, integer=True)
        for field, value in (
            ("open_timeout_s", open_timeout_s),
            ("clock_refresh_s", clock_refresh_s),
            ("max_future_s", max_future_s),
            ("reconnect_poll_s", reconnect_poll_s),
            ("reconnect_timeout_s", reconnect_timeout_s),
            ("log_interval_s", log_interval_s),
        ):
            _positive(field, value)
        if unit_ids is not None:
            if isinstance(unit_ids, str):
                raise TypeError(f"unit_ids must be a sequence of str, got a str {unit_ids!r}")
            unit_ids = [str(u) for u in unit_ids]
        self._layout_args = (layout, unit_column, channel_column, unit_ids)
        self.max_chunk = max_chunk
        self.max_buffer_samples = max_buffer_samples
        self.clock_refresh_s = float(clock_refresh_s)
        self.max_future_s = float(max_future_s)
        self.max_count_per_bin = max_count_per_bin
        self.reconnect = reconnect
        self.reconnect_poll_s = float(reconnect_poll_s)
        self.reconnect_timeout_s = float(reconnect_timeout_s)
        self.log_interval_s = float(log_interval_s)

        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        """Dropped samples per reason since open (see :data:`DROP_REASONS`)."""
        self.connected = False
        self.lost_count = 0
        self.reconnect_count = 0
        self.rejected_reconnects = 0
        self.last_disconnect_s: float | None = None  # duration of the latest outage, s
        self.n_samples = 0  # LSL samples pulled
        self.n_spikes = 0  # spikes returned
        self.backlogged = False  # the last pull filled max_chunk: more may be queued
        self.last_pull_local_s = math.nan  # local_clock() at the last pull, s

        self._closed = False
        self._inlet: pylsl.StreamInlet | None = None
        self._resolver: pylsl.ContinuousResolver | None = None
        self._gone_uids: set[str] = set()  # outlets lost or refused: never reconnect to them
        self._lost_at = math.nan
        self._next_resolve_check = 0.0
        self._offset_s = 0.0
        self._offset_valid = False
        self._next_clock_refresh = 0.0
        self._last_t = -math.inf  # latest accepted-in-order timestamp (local clock), s
        self._last_bin_t = math.nan  # counts: time of the latest accepted bin, s
        self._pending: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._next_log = -math.inf

        if clock_correction not in ("auto", "always", "never"):
            raise ValueError(f"clock_correction must be 'auto', 'always' or 'never', got {clock_correction!r}")
        _ensure_configured()
        self._spec, self._inlet = self._open(info, float(open_timeout_s), first=True)
        # Same host = same clock: the offset is exactly 0, while time_correction() would read
        # -10..-50 µs of estimation noise (STREAMING-NOTES) and block 0.64 s at open.
        same_host = self._spec.hostname == socket.gethostname()
        self._measure_clock = clock_correction == "always" or (clock_correction == "auto" and not same_host)
        if self._measure_clock:
            try:
                self._offset_s = self._inlet.time_correction(timeout=float(open_timeout_s))
            except (_LslTimeoutError, _LslLostError) as exc:
                self._inlet = None
                raise StreamNotFoundError(
                    f"stream {self._spec.name!r}: no clock offset within {open_timeout_s:g} s ({exc})"
                ) from exc
        self._offset_valid = True
        self._next_clock_refresh = pylsl.local_clock() + self.clock_refresh_s if self._measure_clock else math.inf
        self.connected = True
        self._alloc_buffers()
        log.info(
            "opened %s stream %r (source_id %r, host %r): %d channels %s, %d units, clock offset %.1f µs",
            self._spec.layout,
            self._spec.name,
            self._spec.source_id,
            self._spec.hostname,
            self._spec.n_channels,
            _FORMAT_NAMES[self._spec.channel_format],
            len(self._spec.unit_ids),
            self._offset_s * 1e6,
        )
        if not self._spec.source_id:
            log.warning(
                "stream %r has no source_id: a restarted outlet is found again by name and type only",
                self._spec.name,
            )

    # ---- opening -----------------------------------------------------------------------------

    def _max_buflen(self, info: pylsl.StreamInfo) -> int:
        srate = float(info.nominal_srate())
        if srate > 0:
            return max(1, math.ceil(self.max_buffer_samples / srate))  # seconds
        return max(1, math.ceil(self.max_buffer_samples / 100))  # hundreds of samples

    def _open(
        self, info: pylsl.StreamInfo, timeout_s: float, first: bool
    ) -> tuple[_StreamSpec, pylsl.StreamInlet]:
        """Create an inlet, fetch the full info, check the layout, subscribe. Raises on failure."""
        inlet = pylsl.StreamInlet(
            info,
            max_buflen=self._max_buflen(info),
            max_chunklen=0,
            recover=False,
            processing_flags=pylsl.proc_none,
        )
        try:
            full = inlet.info(timeout=timeout_s)
        except (_LslTimeoutError, _LslLostError) as exc:
            raise StreamNotFoundError(
                f"stream {info.name()!r} (source_id {info.source_id()!r}) did not send its description "
                f"within {timeout_s:g} s ({exc})"
            ) from exc
        spec = _parse_spec(full, *self._layout_args)
        if not first:
            change = self._spec.same_shape(spec)
            if change is not None:
                raise StreamFormatError(f"stream {spec.name!r} came back changed: {change}")
        try:
            inlet.open_stream(timeout=timeout_s)
        except (_LslTimeoutError, _LslLostError) as exc:
            raise StreamNotFoundError(
                f"stream {info.name()!r} could not be subscribed within {timeout_s:g} s ({exc})"
            ) from exc
        return spec, inlet

    def _alloc_buffers(self) -> None:
        spec = self._spec
        self._buf = np.empty((self.max_chunk, spec.n_channels), dtype=_NP_DTYPES[spec.channel_format])
        self._is_float = np.issubdtype(self._buf.dtype, np.floating)
        if spec.layout == "counts":
            n_units = len(spec.unit_ids)
            # unit index of every value of a (max_chunk, U) chunk, flattened: repeated, never rebuilt
            self._unit_grid = np.tile(np.arange(n_units, dtype=np.int64), self.max_chunk)

    # ---- public state ------------------------------------------------------------------------

    @property
    def unit_ids(self) -> list[str]:
        """Unit ids (U,), in unit-index order."""
        return list(self._spec.unit_ids)

    @property
    def layout(self) -> str:
        """``"events"`` or ``"counts"``."""
        return self._spec.layout

    @property
    def stream_name(self) -> str:
        return self._spec.name

    @property
    def source_id(self) -> str:
        return self._spec.source_id

    @property
    def nominal_srate_hz(self) -> float:
        """The stream's nominal rate in Hz; 0 for irregular streams."""
        return self._spec.srate_hz

    @property
    def clock_offset_s(self) -> float:
        """Current time correction (s) added to the stream's timestamps."""
        return self._offset_s

    # ---- pulling -----------------------------------------------------------------------------

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the spikes that arrived since the last call, without blocking.

        Returns:
            spike_times_s: float64 (N,), seconds on this machine's :func:`local_clock`, non-decreasing.
            unit_index: int64 (N,), index into :attr:`unit_ids`.
            Empty (read-only) arrays when nothing arrived or the stream is disconnected.
        """
        if self._closed:
            raise RuntimeError(f"pull() on closed SpikeInlet of stream {self._spec.name!r}")
        now = pylsl.local_clock()
        self.last_pull_local_s = now
        self.backlogged = False
        if not self.connected:
            self._try_reconnect(now)
            if not self.connected:
                return _EMPTY_T, _EMPTY_U
        if not self._offset_valid or now >= self._next_clock_refresh:
            self._refresh_offset(now)
            if not self.connected or not self._offset_valid:
                return _EMPTY_T, _EMPTY_U  # samples wait in liblsl's queue until the offset is known
        try:
            data, stamps = self._inlet.pull_chunk(
                timeout=0.0, max_samples=self.max_chunk, dest_obj=self._buf, as_numpy=True
            )
        except _LslLostError:
            self._on_lost(now)
            return _EMPTY_T, _EMPTY_U
        n = stamps.shape[0]
        if n == 0:
            return _EMPTY_T, _EMPTY_U
        self.n_samples += n
        self.backlogged = n == self.max_chunk
        times = stamps + self._offset_s  # (n,) local clock, s
        ok = self._check_times(times, now)
        if self._spec.layout == "counts":
            spike_t, spike_u = self._counts_to_spikes(data, times, ok)
        else:
            spike_t, spike_u = self._events_to_spikes(data, times, ok)
        self.n_spikes += spike_t.shape[0]
        if self._next_log <= now and any(self._pending.values()):
            self._log_drops(now)
        return spike_t, spike_u

    def _drop(self, ok: np.ndarray, bad: np.ndarray, reason: str) -> None:
        """Clear ``ok`` where ``bad`` (only for samples still ok) and count them under ``reason``."""
        newly = bad & ok
        k = int(np.count_nonzero(newly))
        if k:
            ok &= ~newly
            self.drops[reason] += k
            self._pending[reason] += k

    def _check_times(self, times: np.ndarray, now: float) -> np.ndarray:
        """Mask (n,) of samples with finite, not-future, in-order times; updates the order state."""
        ok = np.ones(times.shape[0], dtype=bool)
        first, last = float(times[0]), float(times[-1])
        if (
            math.isfinite(first)
            and first >= self._last_t
            and last <= now + self.max_future_s
            and bool((times[1:] >= times[:-1]).all())
        ):  # the usual case: all finite (sorted between two finite ends) and in order
            self._last_t = last
            return ok
        with np.errstate(invalid="ignore"):
            self._drop(ok, ~np.isfinite(times), "nonfinite_time")
            self._drop(ok, times > now + self.max_future_s, "future_time")
        candidate = np.where(ok, times, -np.inf)
        running_max = np.maximum.accumulate(candidate)
        prior = np.empty_like(running_max)  # latest earlier timestamp, per sample
        prior[0] = self._last_t
        np.maximum(running_max[:-1], self._last_t, out=prior[1:])
        self._drop(ok, times < prior, "out_of_order")
        self._last_t = max(self._last_t, float(running_max[-1]))
        return ok

    def _check_index_values(self, values: np.ndarray, ok: np.ndarray) -> None:
        """Drop non-integer and negative unit/channel values (any numeric dtype)."""
        if self._is_float:
            with np.errstate(invalid="ignore"):
                self._drop(ok, ~np.isfinite(values) | (values != np.floor(values)), "non_integer_unit")
        with np.errstate(invalid="ignore"):
            self._drop(ok, values < 0, "negative_unit")

    def _events_to_spikes(
        self, data: np.ndarray, times: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self._spec
        unit_vals = data[:, spec.unit_col]  # (n,) stream dtype
        if spec.channel_col is None and not self._is_float and ok.all():
            if unit_vals.min() >= 0 and unit_vals.max() < len(spec.unit_ids):  # the usual case
                return times, unit_vals.astype(np.int64)  # times is fresh: stamps + offset
        self._check_index_values(unit_vals, ok)
        if spec.channel_col is None:
            with np.errstate(invalid="ignore"):
                self._drop(ok, unit_vals >= len(spec.unit_ids), "unit_out_of_range")
            return times[ok], unit_vals[ok].astype(np.int64)
        chan_vals = data[:, spec.channel_col]
        self._check_index_values(chan_vals, ok)
        with np.errstate(invalid="ignore"):
            self._drop(ok, (chan_vals > spec.max_channel) | (unit_vals > spec.max_unit), "unknown_unit")
        keys = chan_vals[ok].astype(np.int64) * (spec.max_unit + 1) + unit_vals[ok].astype(np.int64)
        pos = np.searchsorted(spec.pair_keys, keys)
        pos_c = np.minimum(pos, spec.pair_keys.shape[0] - 1)
        found = spec.pair_keys[pos_c] == keys
        if not found.all():
            missing = np.zeros_like(ok)
            missing[np.flatnonzero(ok)[~found]] = True
            self._drop(ok, missing, "unknown_unit")
        return times[ok], spec.pair_index[pos_c[found]]

    def _counts_to_spikes(
        self, data: np.ndarray, times: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self._spec
        bin_t = times[ok]  # (m,) accepted bins
        if spec.srate_hz > 0 and bin_t.shape[0]:
            self._count_missed(bin_t)
        counts = data[ok]  # (m, U) copy, stream dtype
        if self._is_float:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(counts) | (counts != np.floor(counts))
            self._count_values(bad, counts, "non_integer_count")
        self._count_values(counts < 0, counts, "negative_count")
        self._count_values(counts > self.max_count_per_bin, counts, "count_too_large")
        flat = counts.ravel().astype(np.int64)  # (m*U,)
        n_units = len(spec.unit_ids)
        units = np.repeat(self._unit_grid[: flat.shape[0]], flat)
        spike_t = np.repeat(bin_t, flat.reshape(-1, n_units).sum(axis=1))
        return spike_t, units

    def _count_values(self, bad: np.ndarray, counts: np.ndarray, reason: str) -> None:
        k = int(np.count_nonzero(bad))
        if k:
            counts[bad] = 0
            self.drops[reason] += k
            self._pending[reason] += k

    def _count_missed(self, bin_t: np.ndarray) -> None:
        """Estimate bins missing between accepted bins of a regular stream (gaps > 1.5 periods)."""
        prev = bin_t[0] if math.isnan(self._last_bin_t) else self._last_bin_t
        steps = np.diff(bin_t, prepend=prev) * self._spec.srate_hz  # (m,) in bin periods
        gaps = steps[steps > 1.5]
        if gaps.shape[0]:
            k = int(np.rint(gaps).sum()) - gaps.shape[0]
            self.drops["missed_samples"] += k
            self._pending["missed_samples"] += k
        self._last_bin_t = float(bin_t[-1])

    def _log_drops(self, now: float) -> None:
        recent = {k: v for k, v in self._pending.items() if v}
        log.warning(
            "stream %r: dropped %s since the last report; totals %s",
            self._spec.name,
            recent,
            {k: v for k, v in self.drops.items() if v},
        )
        for k in recent:
            self._pending[k] = 0
        self._next_log = now + self.log_interval_s

    # ---- clock, loss, reconnect ------------------------------------------------------------

    def _refresh_offset(self, now: float) -> None:
        """Non-blocking time_correction(): liblsl returns its latest background estimate."""
        if not self._measure_clock:
            self._offset_valid = True
            self._next_clock_refresh = math.inf
            return
        try:
            self._offset_s = self._inlet.time_correction(timeout=0.0)
            self._offset_valid = True
        except _LslTimeoutError:
            pass  # no estimate yet (fresh connection): keep the old one, or wait if none is valid
        except _LslLostError:
            self._on_lost(now)
            return
        self._next_clock_refresh = now + self.clock_refresh_s

    def _on_lost(self, now: float) -> None:
        self.connected = False
        self.lost_count += 1
        self._lost_at = now
        self._gone_uids.add(self._spec.uid)
        self._inlet = None
        log.warning(
            "stream %r (source_id %r) lost (%d so far)%s",
            self._spec.name,
            self._spec.source_id,
            self.lost_count,
            "; looking for it again" if self.reconnect else "; reconnect disabled",
        )
        if self.reconnect:
            _ensure_configured()
            spec = self._spec
            if spec.source_id:
                self._resolver = pylsl.ContinuousResolver(prop="source_id", value=spec.source_id)
            else:
                pred = f"name={_xpath_literal('name', spec.name)}"
                if spec.stream_type:
                    pred += f" and type={_xpath_literal('type', spec.stream_type)}"
                self._resolver = pylsl.ContinuousResolver(pred=pred)
            self._next_resolve_check = now

    def _try_reconnect(self, now: float) -> None:
        if self._resolver is None or now < self._next_resolve_check:
            return
        self._next_resolve_check = now + self.reconnect_poll_s
        for info in self._resolver.results():
            if info.uid() in self._gone_uids:
                continue
            try:
                spec, inlet = self._open(info, self.reconnect_timeout_s, first=False)
            except StreamNotFoundError as exc:
                log.debug("reconnect attempt failed, will retry: %s", exc)
                continue
            except StreamFormatError as exc:
                self._gone_uids.add(info.uid())
                self.rejected_reconnects += 1
                log.error("not reconnecting: %s", exc)
                continue
            same_host = spec.hostname == self._spec.hostname
            self._spec, self._inlet = spec, inlet
            self._resolver = None
            self.connected = True
            self.reconnect_count += 1
            self.last_disconnect_s = now - self._lost_at
            # The same host keeps its clock: the old offset stays right until the refresh.
            self._offset_valid = same_host
            self._next_clock_refresh = now if same_host else 0.0
            log.warning(
                "stream %r reconnected after %.2f s (reconnect %d); samples pushed meanwhile are lost",
                spec.name,
                self.last_disconnect_s,
                self.reconnect_count,
            )
            return

    # ---- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Unsubscribe and release the inlet. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:  # noqa: BLE001 - closing a lost inlet must not raise
                log.debug("close_stream failed", exc_info=True)
        self._inlet = None
        self._resolver = None
        self.connected = False

    def __enter__(self) -> SpikeInlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SpikeInlet(stream={self._spec.name!r}, layout={self._spec.layout!r}, "
            f"units={len(self._spec.unit_ids)}, connected={self.connected}, "
            f"lost={self.lost_count}, reconnects={self.reconnect_count})"
        )


def open_spike_inlet(
    name: str | None = None,
    type: str | None = None,  # noqa: A002 - LSL's own word for the content type
    source_id: str | None = None,
    timeout_s: float = 5.0,
    unique_wait_s: float = 0.6,
    **inlet_kwargs: object,
) -> SpikeInlet:
    """:func:`resolve_stream` then :class:`SpikeInlet` (keyword arguments go to the inlet)."""
    info = resolve_stream(name, type, source_id, timeout_s, unique_wait_s)
    return SpikeInlet(info, **inlet_kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Behaviour outlet (replay)
# --------------------------------------------------------------------------------------------------


def make_behavior_outlet(
    name: str,
    labels: Sequence[str],
    rate_hz: float,
    source_id: str,
    *,
    type: str = "Behavior",  # noqa: A002 - LSL's own word for the content type
    unit: str | None = None,
    extra_desc: dict[str, str] | None = None,
    chunk_size: int = 0,
    max_buffered: int = 360,
) -> pylsl.StreamOutlet:
    """Create a float32 LSL outlet for a behaviour time series (e.g. hand velocity), D channels.

    Args:
        name: stream name. source_id: stable id of the source (non-empty).
        labels: D channel labels, written to ``<desc><channels><channel><label>`` (and ``<unit>``
            when ``unit`` is given, e.g. ``"m/s"``).
        rate_hz: nominal sampling rate in Hz (> 0 for a regular stream; 0 declares it irregular).
        extra_desc: optional ``{key: value}`` written as ``<desc><replay><key>value</key>...`` (text).
        chunk_size, max_buffered: passed to ``pylsl.StreamOutlet`` (max_buffered in seconds for a
            regular stream, hundreds of samples for an irregular one).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(source_id, str) or not source_id:
        raise ValueError(f"source_id must be a non-empty str (inlets reconnect by it), got {source_id!r}")
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of str, got a str {labels!r}")
    label_list = [str(x) for x in labels]
    if not label_list:
        raise ValueError("labels must name at least one behaviour channel, got []")
    if isinstance(rate_hz, bool) or not (
        isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz >= 0
    ):
        raise ValueError(f"rate_hz must be a finite number >= 0, got {rate_hz!r}")
    _ensure_configured()
    info = pylsl.StreamInfo(
        name=name,
        type=type,
        channel_count=len(label_list),
        nominal_srate=float(rate_hz),
        channel_format=pylsl.cf_float32,
        source_id=source_id,
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label in label_list:
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        if unit is not None:
            channel.append_child_value("unit", str(unit))
    if extra_desc:
        replay = desc.append_child("replay")
        for key, value in extra_desc.items():
            replay.append_child_value(str(key), str(value))
    return pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=max_buffered)


__all__ += ["make_behavior_outlet"]

"""A spike stream's layout, read from its full info and checked once at open: events or counts, which
column holds the unit (or the (channel, unit) pair), the unit list from ``<desc>``.

Stream metadata read here (and written by :func:`~poyo_rt.stream.lsl.outlets.make_spike_outlet`)::

    <desc>
      <channels><channel><label>unit</label></channel>...</channels>
      <units>
        <unit><id>elec3_u1</id><channel>3</channel><label>1</label></unit>   (channel, label optional)
        ...
      </units>
    </desc>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pylsl

from poyo_rt.errors import StreamFormatError

# numeric channel formats a spike stream may use: name -> (LSL format code, numpy dtype of a pulled sample)
FORMATS = {
    "int8": (pylsl.cf_int8, np.int8),
    "int16": (pylsl.cf_int16, np.int16),
    "int32": (pylsl.cf_int32, np.int32),
    "int64": (pylsl.cf_int64, np.int64),
    "float32": (pylsl.cf_float32, np.float32),
    "double64": (pylsl.cf_double64, np.float64),
}
FORMAT_NAMES = {  # LSL format code -> name, for messages
    pylsl.cf_undefined: "undefined",
    pylsl.cf_string: "string",
    **{code: name for name, (code, _) in FORMATS.items()},
}
NP_DTYPES = {code: dtype for code, dtype in FORMATS.values()}
LAYOUTS = ("events", "counts")  # one sample per spike | one channel per unit, a count per bin


_PAIR_RE = re.compile(r"^\s*(\d+)_(\d+)\s*$")
Column = int | str | None


@dataclass(frozen=True)
class StreamSpec:
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

    def same_shape(self, other: StreamSpec) -> str | None:
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


def parse_spec(
    info: pylsl.StreamInfo,
    layout: str,
    unit_column: Column,
    channel_column: Column,
    unit_ids: Sequence[str] | None,
) -> StreamSpec:
    """Check the stream against the configured layout; raise StreamFormatError naming the problem."""
    stream = repr(info.name())
    n_channels = info.channel_count()
    fmt = info.channel_format()
    srate = float(info.nominal_srate())
    if fmt not in NP_DTYPES:
        raise StreamFormatError(
            f"stream {stream} has channel format {FORMAT_NAMES.get(fmt, fmt)!r}; spike streams must "
            f"be numeric ({', '.join(FORMATS)})"
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
                f"stream {stream} publishes {len(ids)} units (e.g. {ids[:5]!r}) but unit_ids= "
                f"(input.unit_ids) gives {len(unit_ids)} (e.g. {list(unit_ids)[:5]!r}); drop it to use "
                "the stream's"
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
            f"stream {stream} ({layout}) has neither {where}; name its units in "
            "unit-index order with unit_ids= (a run config's input.unit_ids)"
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
                    f"expected: set unit_column (and channel_column for (channel, unit) pairs; in a run config "
                    f"input.unit_column, input.channel_column)"
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
        if srate > 0:  # a regular stream carries bins, not spikes: read as events, a count would become a unit
            raise StreamFormatError(
                f"stream {stream} is regular ({srate:g} Hz, {n_channels} channels): an events stream is irregular, "
                "one sample per spike; a stream of binned counts, one channel per unit, needs layout counts "
                "(input.layout: counts)"
            )
    return StreamSpec(
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

"""Outlets: spikes with their unit list in ``<desc>`` (tests, replay, demo), behaviour (replay) and the decoder's
own output (``output.lsl_name``: for LabRecorder)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pylsl

from poyo_rt.stream.lsl.config import ensure_configured
from poyo_rt.stream.lsl.layout import FORMATS, LAYOUTS


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
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    ids = [str(u) for u in unit_ids]
    fmt = "int32" if channel_format is None else channel_format
    if fmt not in FORMATS:
        raise ValueError(f"channel_format must be one of {tuple(FORMATS)}, got {fmt!r}")
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
    ensure_configured()
    info = pylsl.StreamInfo(
        name=name,
        type=type,
        channel_count=len(labels),
        nominal_srate=float(rate_hz),
        channel_format=FORMATS[fmt][0],
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


def make_behavior_outlet(
    name: str,
    labels: Sequence[str],
    rate_hz: float,
    source_id: str,
    *,
    type: str = "Behavior",  # noqa: A002 - LSL's own word for the content type
    unit: str | None = None,
    extra_desc: dict[str, str] | None = None,
    desc_section: str = "replay",
    chunk_size: int = 0,
    max_buffered: int = 360,
) -> pylsl.StreamOutlet:
    """Create a float32 LSL outlet for a behaviour time series (e.g. hand velocity), D channels.

    Args:
        name: stream name. source_id: stable id of the source (non-empty).
        labels: D channel labels, written to ``<desc><channels><channel><label>`` (and ``<unit>``
            when ``unit`` is given, e.g. ``"m/s"``).
        rate_hz: nominal sampling rate in Hz (> 0 for a regular stream; 0 declares it irregular).
        extra_desc: optional ``{key: value}`` written as ``<desc><{desc_section}><key>value</key>...`` (text).
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
    ensure_configured()
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
        section = desc.append_child(desc_section)
        for key, value in extra_desc.items():
            section.append_child_value(str(key), str(value))
    return pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=max_buffered)


class DecodedOutlet:
    """The decoded values as an LSL stream, so that a recorder (LabRecorder) keeps them beside the spikes and
    the behaviour, on one clock: irregular, float32, one channel per output dimension, one sample per output
    query stamped with the query's time on the LSL clock (the same times the ZeroMQ messages carry)."""

    def __init__(self, name: str, labels: Sequence[str], source_id: str, *, extra_desc: dict[str, str] | None = None):
        self.outlet = make_behavior_outlet(name, labels, 0.0, source_id, type="Decoded", extra_desc=extra_desc,
                                           desc_section="decoder")
        self.n_channels = len(labels)
        self.pushed = 0  # samples pushed

    def push(self, values: np.ndarray, times_s: np.ndarray) -> None:
        """Push one tick's outputs: ``values`` (N_out, D), ``times_s`` (N_out,) LSL seconds."""
        block = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, self.n_channels)
        self.outlet.push_chunk(block, np.asarray(times_s, dtype=np.float64).reshape(-1).tolist())
        self.pushed += block.shape[0]

    def close(self) -> None:
        """Release the outlet (inlets see the stream end)."""
        self.outlet = None

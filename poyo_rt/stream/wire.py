"""Wire format v1 of one decoded tick, as published on ZeroMQ (pure: no zmq import).

One engine tick is one ZeroMQ multipart message of three frames::

    frame 0  topic    bytes, the decoder name (e.g. b"poyo")
    frame 1  header   little-endian binary, 56 fixed bytes + variable sections (below)
    frame 2  payload  float32 little-endian, shape (N_out, D), C order

Header layout (all little-endian, every field naturally aligned)::

    off  size  type       field
    0    4     char[4]    magic = b"PYRT"
    4    2     uint16     version = 1
    6    2     uint16     flags (bit 0 token overflow, 1 deadline missed, 2 stream disconnected)
    8    8     uint64     seq, consecutive per publisher (a gap = messages lost)
    16   8     float64    window_end_s, LSL clock seconds
    24   8     float64    newest_spike_s, LSL clock seconds (NaN if the window had no spike)
    32   8     float64    t_send_s, LSL clock seconds when the message was handed to ZeroMQ
    40   4     uint32     n_out (N)
    44   4     uint32     dim (D)
    48   2     uint16     n_counters (C)
    50   2     uint16     n_stages (S)
    52   4     uint32     header_bytes = 56 + 8*N + 24*C + 24*S
    56   8*N   float64[N] output timestamps, LSL clock seconds
    ..   24*C  C x {char name[16]; uint64 value}    drop counters, cumulative since start
    ..   24*S  S x {char name[16]; float64 value}   stage latencies, microseconds (NaN = not measured)

Names are ASCII, 1..16 bytes, NUL-padded. ``docs/wire-format.md`` is the full spec.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

import numpy as np

MAGIC = b"PYRT"
VERSION = 1
NAME_BYTES = 16
FIXED = struct.Struct("<4sHHQdddIIHHI")  # 56 bytes
FIXED_BYTES = FIXED.size
ENTRY_BYTES = NAME_BYTES + 8
MAX_COUNT_U16 = 0xFFFF

#: Conventional drop counter names (any other valid name is allowed).
DROP_COUNTERS = ("nan_time", "out_of_order", "unknown_unit", "overflow", "send_dropped")
#: Conventional stage names, in pipeline order (any other valid name is allowed).
STAGES = ("pull", "buffer", "tokenize", "h2d", "forward", "d2h", "publish")


class TickFlags(IntFlag):
    """Bits of the header's ``flags`` field. Readers ignore bits they do not know."""

    TOKEN_OVERFLOW = 1 << 0
    DEADLINE_MISSED = 1 << 1
    STREAM_DISCONNECTED = 1 << 2


class WireFormatError(ValueError):
    """A message does not follow the wire format. The message names the field and the bad value."""


class UnsupportedVersionError(WireFormatError):
    """The header carries a format version this reader does not know: skip the message."""

    def __init__(self, version: int):
        self.version = version
        super().__init__(f"header.version: unsupported wire format version {version} (this reader knows {VERSION})")


@dataclass(frozen=True, eq=False)
class TickMessage:
    """One decoded tick.

    Times are LSL-clock seconds (float64); latencies are microseconds.
    ``output_times_s`` is (N_out,) float64, ``values`` is (N_out, D) float32; both read-only.
    ``counters`` are cumulative since the publisher started. ``t_recv_s`` is the receipt time
    stamped by the subscriber (NaN when the message did not come off a socket).
    """

    topic: str
    seq: int
    window_end_s: float
    newest_spike_s: float
    t_send_s: float
    flags: int
    output_times_s: np.ndarray
    values: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)
    stages_us: dict[str, float] = field(default_factory=dict)
    version: int = VERSION
    t_recv_s: float = math.nan

    @property
    def n_out(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def send_latency_us(self) -> float:
        """``t_send_s - newest_spike_s`` in µs (NaN if either is unknown)."""
        return (self.t_send_s - self.newest_spike_s) * 1e6

    @property
    def recv_latency_us(self) -> float:
        """``t_recv_s - newest_spike_s`` in µs: end to end, spike to receipt (NaN if unknown)."""
        return (self.t_recv_s - self.newest_spike_s) * 1e6

    def has_flag(self, flag: TickFlags) -> bool:
        return bool(self.flags & flag)


@functools.lru_cache(maxsize=1024)
def _pack_name(name: str, what: str) -> bytes:
    """Validate a counter/stage name and return it NUL-padded to 16 bytes (cached: names repeat)."""
    if not isinstance(name, str):
        raise WireFormatError(f"{what} name: expected str, got {type(name).__name__} {name!r}")
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise WireFormatError(f"{what} name {name!r}: must be ASCII") from None
    if not 1 <= len(raw) <= NAME_BYTES or b"\0" in raw:
        raise WireFormatError(f"{what} name {name!r}: must be 1..{NAME_BYTES} ASCII bytes without NUL")
    return raw.ljust(NAME_BYTES, b"\0")


@functools.lru_cache(maxsize=256)
def _entries_struct(n_counters: int, n_stages: int) -> struct.Struct:
    return struct.Struct("<" + "16sQ" * n_counters + "16sd" * n_stages)


def _topic_bytes(topic: str | bytes) -> bytes:
    if isinstance(topic, bytes):
        raw = topic
    elif isinstance(topic, str):
        raw = topic.encode("utf-8")
    else:
        raise WireFormatError(f"topic: expected str or bytes, got {type(topic).__name__}")
    if not raw:
        raise WireFormatError("topic: must not be empty")
    return raw


def encode_tick(
    *,
    topic: str | bytes,
    seq: int,
    window_end_s: float,
    newest_spike_s: float,
    output_times_s: Any,
    values: Any,
    counters: Mapping[str, int] | None = None,
    stages_us: Mapping[str, float] | None = None,
    flags: int = 0,
    t_send_s: float = math.nan,
) -> list[bytes]:
    """Encode one tick as the three frames ``[topic, header, payload]``.

    ``output_times_s``: (N_out,) LSL seconds; ``values``: (N_out, D), cast to float32;
    ``counters``: name -> cumulative count (uint64); ``stages_us``: name -> latency (µs).
    Raises ``WireFormatError`` (a ``ValueError``) naming the bad field.
    """
    topic_raw = _topic_bytes(topic)
    vals = np.ascontiguousarray(values, dtype="<f4")
    if vals.ndim != 2:
        raise WireFormatError(f"values: expected shape (N_out, D), got shape {vals.shape}")
    times = np.ascontiguousarray(output_times_s, dtype="<f8")
    if times.ndim != 1 or times.shape[0] != vals.shape[0]:
        raise WireFormatError(
            f"output_times_s: expected shape ({vals.shape[0]},) to match values {vals.shape}, got {times.shape}"
        )
    n_out, dim = vals.shape
    if n_out > 0xFFFFFFFF or dim > 0xFFFFFFFF:
        raise WireFormatError(f"values: shape {vals.shape} exceeds uint32")
    if not 0 <= seq <= 0xFFFFFFFFFFFFFFFF:
        raise WireFormatError(f"seq: {seq} is not a uint64")
    if not 0 <= flags <= 0xFFFF:
        raise WireFormatError(f"flags: {flags} is not a uint16")
    counters = counters or {}
    stages_us = stages_us or {}
    if len(counters) > MAX_COUNT_U16 or len(stages_us) > MAX_COUNT_U16:
        raise WireFormatError("counters/stages_us: at most 65535 entries each")

    args: list[Any] = []
    for name, value in counters.items():
        ivalue = int(value)
        if not 0 <= ivalue <= 0xFFFFFFFFFFFFFFFF:
            raise WireFormatError(f"counters[{name!r}]: {value!r} is not a uint64")
        args.append(_pack_name(name, "counter"))
        args.append(ivalue)
    for name, value in stages_us.items():
        args.append(_pack_name(name, "stage"))
        args.append(float(value))
    entries = _entries_struct(len(counters), len(stages_us)).pack(*args)

    header_bytes = FIXED_BYTES + 8 * n_out + len(entries)
    fixed = FIXED.pack(
        MAGIC, VERSION, int(flags), int(seq), float(window_end_s), float(newest_spike_s), float(t_send_s),
        n_out, dim, len(counters), len(stages_us), header_bytes,
    )
    return [topic_raw, b"".join((fixed, times.tobytes(), entries)), vals.tobytes()]


def decode_tick(frames: Sequence[Any], *, t_recv_s: float = math.nan) -> TickMessage:
    """Decode ``[topic, header, payload]`` (bytes-like frames) into a ``TickMessage``.

    Strict: wrong frame count, magic, version, or any length mismatch raises ``WireFormatError``
    (``UnsupportedVersionError`` for an unknown version, which readers should skip and count).
    """
    if len(frames) != 3:
        raise WireFormatError(f"frames: expected 3 (topic, header, payload), got {len(frames)}")
    topic_raw, header, payload = (bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames)
    try:
        topic = topic_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireFormatError(f"topic: not UTF-8: {topic_raw[:32]!r}") from None
    if len(header) < 6:
        raise WireFormatError(f"header: {len(header)} bytes, too short to hold magic and version")
    if header[:4] != MAGIC:
        raise WireFormatError(f"header.magic: expected {MAGIC!r}, got {header[:4]!r}")
    (version,) = struct.unpack_from("<H", header, 4)
    if version != VERSION:
        raise UnsupportedVersionError(version)
    if len(header) < FIXED_BYTES:
        raise WireFormatError(f"header: {len(header)} bytes, shorter than the {FIXED_BYTES}-byte fixed part")
    (_, _, flags, seq, window_end_s, newest_spike_s, t_send_s,
     n_out, dim, n_counters, n_stages, header_bytes) = FIXED.unpack_from(header, 0)
    expected = FIXED_BYTES + 8 * n_out + ENTRY_BYTES * (n_counters + n_stages)
    if header_bytes != expected:
        raise WireFormatError(
            f"header.header_bytes: field says {header_bytes}, but n_out={n_out}, n_counters={n_counters}, "
            f"n_stages={n_stages} imply {expected}"
        )
    if len(header) != expected:
        raise WireFormatError(f"header: {len(header)} bytes, expected {expected}")
    if len(payload) != 4 * n_out * dim:
        raise WireFormatError(
            f"payload: {len(payload)} bytes, expected {4 * n_out * dim} (float32 x n_out={n_out} x dim={dim})"
        )

    times = np.frombuffer(header, dtype="<f8", count=n_out, offset=FIXED_BYTES)
    values = np.frombuffer(payload, dtype="<f4").reshape(n_out, dim)
    off = FIXED_BYTES + 8 * n_out
    counters: dict[str, int] = {}
    stages_us: dict[str, float] = {}
    for i in range(n_counters + n_stages):
        is_counter = i < n_counters
        raw, value = struct.unpack_from("<16sQ" if is_counter else "<16sd", header, off)
        off += ENTRY_BYTES
        name_raw = raw.rstrip(b"\0")
        what = "counter" if is_counter else "stage"
        if not name_raw or b"\0" in name_raw:
            raise WireFormatError(f"header.{what}s[{i}]: invalid name {raw!r}")
        try:
            name = name_raw.decode("ascii")
        except UnicodeDecodeError:
            raise WireFormatError(f"header.{what}s[{i}]: name not ASCII: {raw!r}") from None
        target: dict[str, Any] = counters if is_counter else stages_us
        if name in target:
            raise WireFormatError(f"header.{what}s: duplicate name {name!r}")
        target[name] = value
    return TickMessage(
        topic=topic, seq=seq, window_end_s=window_end_s, newest_spike_s=newest_spike_s, t_send_s=t_send_s,
        flags=flags, output_times_s=times, values=values, counters=counters, stages_us=stages_us,
        version=version, t_recv_s=float(t_recv_s),
    )


# --- NDJSON recording (one JSON object per line, what `poyo-rt listen --out` writes) -------------

def _num_or_none(x: float) -> float | None:
    """JSON has no NaN/Inf: write them as null."""
    return x if math.isfinite(x) else None


def _none_to_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def tick_to_record(msg: TickMessage) -> dict[str, Any]:
    """A JSON-ready dict of one tick (NaN -> null). Adds ``recv_latency_us``, spike to receipt (µs)."""
    return {
        "topic": msg.topic,
        "version": msg.version,
        "seq": msg.seq,
        "flags": msg.flags,
        "window_end_s": _num_or_none(msg.window_end_s),
        "newest_spike_s": _num_or_none(msg.newest_spike_s),
        "t_send_s": _num_or_none(msg.t_send_s),
        "t_recv_s": _num_or_none(msg.t_recv_s),
        "recv_latency_us": _num_or_none(msg.recv_latency_us),
        "output_times_s": [_num_or_none(float(t)) for t in msg.output_times_s],
        "values": [[_num_or_none(float(v)) for v in row] for row in msg.values],
        "dim": msg.dim,
        "counters": dict(msg.counters),
        "stages_us": {k: _num_or_none(v) for k, v in msg.stages_us.items()},
    }


def tick_from_record(rec: Mapping[str, Any]) -> TickMessage:
    """Inverse of ``tick_to_record`` (null -> NaN). Raises ``WireFormatError`` on a missing field."""
    try:
        dim = int(rec["dim"])
        rows = rec["values"]
        values = np.array([[_none_to_nan(v) for v in row] for row in rows], dtype="<f4").reshape(len(rows), dim)
        times = np.array([_none_to_nan(t) for t in rec["output_times_s"]], dtype="<f8")
        return TickMessage(
            topic=str(rec["topic"]), seq=int(rec["seq"]), flags=int(rec["flags"]),
            window_end_s=_none_to_nan(rec["window_end_s"]), newest_spike_s=_none_to_nan(rec["newest_spike_s"]),
            t_send_s=_none_to_nan(rec["t_send_s"]), output_times_s=times, values=values,
            counters={k: int(v) for k, v in rec["counters"].items()},
            stages_us={k: _none_to_nan(v) for k, v in rec["stages_us"].items()},
            version=int(rec["version"]), t_recv_s=_none_to_nan(rec["t_recv_s"]),
        )
    except KeyError as e:
        raise WireFormatError(f"record: missing field {e.args[0]!r}") from None

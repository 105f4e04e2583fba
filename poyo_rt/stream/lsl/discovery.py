"""Finding streams: exactly one match by name / type / source_id (or an error that lists what is there), and
every visible stream with how poyo-rt would read it (``poyo-rt streams``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pylsl
from pylsl.util import LostError as _LslLostError
from pylsl.util import TimeoutError as _LslTimeoutError

from poyo_rt.errors import StreamFormatError, StreamNotFoundError
from poyo_rt.stream.lsl.config import ensure_configured, require_positive
from poyo_rt.stream.lsl.layout import FORMAT_NAMES, Column, parse_spec

_VISIBLE_WAIT_S = 0.5  # how long the not-found error path listens for the streams that do exist
_N_LISTED = 20


def _describe_info(info: pylsl.StreamInfo) -> str:
    return (
        f"name={info.name()!r} type={info.type()!r} source_id={info.source_id()!r} "
        f"host={info.hostname()!r}"
    )


def xpath_literal(field: str, value: str) -> str:
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
    require_positive("timeout_s", timeout_s)
    if not (isinstance(unique_wait_s, (int, float)) and 0 <= unique_wait_s < math.inf):
        raise ValueError(f"unique_wait_s must be a finite number of seconds >= 0, got {unique_wait_s!r}")
    ensure_configured()
    asked = ", ".join(f"{k}={v!r}" for k, v in query.items())
    if len(query) == 1:
        ((prop, value),) = query.items()

        def query_lsl(minimum: int, wait_s: float) -> list[pylsl.StreamInfo]:
            return pylsl.resolve_byprop(prop, value, minimum=minimum, timeout=wait_s)

    else:
        predicate = " and ".join(f"{k}={xpath_literal(k, v)}" for k, v in query.items())

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


def list_streams(wait_s: float = 1.0) -> list[pylsl.StreamInfo]:
    """Every stream visible within ``wait_s`` seconds (in the configured scope: by default this machine's
    only), one entry per stream, sorted by name then source_id."""
    require_positive("wait_s", wait_s)
    ensure_configured()
    infos = _unique_by_uid(pylsl.resolve_streams(wait_time=float(wait_s)))
    return sorted(infos, key=lambda i: (i.name(), i.source_id(), i.uid()))


@dataclass(frozen=True)
class StreamReport:
    """One stream as LSL announces it, and how :class:`~poyo_rt.stream.lsl.inlet.SpikeInlet` would read it
    with the settings given to :func:`inspect_stream`."""

    name: str
    type: str
    source_id: str
    hostname: str
    n_channels: int
    channel_format: str  # "int32", "float32", "string", ...
    srate_hz: float  # 0 = irregular
    layout: str | None  # "events" | "counts"; None when it cannot be read as spikes
    unit_ids: tuple[str, ...]  # empty when it cannot be read as spikes
    problem: str | None  # why not (the error the decoder would raise at open), else None

    def to_dict(self) -> dict:
        return {**self.__dict__, "unit_ids": list(self.unit_ids)}


def inspect_stream(
    info: pylsl.StreamInfo,
    *,
    layout: str = "auto",
    unit_column: Column = None,
    channel_column: Column = None,
    unit_ids: Sequence[str] | None = None,
    timeout_s: float = 2.0,
) -> StreamReport:
    """Fetch one stream's full description (its ``<desc>``; no samples are pulled) and check it as a spike
    stream, exactly as the decoder's inlet does at open (the settings are :class:`SpikeInlet`'s).

    Raises:
        ValueError: the settings contradict each other (``channel_column`` without ``unit_column``, ...).
    """
    require_positive("timeout_s", timeout_s)
    ensure_configured()
    base = dict(name=info.name(), type=info.type(), source_id=info.source_id(), hostname=info.hostname(),
                n_channels=info.channel_count(),
                channel_format=FORMAT_NAMES.get(info.channel_format(), str(info.channel_format())),
                srate_hz=float(f"{info.nominal_srate():.12g}"))  # 100.0000000000021 (XML round trip) -> 100
    inlet = pylsl.StreamInlet(info, max_buflen=1, recover=False, processing_flags=pylsl.proc_none)
    try:
        full = inlet.info(timeout=float(timeout_s))
    except (_LslTimeoutError, _LslLostError) as exc:
        return StreamReport(**base, layout=None, unit_ids=(),
                            problem=f"did not send its description within {timeout_s:g} s ({exc})")
    finally:
        del inlet  # closes it (pylsl's StreamInlet frees the liblsl handle when collected)
    try:
        spec = parse_spec(full, layout, unit_column, channel_column, unit_ids)
    except StreamFormatError as exc:
        return StreamReport(**base, layout=None, unit_ids=(), problem=str(exc))
    return StreamReport(**base, layout=spec.layout, unit_ids=spec.unit_ids, problem=None)

"""Map a stream's unit ids onto a model's unit vocabulary. Pure numpy, no pylsl."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from poyo_rt.errors import UnitMismatchError

log = logging.getLogger(__name__)

_ON_UNKNOWN = ("error", "drop")
_N_SHOWN = 5  # unknown ids quoted in an error message


def _check_ids(field: str, ids: Sequence[str]) -> list[str]:
    """Return ``ids`` as a list of str; TypeError/ValueError naming ``field`` if not unique strings."""
    if isinstance(ids, str):
        raise TypeError(f"{field} must be a sequence of str, got a single str {ids!r}")
    out = list(ids)
    for i, unit_id in enumerate(out):
        if not isinstance(unit_id, str):
            raise TypeError(f"{field}[{i}] must be str, got {type(unit_id).__name__} {unit_id!r}")
    seen: set[str] = set()
    dups: list[str] = []
    for unit_id in out:
        if unit_id in seen:
            dups.append(unit_id)
        seen.add(unit_id)
    if dups:
        raise ValueError(f"{field} has duplicate ids, e.g. {dups[:_N_SHOWN]!r}")
    return out


def match_units(
    stream_unit_ids: Sequence[str],
    vocab_unit_ids: Sequence[str],
    on_unknown: str = "error",
) -> np.ndarray:
    """Map stream unit index -> model vocabulary index.

    Args:
        stream_unit_ids: the stream's unit ids, in stream unit-index order (U_stream,).
        vocab_unit_ids: the model's unit vocabulary, in vocabulary-index order (U_vocab,).
        on_unknown: ``"error"``: raise :class:`UnitMismatchError` if a stream unit is not in the
            vocabulary; ``"drop"``: map it to -1 (the caller drops its spikes) and log how many.

    Returns:
        int64 array (U_stream,): vocabulary index of each stream unit, -1 for dropped units.

    Raises:
        UnitMismatchError: unknown units with ``on_unknown="error"``, or no stream unit in the
            vocabulary at all (in either mode: the decoder would see no input).
    """
    if on_unknown not in _ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {_ON_UNKNOWN}, got {on_unknown!r}")
    stream_ids = _check_ids("stream_unit_ids", stream_unit_ids)
    vocab_ids = _check_ids("vocab_unit_ids", vocab_unit_ids)
    vocab_index = {unit_id: i for i, unit_id in enumerate(vocab_ids)}
    mapping = np.fromiter(
        (vocab_index.get(u, -1) for u in stream_ids), dtype=np.int64, count=len(stream_ids)
    )
    unknown = [u for u, v in zip(stream_ids, mapping.tolist()) if v < 0]
    if stream_ids and len(unknown) == len(stream_ids):
        raise UnitMismatchError(
            f"none of the stream's {len(stream_ids)} units is in the model's unit vocabulary "
            f"({len(vocab_ids)} ids); stream ids e.g. {stream_ids[:_N_SHOWN]!r}, "
            f"vocabulary ids e.g. {vocab_ids[:_N_SHOWN]!r}. A new session's units need embeddings: "
            "'poyo-rt calibrate CHECKPOINT SESSION' learns them from a few minutes of its recording"
        )
    if unknown:
        msg = (
            f"{len(unknown)} of {len(stream_ids)} stream units are not in the model's unit "
            f"vocabulary ({len(vocab_ids)} ids), e.g. {unknown[:_N_SHOWN]!r}"
        )
        if on_unknown == "error":
            raise UnitMismatchError(msg + "; set on_unknown='drop' to ignore their spikes, or learn their "
                                    "embeddings with 'poyo-rt calibrate'")
        log.warning("%s; their spikes will be dropped", msg)
    return mapping


def load_unit_ids(source: Sequence[str] | str | Path) -> list[str]:
    """Unit ids from a list, or from a text file of one id per line (blank lines and ``#`` comments skipped).

    Raises:
        ValueError: no such file, no ids, or duplicate ids (the message names the file).
    """
    if not isinstance(source, (str, Path)):
        return _check_ids("unit_ids", source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"unit id file {str(path)!r} cannot be read ({err.strerror or err})") from None
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [u for u in ids if u]
    if not ids:
        raise ValueError(f"unit id file {str(path)!r} lists no ids (one a line; # starts a comment)")
    return _check_ids(f"unit id file {str(path)!r}", ids)

"""Pure numpy tokenization pieces of POYO (the batch, offline path).

Token types of the input set: every unit contributes a START token at the window
start and an END token at the window end, besides one DEFAULT token per spike.
Latents are ``num_latents_per_step`` learned embeddings repeated at each step centre.
All times are seconds relative to the window start (float64).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "TokenType",
    "create_start_end_unit_tokens",
    "create_linspace_latent_tokens",
    "pad8",
    "track_mask8",
    "Padded8",
    "collate",
]


class TokenType(IntEnum):
    DEFAULT = 0
    START_OF_SEQUENCE = 1
    END_OF_SEQUENCE = 2


def create_start_end_unit_tokens(
    unit_ids: Sequence[Any], start: float, end: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """START and END tokens for each of the U units.

    Returns ``(token_type (2U,) int64, unit_index (2U,) int64, timestamps (2U,) float64)``
    ordered ``[u0 start, u0 end, u1 start, u1 end, ...]``; ``unit_index`` is local (0..U-1).
    """
    n_units = len(unit_ids)
    token_type = np.tile(
        np.array([TokenType.START_OF_SEQUENCE, TokenType.END_OF_SEQUENCE], dtype=np.int64), n_units
    )
    unit_index = np.repeat(np.arange(n_units, dtype=np.int64), 2)
    timestamps = np.tile(np.array([start, end], dtype=np.float64), n_units)
    return token_type, unit_index, timestamps


def create_linspace_latent_tokens(
    start: float, end: float, step: float, num_latents_per_step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Latent tokens: ``num_latents_per_step`` indices repeated at every step centre.

    Centres are ``start + arange(0, end - start, step) + step / 2`` (seconds).
    Returns ``(latent_index (T*L,) int64, latent_timestamps (T*L,) float64)``, step-major.
    """
    centres = np.arange(0, end - start, step) + step / 2 + start
    latent_index = np.arange(num_latents_per_step, dtype=np.int64)
    return np.tile(latent_index, len(centres)), np.repeat(centres, num_latents_per_step)


class Padded8:
    """Marks an array to be padded (with zeros) to a multiple of 8 along dim 0 by :func:`collate`."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __repr__(self) -> str:
        return f"Padded8({self.obj!r})"


def pad8(obj: Any) -> Padded8:
    """Wrap ``obj`` so that :func:`collate` pads it to the batch's longest length, rounded up to 8."""
    return Padded8(obj)


def track_mask8(values: Any) -> Padded8:
    """A boolean mask (True = real token) of ``len(values)``, padded like :func:`pad8`."""
    return Padded8(torch.ones(len(values), dtype=torch.bool))


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    return torch.from_numpy(np.ascontiguousarray(arr))


def collate(batch: list[Any]) -> Any:
    """Stack a list of :meth:`POYO.tokenize` outputs into a batch.

    Dicts are collated key by key; :class:`Padded8` entries are zero-padded to the
    longest sample rounded up to a multiple of 8 (masks pad with False); arrays and
    numbers are stacked; strings are kept as lists. Mirrors torch_brain's pad8 collation.
    """
    first = batch[0]
    if isinstance(first, dict):
        return {key: collate([sample[key] for sample in batch]) for key in first}
    if isinstance(first, Padded8):
        items = [_as_tensor(sample.obj) for sample in batch]
        longest = max(int(t.shape[0]) for t in items)
        length = -(-longest // 8) * 8
        out = torch.zeros((len(items), length, *items[0].shape[1:]), dtype=items[0].dtype)
        for i, t in enumerate(items):
            out[i, : t.shape[0]] = t
        return out
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, (int, float, np.integer, np.floating, np.ndarray, torch.Tensor)):
        return torch.stack([_as_tensor(sample) for sample in batch])
    return list(batch)

"""Rotary time embedding (RoFormer-style rotation by time, in seconds).

Shapes: ``H`` = head dim (``dim_head``); ``D = H // 2`` frequency slots, of which the
first ``rotate_dim // 2`` have log-spaced periods from ``t_min`` to ``t_max`` and the
rest have frequency 0 (those channels are not rotated). Channel pairs are interleaved:
channels ``(2i, 2i + 1)`` rotate together by angle ``omega[i] * t``.

Angles are computed in float64 (timestamps are cast up), so an absolute time origin
of hundreds of seconds costs no precision; cos/sin are cast to the activations'
dtype only when applied.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "Rotation",
    "rotation",
    "cis",
    "apply_rotation",
    "generate_logspace_timeperiods",
    "rotary_angles",
    "rotary_embedding",
    "rotate",
    "invert",
    "RotaryTimeEmbedding",
]


def generate_logspace_timeperiods(num: int, t_min: float, t_max: float) -> Tensor:
    """``num`` periods (seconds, float32) log-spaced from ``t_min`` to ``t_max`` inclusive."""
    if not 0 < t_min < t_max:
        raise ValueError(f"Invalid t_min ({t_min}) and t_max ({t_max}). They should follow 0 < t_min < t_max.")
    exponents = torch.linspace(0, 1.0, num, dtype=torch.float32)
    log_min, log_max = torch.tensor(t_min).log(), torch.tensor(t_max).log()
    return torch.exp(torch.lerp(log_min, log_max, exponents))


def rotary_angles(timestamps: Tensor, omega: Tensor) -> Tensor:
    """Angles ``t * omega`` in float64: ``(...,)`` seconds x ``(D,)`` rad/s -> ``(..., D)``."""
    return timestamps.to(torch.float64)[..., None] * omega.to(torch.float64)


def rotary_embedding(timestamps: Tensor, omega: Tensor) -> Tensor:
    """Rotary embedding ``cat(cos, sin)`` of shape ``(..., 2H)``, float64, pairs interleaved."""
    angles = rotary_angles(timestamps, omega).repeat_interleave(2, dim=-1)  # (..., H)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def _rotate_half(x: Tensor) -> Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`` over the last dim."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., D, 2)
    x1, x2 = pairs.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(start_dim=-2)


def rotate(x: Tensor, rotary_emb: Tensor, unsqueeze_dim: int = 2) -> Tensor:
    """Rotate ``x`` (..., H) by a rotary embedding (..., 2H), heads at ``unsqueeze_dim`` of ``x``."""
    emb = rotary_emb.unsqueeze(unsqueeze_dim).to(x.dtype)
    cos, sin = emb.chunk(2, dim=-1)
    return x * cos + _rotate_half(x) * sin


def invert(rotary_emb: Tensor) -> Tensor:
    """Embedding of time ``-t`` from that of time ``t`` (negate the sine half)."""
    cos, sin = rotary_emb.chunk(2, dim=-1)
    return torch.cat((cos, -sin), dim=-1)


class Rotation(NamedTuple):
    """A rotation ready to apply: ``cis = cos + i sin`` of the D pair angles, (..., D) complex64 (one
    complex multiply per pair instead of torch_brain's cat/stack/neg/mul/add chain). Built once per
    forward for each set of times; the angles are float64, only cos/sin are rounded (to float32), exactly
    as torch_brain rounds them, so the results agree to float32 rounding (checked <= 1e-6 relative)."""

    cis: Tensor

    def inverse(self) -> "Rotation":
        """The rotation by ``-t``."""
        return Rotation(self.cis.conj())


def cis(angles: Tensor) -> Tensor:
    """``cos + i sin`` of float64 ``angles`` as complex64: computed in float64, rounded once (as torch_brain
    rounds them). On the CPU with vectorised cos and sin (``torch.polar`` runs them one element at a time
    there: 1.5x slower for POYO's 2,200 x 32 angles, ``tools/bench_rotary.py``; the same values bit for bit,
    ``tests/test_model.py``); elsewhere with ``torch.polar`` (3 GPU kernels instead of 5)."""
    if angles.device.type == "cpu":
        return torch.complex(torch.cos(angles).float(), torch.sin(angles).float())
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def rotation(timestamps: Tensor, omega: Tensor) -> Rotation:
    """:class:`Rotation` of ``timestamps`` (...,) seconds: angles in float64, cos/sin rounded to float32."""
    return Rotation(cis(rotary_angles(timestamps, omega)))  # (..., D)


def apply_rotation(x: Tensor, rot: Rotation, unsqueeze_dim: int = 2) -> Tensor:
    """Rotate ``x`` (..., H) by ``rot`` (heads at ``unsqueeze_dim`` of ``x``); equals :func:`rotate`."""
    cis = rot.cis.unsqueeze(unsqueeze_dim)  # (..., 1, ..., D)
    if x.dtype == torch.float32:
        pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (..., D) complex view, no copy
        return torch.view_as_real(pairs * cis).flatten(start_dim=-2)
    # other dtypes (bf16/fp16 under autocast, float64): the real form, as torch_brain computes it
    cos = cis.real.repeat_interleave(2, dim=-1).to(x.dtype)
    sin = cis.imag.repeat_interleave(2, dim=-1).to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class RotaryTimeEmbedding(nn.Module):
    """Holds ``omega`` (D,) rad/s as a buffer (state-dict key ``omega``) and embeds timestamps.

    Args:
        head_dim: attention head dimension ``H``.
        rotate_dim: number of channels rotated (even, <= head_dim); POYO uses ``H // 2``.
        t_min, t_max: shortest and longest period, seconds.
    """

    omega: Tensor

    def __init__(self, head_dim: int, rotate_dim: int, t_min: float, t_max: float):
        super().__init__()
        if rotate_dim % 2 != 0:
            raise ValueError(f"rotate_dim must be a multiple of 2, got {rotate_dim}")
        if head_dim < rotate_dim:
            raise ValueError(f"head_dim ({head_dim}) must be >= rotate_dim ({rotate_dim})")
        periods = generate_logspace_timeperiods(rotate_dim // 2, t_min, t_max)
        omega = torch.zeros(head_dim // 2)
        omega[: rotate_dim // 2] = 2 * torch.pi / periods
        self.register_buffer("omega", omega)

    @torch.no_grad()
    def forward(self, timestamps: Tensor) -> Tensor:
        """``(...,)`` seconds -> ``(..., 2H)`` float64 rotary embedding (autocast never applies)."""
        return rotary_embedding(timestamps, self.omega)

    def rotation(self, timestamps: Tensor) -> Rotation:
        """``(...,)`` seconds -> :class:`Rotation` (what POYO's attention layers apply)."""
        with torch.no_grad():
            return rotation(timestamps, self.omega)

    rotate = staticmethod(rotate)
    invert = staticmethod(invert)

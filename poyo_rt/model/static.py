"""Fixed-shape inference: preallocated input buffers and a capture-safe forward.

The real-time runner fills these buffers in place each tick and calls
:func:`static_forward`, which is free of data-dependent Python control flow and of
host synchronisation, so the very same call can be captured once by
``torch.cuda.CUDAGraph`` and replayed. Padding is masked: ``input_mask`` False slots
do not affect the output; all ``N_out`` queries are decoded (the caller knows which
are real).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from poyo_rt.model.poyo import POYO


@dataclass
class StaticInputs:
    """Buffers of one padding bucket. Shapes: (B, N_in), (B, N_lat), (B, N_out); times float64 seconds."""

    input_unit_index: Tensor
    input_timestamps: Tensor
    input_token_type: Tensor
    input_mask: Tensor
    latent_index: Tensor
    latent_timestamps: Tensor
    output_session_index: Tensor
    output_timestamps: Tensor

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, N_in, N_lat, N_out)``."""
        b, n_in = self.input_unit_index.shape
        return b, n_in, self.latent_index.shape[1], self.output_timestamps.shape[1]

    def as_kwargs(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy_(self, other: "StaticInputs", non_blocking: bool = True) -> None:
        """Copy another bucket's contents into these buffers (same shapes), in place (as ``Tensor.copy_``)."""
        for f in fields(self):
            getattr(self, f.name).copy_(getattr(other, f.name), non_blocking=non_blocking)


def allocate_static_inputs(
    model: POYO, *, batch: int = 1, n_input: int, n_output: int = 1, device: str | torch.device = "cpu",
    pin_memory: bool = False,
) -> StaticInputs:
    """Zeroed buffers for ``batch`` windows of ``n_input`` tokens (a multiple of 8 is best) and
    ``n_output`` queries; latents are filled for a window starting at 0 (shift them with the window)."""
    if n_input < 1 or n_output < 1 or batch < 1:
        raise ValueError(f"batch, n_input and n_output must be >= 1, got {batch}, {n_input}, {n_output}")
    latent_index, latent_ts = model.latent_tokens()
    n_lat = len(latent_index)
    device = torch.device(device)
    pin = pin_memory and device.type == "cpu" and torch.cuda.is_available()

    def zeros(n: int, dtype: torch.dtype) -> Tensor:
        return torch.zeros((batch, n), dtype=dtype, device=device, pin_memory=pin)

    buf = StaticInputs(
        input_unit_index=zeros(n_input, torch.long),
        input_timestamps=zeros(n_input, torch.float64),
        input_token_type=zeros(n_input, torch.long),
        input_mask=zeros(n_input, torch.bool),
        latent_index=zeros(n_lat, torch.long),
        latent_timestamps=zeros(n_lat, torch.float64),
        output_session_index=zeros(n_output, torch.long),
        output_timestamps=zeros(n_output, torch.float64),
    )
    buf.latent_index.copy_(torch.from_numpy(latent_index).expand(batch, -1))
    buf.latent_timestamps.copy_(torch.from_numpy(latent_ts).expand(batch, -1))
    return buf


def static_forward(model: POYO, inputs: StaticInputs) -> Tensor:
    """``(B, N_out, D_out)`` decoded values; capture-safe (no ``.item()``, no boolean indexing,
    no branch on tensor values). Call under ``torch.inference_mode()`` in eval mode."""
    return model(**inputs.as_kwargs(), output_mask=None, unpack_output=False)

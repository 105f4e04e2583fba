"""Losses with optional per-sample weights (the torch_brain convention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MSELoss(torch.nn.Module):
    """Mean squared error; ``weights`` (N,) re-weight samples: sum(w * mse_i) / sum(w)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if input.ndim != 2 or target.ndim != 2:
            raise ValueError(f"MSELoss expects (N, dim) input and target, got {tuple(input.shape)} and {tuple(target.shape)}")
        if weights is None:
            return F.mse_loss(input, target)
        if weights.ndim != 1 or weights.shape[0] != input.shape[0]:
            raise ValueError(f"MSELoss weights must be (N,) with N={input.shape[0]}, got {tuple(weights.shape)}")
        per_sample = F.mse_loss(input, target, reduction="none").mean(dim=1)
        return (weights * per_sample).sum() / weights.sum()


class CrossEntropyLoss(torch.nn.Module):
    """Cross entropy over classes; ``weights`` (N,) re-weight samples."""

    def forward(self, input: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if input.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects (N, classes) input, got {tuple(input.shape)}")
        if weights is None:
            return F.cross_entropy(input, target)
        per_sample = F.cross_entropy(input, target, reduction="none")
        return (weights * per_sample).sum() / weights.sum()

"""GEGLU feed-forward block: dim -> 2 * mult * dim -> (GEGLU) mult * dim -> dim."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GEGLU(nn.Module):
    """``x, gate = split(x); x * gelu(gate)`` (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def forward(self, x: Tensor) -> Tensor:
        x, gates = x.chunk(2, dim=-1)
        return x * F.gelu(gates)


class FeedForward(nn.Module):
    """State-dict keys ``net.0`` (in) and ``net.3`` (out), as torch_brain's."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult * 2),
            GEGLU(),
            nn.Dropout(p=dropout),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

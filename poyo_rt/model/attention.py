"""Rotary cross- and self-attention, pre-norm, with PyTorch SDPA as the only kernel.

Einsum legend: B batch, N_q queries, N_c context tokens, h heads, H head dim.

The kernel is fixed at construction (always ``F.scaled_dot_product_attention``),
unlike torch_brain which picks xformers or SDPA inside every call: a CUDA graph
freezes whichever branch ran at capture, so the choice must not depend on the call.
State-dict keys equal torch_brain's (``norm``, ``norm_context``, ``to_q``, ``to_kv``,
``to_qkv``, ``to_out``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from poyo_rt.model.rotary import Rotation, apply_rotation, invert, rotate

PosEmb = Tensor | Rotation  # a raw (..., 2H) rotary embedding (torch_brain's form) or a prepared Rotation


def _rotate(x: Tensor, pos: PosEmb, unsqueeze_dim: int) -> Tensor:
    return apply_rotation(x, pos, unsqueeze_dim) if isinstance(pos, Rotation) else rotate(x, pos, unsqueeze_dim)


def _inverse(pos: PosEmb) -> PosEmb:
    return pos.inverse() if isinstance(pos, Rotation) else invert(pos)


def rotary_attention(
    *,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    q_pos_emb: PosEmb,
    kv_pos_emb: PosEmb,
    num_heads: int,
    attn_mask: Tensor | None,
    dropout_p: float,
    rotate_value: bool,
) -> Tensor:
    """Multi-head attention with rotary time embeddings.

    Args:
        query: (B, N_q, h*H); key, value: (B, N_c, h*H).
        q_pos_emb: rotation of the query times, a :class:`Rotation` of (B, N_q, H) or a raw (B, N_q, 2H)
            rotary embedding; kv_pos_emb: the same for the context, (B, N_c, ...).
        attn_mask: (B, N_c) bool, True = attend; None = attend to all.
        rotate_value: also rotate values by their time and rotate the output back by the
            query time, so the output depends on relative times only.

    Returns:
        (B, N_q, h*H).
    """
    q = query.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (B, h, N_q, H)
    k = key.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (B, h, N_c, H)
    v = value.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (B, h, N_c, H)

    q = _rotate(q, q_pos_emb, 1)
    k = _rotate(k, kv_pos_emb, 1)
    if rotate_value:
        v = _rotate(v, kv_pos_emb, 1)

    return attend(q, k, v, q_pos_emb=q_pos_emb, attn_mask=attn_mask, dropout_p=dropout_p, rotate_value=rotate_value)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_pos_emb: PosEmb,
    attn_mask: Tensor | None,
    dropout_p: float,
    rotate_value: bool,
) -> Tensor:
    """The attention proper, on heads that are already rotated.

    Args:
        q: (B, h, N_q, H) rotated queries; k: (B, h, N_c, H) rotated keys; v: (B, h, N_c, H) values,
            rotated by their times when ``rotate_value`` (the output is then rotated back by ``q_pos_emb``).
        attn_mask: (B, N_c) bool, True = attend; None = attend to all.
    Returns:
        (B, N_q, h*H).
    """
    mask = attn_mask[:, None, None, :] if attn_mask is not None else None  # (B, 1, 1, N_c)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, h, N_q, H)
    if rotate_value:
        out = _rotate(out, _inverse(q_pos_emb), 1)
    return out.transpose(1, 2).flatten(-2)  # (B, N_q, h*H)


class RotaryCrossAttention(nn.Module):
    """Queries (B, N_q, dim) attend to a context (B, N_c, context_dim); returns (B, N_q, dim)."""

    def __init__(
        self,
        *,
        dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        rotate_value: bool = False,
    ):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim or dim
        self.heads = heads
        self.dropout = dropout
        self.rotate_value = rotate_value
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(
        self,
        x_query: Tensor,
        x_context: Tensor,
        query_pos_emb: PosEmb,
        context_pos_emb: PosEmb,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        q = self.to_q(self.norm(x_query))
        k, v = self.to_kv(self.norm_context(x_context)).chunk(2, dim=-1)
        out = rotary_attention(
            query=q,
            key=k,
            value=v,
            q_pos_emb=query_pos_emb,
            kv_pos_emb=context_pos_emb,
            num_heads=self.heads,
            attn_mask=context_mask,
            dropout_p=self.dropout if self.training else 0.0,
            rotate_value=self.rotate_value,
        )
        return self.to_out(out)


class RotarySelfAttention(nn.Module):
    """Self-attention over (B, N, dim) tokens with rotary times; returns (B, N, dim)."""

    def __init__(self, *, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0, rotate_value: bool = False):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.dropout = dropout
        self.rotate_value = rotate_value
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Linear(inner_dim, dim)

    def forward(self, x: Tensor, rotary_time_emb: PosEmb, x_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.to_qkv(self.norm(x)).chunk(3, dim=-1)
        out = rotary_attention(
            query=q,
            key=k,
            value=v,
            q_pos_emb=rotary_time_emb,
            kv_pos_emb=rotary_time_emb,
            num_heads=self.heads,
            attn_mask=x_mask,
            dropout_p=self.dropout if self.training else 0.0,
            rotate_value=self.rotate_value,
        )
        return self.to_out(out)

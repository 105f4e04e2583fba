"""POYO's real-time forward folded for one window geometry: what is constant is computed once, the rest
in few, large kernels (the forward the CUDA graph captures).

A naive capture of the full forward launches ~380 kernels a tick for poyo_1.3M, most of them tiny: the
embedding gathers, a LayerNorm and projection of every input token, rotary angles in float64 for every
token, latent and query, then the rotations as chains of elementwise kernels. On a GPU each kernel of a
graph costs 1-3 µs whatever it computes, so the count, not the arithmetic, sets the latency. This module
computes the same function (<= 1e-5 against the exact model, ``tests/test_fused.py``) from three
observations:

1. **Window-relative times.** Rotary attention depends on time differences only, so the forward may take
   every time relative to the window start. The latents then sit at the same times every tick: their
   rotations (``cos + i sin`` per channel pair) are constant tables, and so are the encoder's rotated
   latent queries ``rotate(to_q(LayerNorm(latent_emb)))`` and the latents entering the encoder's
   residual (plus its output bias).
2. **Per-token keys are table lookups.** An input token's encoder key/value is
   ``to_kv(LayerNorm(unit_emb[u] + token_type_emb[type]))``: one row per (unit, type). The table of all
   of them is computed once (:attr:`FusedPOYO.kv_table`), so a tick gathers rows instead of embedding,
   normalising and projecting 2,200 tokens.
3. **One complex multiply rotates q, k and v together.** Channel pairs are viewed as complex numbers and
   multiplied by the rotation table in one kernel (the float64 angles of the input times are the only
   per-tick trigonometry left).

Inputs of :meth:`FusedPOYO.forward` come packed in ONE float64 vector (:func:`pack_inputs`; one
host-to-device copy a tick instead of eight): the input tokens' table rows, window-relative times and
mask, and the output queries' window-relative times and session rows. Batch 1 (a real-time stream).
Built from an eval-mode :class:`~poyo_rt.model.poyo.POYO`; after its weights change, build a new one.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poyo_rt.model.poyo import POYO
from poyo_rt.model.rotary import cis, rotary_angles

__all__ = ["FusedPOYO", "PackedLayout", "pack_inputs", "pack_window", "table_rows"]


def _as_pairs(x: Tensor) -> Tensor:
    """Complex view of channel pairs: (..., H) float32 -> (..., H/2) complex64, no copy."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


class Rotary:
    """How :class:`FusedPOYO` rotates channel pairs: as complex numbers (one kernel per rotation in eager
    mode) or as real arithmetic on ``(cos, ±sin)`` tables (what ``torch.compile`` fuses: inductor
    generates no code for complex operators). ``complex=True`` for eager/CUDA-graph use."""

    def __init__(self, complex: bool = True):
        self.complex = complex

    def table(self, cis: Tensor) -> Tensor:
        """A rotation table from ``cis`` (..., H/2) complex64: itself, or (..., 2, H) float32 ``[cos; sin]``
        with each pair's values repeated and the sine signed ``(-s, +s)`` for :meth:`apply`."""
        return cis if self.complex else self._real_table(cis.real, cis.imag)

    @staticmethod
    def _real_table(cos: Tensor, sin: Tensor) -> Tensor:
        cos = cos.repeat_interleave(2, dim=-1)
        sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
        return torch.stack((cos, sin), dim=-2)

    def angles(self, times: Tensor, omega: Tensor) -> Tensor:
        """Table of ``times`` (N,) float64 seconds at ``omega`` (H/2,) float64 rad/s: (N, ...); angles in
        float64, cos/sin rounded to float32 once."""
        angles = times[:, None] * omega
        if self.complex:
            return cis(angles)
        return self._real_table(angles.cos().float(), angles.sin().float())

    def apply(self, x: Tensor, table: Tensor, dim: int) -> Tensor:
        """Rotate ``x`` (..., H) by ``table`` (its rows broadcast at ``x``'s dims before ``dim``; ``dim`` new axes
        are inserted after the table's row axis so that it lines up with ``x``)."""
        for _ in range(dim):
            table = table.unsqueeze(1)
        if self.complex:
            return torch.view_as_real(_as_pairs(x) * table).flatten(-2)
        cos, sin = table.unbind(-2)
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0, x3, x2, ...)
        return x * cos + swapped * sin


def table_rows(unit_index: np.ndarray, token_type: np.ndarray, n_types: int) -> np.ndarray:
    """Row of :attr:`FusedPOYO.kv_table` for each token: ``unit * n_types + type``."""
    return np.asarray(unit_index, dtype=np.int64) * n_types + np.asarray(token_type, dtype=np.int64)


class PackedLayout:
    """Offsets of the packed float64 input vector for ``n_input`` input slots and ``n_output`` queries:
    ``[input rows | input times | input mask | output times | output session rows]``."""

    def __init__(self, n_input: int, n_output: int):
        if n_input < 1 or n_output < 1:
            raise ValueError(f"n_input and n_output must be >= 1, got {n_input}, {n_output}")
        self.n_input, self.n_output = int(n_input), int(n_output)
        self.size = 3 * self.n_input + 2 * self.n_output

    def views(self, packed: np.ndarray | Tensor) -> tuple:
        """``(rows, times, mask, out_times, out_rows)`` views of ``packed`` (no copies)."""
        n, m = self.n_input, self.n_output
        return packed[:n], packed[n:2 * n], packed[2 * n:3 * n], packed[3 * n:3 * n + m], packed[3 * n + m:]


def pack_inputs(packed: np.ndarray, layout: PackedLayout, *, rows: np.ndarray, times: np.ndarray,
                out_times: np.ndarray, out_rows: np.ndarray) -> None:
    """Write one tick into ``packed`` (float64, ``layout.size``), in place.

    Args:
        rows: (n,) table rows of the real input tokens (:func:`table_rows`), n <= ``layout.n_input``;
            the remaining slots become padding (row 0, masked out).
        times: (n,) window-relative input times, seconds.
        out_times: (n_output,) window-relative output times, seconds; out_rows: (n_output,) session rows.
    """
    n = rows.shape[0]
    if n > layout.n_input or times.shape[0] != n:
        raise ValueError(f"{n} rows / {times.shape[0]} times for {layout.n_input} input slots")
    p_rows, p_times, p_mask, p_out_t, p_out_rows = layout.views(packed)
    p_rows[:n] = rows
    p_rows[n:] = 0.0
    p_times[:n] = times
    p_times[n:] = 0.0
    p_mask[:n] = 1.0
    p_mask[n:] = 0.0
    p_out_t[:] = out_times
    p_out_rows[:] = out_rows


_WINDOW_KEYS = ("input_unit_index", "input_token_type", "input_timestamps", "output_timestamps",
                "output_session_index")


def pack_window(packed: np.ndarray, layout: PackedLayout, window: Mapping[str, Any], n_types: int, *,
                tokens: slice | np.ndarray = slice(None), start: float = 0.0) -> None:
    """:func:`pack_inputs` from one window in the model's keyword layout (``input_unit_index``,
    ``input_token_type``, ``input_timestamps``, ``output_timestamps``, ``output_session_index``: (1, N) numpy
    arrays or CPU tensors, as the tokenizer and :class:`~poyo_rt.model.static.StaticInputs` hold them).

    Args:
        tokens: which of the N input slots are real tokens: a slice or a boolean mask.
        start: the window start on the arrays' clock, seconds (times are packed relative to it).
    """
    a = {k: np.asarray(window[k])[0] for k in _WINDOW_KEYS}
    pack_inputs(packed, layout,
                rows=table_rows(a["input_unit_index"][tokens], a["input_token_type"][tokens], n_types),
                times=a["input_timestamps"][tokens] - start, out_times=a["output_timestamps"] - start,
                out_rows=a["output_session_index"])


class FusedPOYO(nn.Module):
    """The real-time forward of ``model`` for windows of ``model.sequence_length`` seconds.

    Args:
        model: an eval-mode POYO; its weights are read (and derived constants computed) here.
        n_output: output queries per tick (the input slots follow from the packed vector's length, so
            one FusedPOYO serves every padding bucket).
        complex_rotation: rotate as complex numbers (default; fewest kernels in eager mode and CUDA graphs)
            or in real arithmetic (for ``torch.compile``, which fuses it into neighbouring kernels).
        encoder: build the encoder's constants (False: only :meth:`process_and_decode` is used, as by the CPU
            key/value cache, which keeps its own per-unit table; skips a vocabulary-wide table).

    Buffers (all derived from ``model``): ``kv_table`` (n_vocab * n_types, 2 * h_c * H) encoder keys and
    values per (unit, type), ``enc_q`` (1, h_c, N_lat, H) rotated latent queries, ``enc_residual``
    (N_lat, dim) latents plus the encoder's output bias, ``latent_rot`` / ``latent_unrot`` the rotation
    tables of the latent times and of their negatives, ``omega`` (H/2,) float64 rad/s.
    """

    def __init__(self, model: POYO, *, n_output: int = 1, complex_rotation: bool = True, encoder: bool = True):
        super().__init__()
        if model.training:
            raise ValueError("FusedPOYO is built from an eval-mode model (call model.eval())")
        if model.unit_emb.is_lazy() or model.session_emb.is_lazy():
            raise ValueError("initialise the model's unit and session vocabularies before fusing it")
        if not (model.enc_atn.rotate_value and not model.dec_atn.rotate_value
                and all(attn.rotate_value for attn, _ in model.proc_layers)):
            raise ValueError("FusedPOYO expects POYO's attention layout: encoder and processor rotate values, "
                             "the decoder does not")
        if n_output < 1:
            raise ValueError(f"n_output must be >= 1, got {n_output}")
        self.model = model
        self.n_output = int(n_output)
        self.rotary = Rotary(complex_rotation)
        enc = model.enc_atn
        self.n_types = int(model.token_type_emb.weight.shape[0])
        self.head_dim = enc.to_q.out_features // enc.heads
        latent_index, latent_times = model.latent_tokens()
        device = model.rotary_emb.omega.device
        with torch.inference_mode():
            omega = model.rotary_emb.omega.to(torch.float64)
            latent_cis = cis(rotary_angles(torch.from_numpy(latent_times).to(device), omega))  # (N_lat, H/2)
            constants = {"omega": omega, "latent_rot": self.rotary.table(latent_cis),
                         "latent_unrot": self.rotary.table(latent_cis.conj())}
            if encoder:  # without it, only process_and_decode runs (the CPU key/value cache's tail)
                units = model.unit_emb.weight  # (n_vocab, dim)
                emb = (units[:, None, :] + model.token_type_emb.weight[None]).flatten(0, 1)  # (n_vocab * n_types, dim)
                constants["kv_table"] = enc.to_kv(enc.norm_context(emb))  # (rows, 2 * h_c * H)
                latents = model.latent_emb(torch.from_numpy(latent_index).to(device))  # (N_lat, dim)
                q = enc.to_q(enc.norm(latents)).unflatten(-1, (enc.heads, self.head_dim))  # (N_lat, h_c, H)
                q = torch.view_as_real(_as_pairs(q) * latent_cis[:, None, :]).flatten(-2)
                constants["enc_q"] = q.transpose(0, 1)[None].contiguous()  # (1, h_c, N_lat, H)
                constants["enc_residual"] = latents + enc.to_out.bias
        self.encoder = encoder
        # inference constants: plain tensors, not parameters (nothing here is trained or saved)
        for name, value in constants.items():
            self.register_buffer(name, value.clone(), persistent=False)
        self.eval()  # an inference path: nothing here trains (a CUDA graph refuses a training-mode module)

    def layout(self, n_input: int) -> PackedLayout:
        """The packed-input layout for ``n_input`` input slots."""
        return PackedLayout(n_input, self.n_output)

    # ---------------------------------------------------------------- forward
    def forward(self, packed: Tensor) -> Tensor:
        """``packed`` (3 * N_in + 2 * N_out,) float64 (:func:`pack_inputs`) -> (N_out, D_out) float32."""
        if not self.encoder:
            raise RuntimeError("this FusedPOYO was built with encoder=False: only process_and_decode runs")
        n_input, rest = divmod(packed.shape[0] - 2 * self.n_output, 3)
        if rest or n_input < 1:
            raise ValueError(f"packed input of length {packed.shape[0]} does not fit {self.n_output} output queries")
        rows, times, mask, out_times, out_rows = PackedLayout(n_input, self.n_output).views(packed)
        latents = self._encode(rows.long(), times, mask > 0.5)  # (N_lat, dim)
        return self.process_and_decode(latents, out_rows.long(), out_times)

    def process_and_decode(self, latents: Tensor, out_rows: Tensor, out_times: Tensor) -> Tensor:
        """Everything after the encoder cross-attention's residual add (as :meth:`POYO.process_and_decode`;
        also the tail of :class:`~poyo_rt.model.kvcache.EncoderKVCache`'s forward).

        Args:
            latents: (N_lat, dim) latents after the encoder attention and its residual (any time origin:
                from here on only latent-latent and query-latent time differences matter).
            out_rows: (N_out,) int64 session rows; out_times: (N_out,) float64 seconds from the window start.
        Returns:
            (N_out, D_out).
        """
        m = self.model
        latents = latents + m.enc_ffn(latents)
        for attn, ffn in m.proc_layers:
            latents = latents + self._self_attention(attn, latents)
            latents = latents + ffn(latents)
        queries = m.session_emb.weight[out_rows]  # (N_out, dim)
        queries = queries + self._decode(queries, latents, out_times)
        queries = queries + m.dec_ffn(queries)
        return m.readout(queries)

    def _encode(self, rows: Tensor, times: Tensor, mask: Tensor) -> Tensor:
        """Latents after the encoder cross-attention and its residual: (N_lat, dim)."""
        rot = self.rotary.angles(times, self.omega)  # (N_in, ...): the only per-tick trigonometry
        kv = self.kv_table[rows].unflatten(-1, (2, -1, self.head_dim))  # (N_in, 2, h, H)
        kv = self.rotary.apply(kv, rot, 2)  # keys and values rotated at once
        k, v = kv.permute(1, 2, 0, 3)[:, None].unbind(0)  # each (1, h, N_in, H)
        out = F.scaled_dot_product_attention(self.enc_q, k, v, attn_mask=mask[None, None, None, :])
        return torch.addmm(self.enc_residual, self._unrotate(out), self.model.enc_atn.to_out.weight.t())

    def _unrotate(self, out: Tensor) -> Tensor:
        """(1, h, N_lat, H) attention output rotated back by the latent times -> (N_lat, h * H)."""
        return self.rotary.apply(out[0].transpose(0, 1), self.latent_unrot, 1).flatten(-2)

    def _self_attention(self, attn: nn.Module, x: Tensor) -> Tensor:
        """One processor self-attention (q, k and v rotated by the latent times), without the residual."""
        qkv = attn.to_qkv(attn.norm(x)).unflatten(-1, (3, attn.heads, self.head_dim))  # (N_lat, 3, h, H)
        qkv = self.rotary.apply(qkv, self.latent_rot, 2)
        q, k, v = qkv.permute(1, 2, 0, 3)[:, None].unbind(0)  # each (1, h, N_lat, H)
        return attn.to_out(self._unrotate(F.scaled_dot_product_attention(q, k, v)))

    def _decode(self, queries: Tensor, latents: Tensor, out_times: Tensor) -> Tensor:
        """Decoder cross-attention (queries <- latents, values not rotated), without the residual: (N_out, dim)."""
        dec = self.model.dec_atn
        q = dec.to_q(dec.norm(queries)).unflatten(-1, (dec.heads, self.head_dim))  # (N_out, h, H)
        q = self.rotary.apply(q, self.rotary.angles(out_times, self.omega), 1)
        kv = dec.to_kv(dec.norm_context(latents)).unflatten(-1, (2, dec.heads, self.head_dim))  # (N_lat, 2, h, H)
        k = self.rotary.apply(kv[:, 0], self.latent_rot, 1)
        out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                             kv[:, 1].transpose(0, 1)[None])  # (1, h, N_out, H)
        return dec.to_out(out[0].transpose(0, 1).flatten(-2))

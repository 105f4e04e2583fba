"""FusedPOYO's forward as a few Triton kernels: ``7 + 3 * depth`` launches a tick (25 for poyo_1.3M), or
``11 + 5 * depth`` for wide models (21 for dim 512, depth 2; "summed residuals" below).

Computes what :meth:`poyo_rt.model.fused.FusedPOYO.forward` computes (fp32, <= 1e-5; checked under
Triton's interpreter by ``tests/test_triton_kernels.py``), batch 1, with every kernel spread over many
programs (an SM does ~128 fp32 FMA a clock, so a kernel of 8 programs takes ~10 µs where 64 take ~1 µs):

===============================  ====================================================  ===============
kernel                           computes                                              launches
===============================  ====================================================  ===============
``_encoder_attention_kernel``    latent queries <- input tokens, keys split across     1
                                 programs (flash-decoding); keys/values gathered from
                                 ``kv_table`` and rotated from the float64 times here
``_combine_proj_kernel``         the encoder's splits combined, rotated back, out-     1
                                 projected per head, one output column block per
                                 program
``_ln_proj_rotate_kernel``       ``rotate(LayerNorm(x) @ W^T)`` head-major: q, k, v    depth + 1
                                 of a self-attention; the decoder's k (rotated), v
``_attention_kernel``            online-softmax attention, rotated back and out-       depth + 1
                                 projected per head; the decoder computes its queries
                                 here (session rows, LayerNorm, to_q, float64 times)
``_ffn_kernel``                  ``x1 = x + sum_h P_h + bo``; one hidden chunk of      depth + 2
                                 ``GEGLU(LayerNorm(x1) @ W1^T) @ W2^T`` per program
``_readout_kernel``              ``(x1 + sum_c F_c + b2) @ Wr^T + br``                 1
``_proj_residual_kernel``        summed residuals only: ``x + unrotate(o) Wo^T + bo``  2 x (depth + 2)
                                 and ``x1 + act W2^T + b2``, whole rows
===============================  ====================================================  ===============

No kernel holds a whole model-width row (``dim`` columns) in registers, so wide models (dim 512) compile
without spilling as small ones do: rows are read in column chunks of :func:`_width_block` (at most
``MAX_WIDTH_BLOCK``) columns. A LayerNorm takes two passes over the chunks, first its row statistics
(mean and sum of squared deviations, combined chunk by chunk: :func:`_stats_update`), then the
normalised chunks inside the K loop of the projection that follows (``acc += dot(x_chunk, w_chunk)``);
model-width outputs are written in column blocks of the same width (a grid axis of
``_combine_proj_kernel``, a loop in the attention and FFN epilogues, which keep their per-head output /
hidden activations in registers).

Sums across programs are never atomic: the out-projection of each head (``P_h``, ``(h, N, dim)``) and the
FFN output of each hidden chunk (``F_c``, ``(C, N, dim)``) are written apart and added, in a fixed order,
by the kernel that reads them (:class:`State`), so results are deterministic. Every program of that kernel
adds them again for its rows: cheap for poyo_1.3M (8 pieces of 64 columns), not for dim 512, whose 64 FFN
chunks of 512 columns make the q/k/v and FFN programs read ~14 GB a layer (``tools/triton_traffic.py``). Wide models
therefore get **summed residuals** (:func:`residual_layout` decides): attention kernels write their heads'
outputs side by side (``PROJECT=False``), ``_proj_residual_kernel`` rotates them back, projects them and
adds the residual (``x1 = x + o Wo^T + bo``, whole rows), the FFN kernel writes its GEGLU activations
(``PROJECT_OUT=False``), and ``_proj_residual_kernel`` again does ``x1 + act W2^T + b2``: two more launches
per block, each row summed once, still in a fixed order.

Rotation: channel pairs ``(2i, 2i+1)`` rotate by ``omega[i] * t``; a tile is rotated from itself and its
pair-swapped twin (projected with the weight rows ``c ^ 1``): ``x[c] cos + x[c ^ 1] sin * (-1 if c even
else +1)``. An attention output is rotated back inside its out-projection: ``unrotate(o) @ W^T =
(o cos) @ W^T + (o sin (-1 if c even else +1)) @ W[:, c ^ 1]^T``. The encoder works on de-interleaved
keys/values (even channels | odd channels), so each token computes one angle per pair. Angles of per-tick
times are float64, their cos/sin rounded to float32, as the torch forward does.

Every matmul is ``_dot(a, b, PRECISION)``: ``tl.dot`` in input precision ``"tf32x3"`` by default (fp32-level
accuracy on tensor cores; ``"ieee"`` and ``"tf32"`` on request), or ``"tf32x3i"``, the same three TF32 products
with the operands split in the kernel (see :func:`_dot` and :class:`TritonPOYO`). Block sizes are
powers of two, dot operands at least 16 wide; head dims and model-width chunks are padded with masks.
``python -m poyo_rt.kernels.aot --config NAME`` compiles the kernels for sm_90 on a CPU and reports their
registers and spills (none for poyo_1.3M or dim512_depth2 under ``"tf32x3"``) and their machine code's size.

Shapes fixed by the model (width, head size, heads, hidden units, latents, output queries, residual pieces)
are ``tl.constexpr``: each model compiles its own kernels (once; only the encoder's key count follows the
padding bucket), with loop bounds, masks and strides known to the compiler. Compiled for sm_90 by triton 3.9,
this alone took poyo_1.3M's processor kernels from 247-255 registers a thread to 108-168, and 12-31 % fewer
instructions a thread (docs/performance.md, thirteenth session).
``TritonPOYO(unroll=True)`` further unrolls loops of at most MAX_UNROLL_STEPS steps (:func:`_unroll`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from poyo_rt.model.fused import FusedPOYO

__all__ = ["Partials", "State", "TritonPOYO", "triton_forward", "launches_per_forward", "residual_layout",
           "latent_cos_sin", "ln_proj_rotate", "encoder_attention", "combine_proj", "attention", "decoder_attention",
           "ffn", "ffn_hidden", "project_residual", "readout"]

LN_EPS = 1e-5  # torch.nn.LayerNorm's default, as every LayerNorm of POYO
PRECISIONS = ("tf32x3", "ieee", "tf32", "tf32x3i")  # tl.dot input precisions (triton >= 3.0), and _dot's own
DEFAULT_PRECISION = "tf32x3"
PROJ_BLOCK_M = 16  # rows per program of _ln_proj_rotate_kernel (32 spills registers on sm_90)
ATTN_BLOCK_M = 16  # queries per program of _attention_kernel
ENC_MAX_BLOCK_M = 128  # latent queries per program of _encoder_attention_kernel (at most; all of them if fewer)
ENC_MIN_BLOCK_M = 64  # ... and at least (32 or 16 spill ~40 KB a thread on sm_90: ptxas keeps 32 registers)
ENC_BLOCK_N = 32  # keys per step of _encoder_attention_kernel
ENC_NUM_WARPS = 8  # _encoder_attention_kernel holds (128, H) queries and outputs
BLOCK_N = 32  # keys per step of _attention_kernel (64 spills registers on sm_90)
ROW_BLOCK_M = 16  # rows per program of _combine_proj_kernel, _ffn_kernel and _readout_kernel
FFN_BLOCK_F = 64  # FFN hidden units per program of _ffn_kernel (the H200 sweep, twelfth session: dim 512 3 % faster than 32, poyo_1.3M the same)
MAX_WIDTH_BLOCK = 32  # model-width columns per step: K chunks, output column blocks (64 spills on sm_90)
# encoder programs to aim at (an H100/H200 has 132 SMs). 128, not 256: poyo_1.3M's 2,200 keys in 64 splits of
# 64 keys instead of 69 of 32, fewer partials to combine (H200, tools/profile_gpu.py --sweep: 299 vs 337 µs)
ENC_TARGET_PROGRAMS = 128
COMBINE_BLOCK_S = 8  # encoder key splits _combine_proj_kernel loads at once
COMBINE_NUM_WARPS = 8  # its (8 splits, 16 rows, 64) tile on 4 warps spilled 8 B under triton 3.6's compiler
PIECES_STEP = tl.constexpr(4)  # partial sums (State pieces, per-head projections) a kernel loads at once
RESIDUAL_LAYOUTS = ("auto", "split", "summed")  # see TritonPOYO
SPLIT_MAX_ROW_FLOATS = 4096  # "auto" keeps residual sums split while a row and its pieces fit in 16 KB
# Summed residuals (wide models): rows a program of the projection and FFN kernels. 16: dim 512's 512 rows
# in 32 row blocks, enough programs for the 132 SMs; 64 re-read each weight tile 4x less but left most SMs
# idle (H200, tools/profile_gpu.py --sweep: dim512_depth2 1,067 µs at 16 vs 1,198 at 64, with 128 encoder
# programs). Spill-free on sm_90 (aot.py) with 8 warps for _ln_proj_rotate_kernel, 4 for _proj_residual_kernel
# and the FFN activations.
SUMMED_BLOCK_M = 16
PROC_WARPS = 4  # warps a program of the processor's attention, and of the split layout's projection and FFN kernels
SUMMED_PROJ_WARPS = 8
# TritonPOYO(unroll=True): loops of at most this many steps are unrolled whole (poyo_1.3M's are 1-4 steps; dim 512's
# 16-step K loops unrolled spilled ~120 B-1.3 KB a thread on sm_90, so loops that long stay loops)
MAX_UNROLL_STEPS = 4


@triton.constexpr_function
def _unroll(n, step, unroll):
    """``loop_unroll_factor`` of a loop over ``range(0, n, step)`` (all constexpr): its whole step count when
    ``unroll`` and that is at most MAX_UNROLL_STEPS, else 1 (a loop). Shapes are constexpr in the kernels, so an
    unrolled loop is straight code: no loop counters, masks and addresses folded, loads free to be issued early."""
    steps = -(-n // step)
    return steps if unroll and steps <= MAX_UNROLL_STEPS else 1


# ------------------------------------------------------------------------------------- device helpers
@triton.jit
def _split_tf32(x):
    """``x = hi + lo`` (exactly) for finite fp32 ``x``: ``hi`` rounded to TF32 (10 mantissa bits, to nearest with
    ties away, as ``cvt.rna.tf32.f32``), ``lo`` the rest."""
    hi = ((x.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """``a @ b`` (fp32 accumulation) in a ``tl.dot`` input precision, or ``"tf32x3i"``: Triton's tf32x3 written
    out here, ``lo_a hi_b + hi_a lo_b + hi_a hi_b`` in TF32 products (:func:`_split_tf32`). Same accuracy; the
    split takes 3 instructions an element where Triton's takes 5 (it also guards infinities, which the model's
    finite activations and weights never are); in the unrolled attention kernel's sm_90 code Triton's splits,
    counted by their infinity checks, were about half of all instructions."""
    if PRECISION == "tf32x3i":
        a_hi, a_lo = _split_tf32(a)
        b_hi, b_lo = _split_tf32(b)
        out = tl.dot(a_lo, b_hi, input_precision="tf32")
        out = tl.dot(a_hi, b_lo, out, input_precision="tf32")
        out = tl.dot(a_hi, b_hi, out, input_precision="tf32")
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


@triton.jit
def _swap_pairs(x):
    """``x`` (R, C) with the channels of each pair ``(2i, 2i+1)`` swapped (C even): ``x[:, c ^ 1]``, moved in
    registers (and through shared memory where the layout needs it) instead of computed again."""
    even, odd = tl.split(tl.reshape(x, [x.shape[0], x.shape[1] // 2, 2]))
    return tl.reshape(tl.join(odd, even), [x.shape[0], x.shape[1]])


@triton.jit
def _rotate(x, x_sw, cos, sin, offs_h):
    """Rotate pairs of ``x`` (R, BH) by angles whose cos/sin (R, BH) are repeated per pair; ``x_sw`` is
    ``x`` with each pair's channels swapped."""
    sign = tl.where(offs_h % 2 == 0, -1.0, 1.0)
    return x * cos + x_sw * (sin * sign[None, :])


@triton.jit
def _angles_from_times(times, omega_ptr, offs_h, mask_h):
    """cos, sin (R, BH) float32 of ``times`` (R,) float64 s at ``omega`` (H/2,) float64 rad/s (angles in
    float64, rounded once)."""
    omega = tl.load(omega_ptr + offs_h // 2, mask=mask_h, other=0.0)
    angles = times[:, None] * omega[None, :]
    return tl.cos(angles).to(tl.float32), tl.sin(angles).to(tl.float32)


@triton.jit
def _angles_from_table(cos_ptr, sin_ptr, rows, mask_rows, offs_h, mask_h, head_dim):
    """cos, sin (R, BH) of rows ``rows`` (R,) of ``(N, H/2)`` float32 tables."""
    ptrs = rows[:, None] * (head_dim // 2) + offs_h[None, :] // 2
    mask = mask_rows[:, None] & mask_h[None, :]
    return tl.load(cos_ptr + ptrs, mask=mask, other=1.0), tl.load(sin_ptr + ptrs, mask=mask, other=0.0)


@triton.jit
def _stats_update(mean, m2, x, k0, mask_k):
    """LayerNorm statistics one column chunk further (Chan et al.'s pairwise update): ``mean`` and ``m2``
    (R,), the mean and sum of squared deviations of each row's columns ``[0, k0)``, become those of
    ``[0, k0 + n_k)`` given the chunk ``x`` (R, BK) of columns ``k0 + arange(BK)`` (``mask_k``: the n_k
    valid ones, ``x`` 0 beyond). On the first chunk they are that chunk's own, as a one-chunk LayerNorm's."""
    n_a = k0 * 1.0
    n_b = tl.sum(mask_k.to(tl.float32), axis=0)
    n = n_a + n_b
    mean_b = tl.sum(x, axis=1) / n_b
    xc = tl.where(mask_k[None, :], x - mean_b[:, None], 0.0)
    delta = mean_b - mean
    return mean + delta * (n_b / n), m2 + tl.sum(xc * xc, axis=1) + delta * delta * (n_a * n_b / n)


@triton.jit
def _normalize(x, mean, rstd, offs_k, mask_k, w_ptr, b_ptr):
    """LayerNorm of the column chunk ``x`` (R, BK) (columns ``offs_k``) from its rows' ``mean`` and
    ``rstd`` (R,); padding columns are 0."""
    w = tl.load(w_ptr + offs_k, mask=mask_k, other=0.0)
    b = tl.load(b_ptr + offs_k, mask=mask_k, other=0.0)
    xn = (x - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :]
    return tl.where(mask_k[None, :], xn, 0.0)


@triton.jit
def _linear_t(x, w_ptr, out_idx, mask_out, in_idx, mask_in, ld, PRECISION: tl.constexpr):
    """``x`` (R, BK) @ ``W[out_idx, in_idx]^T`` (W row-major, leading dim ``ld``): (R, len(out_idx))."""
    w = tl.load(w_ptr + out_idx[None, :] * ld + in_idx[:, None], mask=mask_out[None, :] & mask_in[:, None], other=0.0)
    return _dot(x, w, PRECISION)


@triton.jit
def _out_proj_block(o_cos, o_sin, wo_ptr, head, head_dim, offs_h, mask_h, offs_c, mask_c, inner,
                    UNROTATE: tl.constexpr, PRECISION: tl.constexpr, SWAP: tl.constexpr):
    """Columns ``offs_c`` (R, BC) of ``unrotate(o) @ Wo[:, head*H:(head+1)*H]^T``, Wo (dim, inner), from
    ``o_cos = o cos`` and ``o_sin = o sin (-1 if c even else +1)`` (R, BH) (cos/sin those of the rows'
    times ``t``): ``o`` rotated back by ``-t`` through the column-swapped weights, or with ``SWAP`` rotated
    back in registers first (``o_cos + o_sin[:, c ^ 1]``: one product instead of two). Without
    ``UNROTATE``, ``o_cos @ Wo[:, head]^T`` (``o_sin`` unused)."""
    cols = head * head_dim + offs_h
    if UNROTATE and SWAP:
        out = _linear_t(o_cos + _swap_pairs(o_sin), wo_ptr, offs_c, mask_c, cols, mask_h, inner, PRECISION)
    else:
        out = _linear_t(o_cos, wo_ptr, offs_c, mask_c, cols, mask_h, inner, PRECISION)
        if UNROTATE:
            out += _linear_t(o_sin, wo_ptr, offs_c, mask_c, head * head_dim + (offs_h ^ 1), mask_h, inner, PRECISION)
    return out


@triton.jit
def _load_state(base_ptr, base_rows, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, offs_d, mask_d, n_rows, dim,
                HAS_PIECES: tl.constexpr, UNROLL: tl.constexpr):
    """Columns ``offs_d`` of rows of a :class:`State`: ``base[base_rows] + (sum_c pieces[c, offs_m] + bias)``
    (BM, BD), 0 where masked; base (*, dim), pieces (C, n_rows, dim) added in order; without ``HAS_PIECES``
    just the base rows."""
    mask = mask_m[:, None] & mask_d[None, :]
    x = tl.load(base_ptr + base_rows[:, None] * dim + offs_d[None, :], mask=mask, other=0.0)
    if HAS_PIECES:
        x = x + (_sum_pieces(pieces_ptr, n_pieces, offs_m, offs_d, mask, n_rows, dim, UNROLL)
                 + tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[None, :])
    return x


@triton.jit
def _sum_pieces(pieces_ptr, n_pieces, offs_m, offs_d, mask, n_rows, dim, UNROLL: tl.constexpr):
    """``sum_c pieces[c, offs_m, offs_d]`` (BM, BD) of a (C, n_rows, dim) tensor, PIECES_STEP pieces a load
    (one memory round trip each, not one per piece: a loop of plain loads is not software-pipelined), in a
    fixed order."""
    total = tl.zeros([offs_m.shape[0], offs_d.shape[0]], tl.float32)
    for c0 in tl.range(0, n_pieces, PIECES_STEP, loop_unroll_factor=_unroll(n_pieces, PIECES_STEP, UNROLL)):
        offs_c = c0 + tl.arange(0, PIECES_STEP)
        ptrs = pieces_ptr + ((offs_c[:, None, None] * n_rows + offs_m[None, :, None]) * dim + offs_d[None, None, :])
        tile = tl.load(ptrs, mask=(offs_c < n_pieces)[:, None, None] & mask[None, :, :], other=0.0)
        total += tl.sum(tile, axis=0)
    return total


@triton.jit
def _ln_project_pair(x_ptr, base_rows, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, n_rows, dim, ln_w_ptr, ln_b_ptr,
                     w_ptr, w_rows, mask_h, eps, HAS_PIECES: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr, UNROLL: tl.constexpr,
                     SWAP: tl.constexpr):
    """``LayerNorm(x) @ W[w_rows]^T`` and ``... @ W[w_rows ^ 1]^T`` (BM, BH) each (the projection and its
    pair-swapped twin, for a rotation), x the rows of a :class:`State` (see :func:`_load_state`) read in
    column chunks of BLOCK_K twice: the LayerNorm statistics, then the projection's K loop. With ``SWAP`` the
    twin is the projection's columns swapped in registers (:func:`_swap_pairs`: the same values, one product
    instead of two); else a second product."""
    mean = tl.zeros([BLOCK_M], tl.float32)
    m2 = tl.zeros([BLOCK_M], tl.float32)
    for k0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dim
        x = _load_state(x_ptr, base_rows, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, offs_k, mask_k, n_rows,
                        dim, HAS_PIECES, UNROLL)
        mean, m2 = _stats_update(mean, m2, x, k0, mask_k)
    rstd = 1.0 / tl.sqrt(m2 / dim + eps)
    y = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    y_sw = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    for k0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dim
        x = _load_state(x_ptr, base_rows, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, offs_k, mask_k, n_rows,
                        dim, HAS_PIECES, UNROLL)
        xn = _normalize(x, mean, rstd, offs_k, mask_k, ln_w_ptr, ln_b_ptr)
        y += _linear_t(xn, w_ptr, w_rows, mask_h, offs_k, mask_k, dim, PRECISION)
        if not SWAP:
            y_sw += _linear_t(xn, w_ptr, w_rows ^ 1, mask_h, offs_k, mask_k, dim, PRECISION)
    if SWAP:
        y_sw = _swap_pairs(y)
    return y, y_sw


@triton.jit
def _softmax_step(s, valid, m_i, l_i):
    """One online-softmax step on scores ``s`` (BM, BN) (``valid`` broadcasts to it): returns the new running
    max and sum, the weights ``p`` (BM, BN) of this block and the factor ``alpha`` (BM,) that rescales the
    output so far. Rows with no valid key so far keep max -inf, sum 0 (and output 0)."""
    s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    return m_new, l_i * alpha + tl.sum(p, axis=1), p, alpha


@triton.jit
def _store_rows(ptr, x, group, n_rows, offs_m, mask_m, offs_c, mask_c, width):
    """Store ``x`` (BM, BC) at rows ``offs_m`` of group ``group`` of a (G, n_rows, width) tensor."""
    tl.store(ptr + (group * n_rows + offs_m[:, None]) * width + offs_c[None, :], x,
             mask=mask_m[:, None] & mask_c[None, :])


# ------------------------------------------------------------------------------------------- kernels
@triton.jit
def _ln_proj_rotate_kernel(x_ptr, pieces_ptr, n_pieces: tl.constexpr, bias_ptr, ln_w_ptr, ln_b_ptr, w_ptr, cos_ptr,
                           sin_ptr, out_ptr, n_rows: tl.constexpr, dim: tl.constexpr, head_dim: tl.constexpr,
                           n_rot_groups: tl.constexpr, eps,
                           HAS_PIECES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_H: tl.constexpr, PRECISION: tl.constexpr, UNROLL: tl.constexpr,
                           SWAP: tl.constexpr):
    """out[g] = rotate(LayerNorm(x) @ W[g*H:(g+1)*H]^T) for groups g < n_rot_groups, unrotated beyond.

    x (N, dim): a :class:`State` (x_ptr, pieces, bias), read in column chunks of BLOCK_K twice (the
    LayerNorm statistics, then the projection's K loop); W (G*H, dim); cos/sin (N, H/2) rotation tables of
    the rows; out (G, N, H). Grid (cdiv(N, BLOCK_M), G).
    """
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    group = tl.program_id(1)
    offs_h = tl.arange(0, BLOCK_H)
    mask_m, mask_h = offs_m < n_rows, offs_h < head_dim
    y, y_sw = _ln_project_pair(x_ptr, offs_m, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, n_rows, dim, ln_w_ptr,
                               ln_b_ptr, w_ptr, group * head_dim + offs_h, mask_h, eps, HAS_PIECES, BLOCK_M, BLOCK_K,
                               BLOCK_H, PRECISION, UNROLL, SWAP)
    cos, sin = _angles_from_table(cos_ptr, sin_ptr, offs_m, mask_m, offs_h, mask_h, head_dim)
    rotated = group < n_rot_groups
    cos = tl.where(rotated, cos, 1.0)
    sin = tl.where(rotated, sin, 0.0)
    _store_rows(out_ptr, _rotate(y, y_sw, cos, sin, offs_h), group, n_rows, offs_m, mask_m, offs_h, mask_h, head_dim)


@triton.jit
def _encoder_attention_kernel(q_ptr, table_ptr, packed_ptr, omega_ptr, acc_ptr, m_ptr, l_ptr,
                              n_q: tl.constexpr, n_keys, head_dim: tl.constexpr, n_heads: tl.constexpr,
                              keys_per_split, scale,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
                              PRECISION: tl.constexpr):
    """:class:`Partials` of the encoder cross-attention for one (key split, head, query block).

    q (h, Nq, H) rotated latent queries; table (rows, 2*h*H) keys | values per (unit, type); packed:
    rows [0, n), window-relative times [n, 2n) (float64 s), mask [2n, 3n) (> 0.5 = real) for n = n_keys.
    Keys and values are rotated by their times here, de-interleaved (even channels | odd channels, BLOCK_P
    pairs each) so that each pair's angle is computed once. Grid (S, h, cdiv(Nq, BLOCK_M));
    ``keys_per_split`` is a multiple of BLOCK_N.
    """
    split, head = tl.program_id(0), tl.program_id(1)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, BLOCK_P)
    mask_m, mask_p = offs_m < n_q, offs_p < head_dim // 2
    even, odd = 2 * offs_p, 2 * offs_p + 1
    q_mask = mask_m[:, None] & mask_p[None, :]
    q_rows = q_ptr + (head * n_q + offs_m[:, None]) * head_dim
    q_even = tl.load(q_rows + even[None, :], mask=q_mask, other=0.0)
    q_odd = tl.load(q_rows + odd[None, :], mask=q_mask, other=0.0)
    omega = tl.load(omega_ptr + offs_p, mask=mask_p, other=0.0)
    row_len = 2 * n_heads * head_dim
    k_col, v_col = head * head_dim, (n_heads + head) * head_dim
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc_even = tl.zeros([BLOCK_M, BLOCK_P], tl.float32)
    acc_odd = tl.zeros([BLOCK_M, BLOCK_P], tl.float32)
    for start in range(0, keys_per_split, BLOCK_N):
        keys = split * keys_per_split + start + tl.arange(0, BLOCK_N)
        in_range = keys < n_keys
        valid = in_range & (tl.load(packed_ptr + 2 * n_keys + keys, mask=in_range, other=0.0) > 0.5)
        rows = tl.load(packed_ptr + keys, mask=valid, other=0.0).to(tl.int64)  # padding reads row 0
        times = tl.load(packed_ptr + n_keys + keys, mask=valid, other=0.0)
        angles = times[:, None] * omega[None, :]  # (BN, BP) float64
        cos, sin = tl.cos(angles).to(tl.float32), tl.sin(angles).to(tl.float32)
        tile_mask = valid[:, None] & mask_p[None, :]
        base = table_ptr + rows[:, None] * row_len
        k_even = tl.load(base + k_col + even[None, :], mask=tile_mask, other=0.0)
        k_odd = tl.load(base + k_col + odd[None, :], mask=tile_mask, other=0.0)
        v_even = tl.load(base + v_col + even[None, :], mask=tile_mask, other=0.0)
        v_odd = tl.load(base + v_col + odd[None, :], mask=tile_mask, other=0.0)
        s = _dot(q_even, tl.trans(k_even * cos - k_odd * sin), PRECISION)
        s += _dot(q_odd, tl.trans(k_even * sin + k_odd * cos), PRECISION)
        m_i, l_i, p, alpha = _softmax_step(s * scale, valid[None, :], m_i, l_i)
        acc_even = acc_even * alpha[:, None] + _dot(p, v_even * cos - v_odd * sin, PRECISION)
        acc_odd = acc_odd * alpha[:, None] + _dot(p, v_even * sin + v_odd * cos, PRECISION)
    base_row = split * n_heads + head
    tl.store(m_ptr + base_row * n_q + offs_m, m_i, mask=mask_m)
    tl.store(l_ptr + base_row * n_q + offs_m, l_i, mask=mask_m)
    out_rows = acc_ptr + (base_row * n_q + offs_m[:, None]) * head_dim
    tl.store(out_rows + even[None, :], acc_even, mask=q_mask)
    tl.store(out_rows + odd[None, :], acc_odd, mask=q_mask)


@triton.jit
def _combine_proj_kernel(acc_ptr, m_ptr, l_ptr, n_splits, cos_ptr, sin_ptr, wo_ptr, out_ptr,
                         n_rows: tl.constexpr, dim: tl.constexpr, head_dim: tl.constexpr, PROJECT: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
                         BLOCK_S: tl.constexpr, PRECISION: tl.constexpr, SWAP: tl.constexpr):
    """P[head][:, cols] = (unrotate(o_head) @ Wo[:, head]^T)[:, cols] (N, dim) for one (row block, head,
    column block of BLOCK_C) with o_head the combination of the head's :class:`Partials` (S, h, N, H);
    cos/sin (N, H/2) the rows' rotation tables. Grid (cdiv(N, BLOCK_M), h, cdiv(dim, BLOCK_C)).
    Without ``PROJECT`` (summed residuals): o_head itself into columns ``head*H ...`` of out (N, h*H); grid
    (cdiv(N, BLOCK_M), h, 1). The splits are combined BLOCK_S at a time (a loop of single-split loads would
    wait on memory once per split: ~70 round trips for poyo_1.3M's 2,200 keys, as the sm_90 PTX shows)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    head, n_heads = tl.program_id(1), tl.num_programs(1)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_h = tl.arange(0, BLOCK_H)
    mask_m, mask_c, mask_h = offs_m < n_rows, offs_c < dim, offs_h < head_dim
    m_run = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_run = tl.zeros([BLOCK_M], tl.float32)
    o = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):  # BLOCK_S splits a step, loaded at once (one memory round trip)
        offs_s = s0 + tl.arange(0, BLOCK_S)
        base_rows = offs_s * n_heads + head  # (S,) rows of the (S*h, N) partials
        mask_sm = (offs_s < n_splits)[:, None] & mask_m[None, :]
        ptrs = base_rows[:, None] * n_rows + offs_m[None, :]
        m_s = tl.load(m_ptr + ptrs, mask=mask_sm, other=float("-inf"))  # (S, BM)
        l_s = tl.load(l_ptr + ptrs, mask=mask_sm, other=0.0)
        m_new = tl.maximum(m_run, tl.max(m_s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        a = tl.exp(m_run - m_safe)  # (BM,) rescales what was combined so far
        b = tl.exp(m_s - m_safe[None, :])  # (S, BM) weights of this step's splits (0 for empty ones)
        l_run = l_run * a + tl.sum(l_s * b, axis=0)
        acc = tl.load(acc_ptr + ptrs[:, :, None] * head_dim + offs_h[None, None, :],
                      mask=mask_sm[:, :, None] & mask_h[None, None, :], other=0.0)  # (S, BM, BH)
        o = o * a[:, None] + tl.sum(acc * b[:, :, None], axis=0)
        m_run = m_new
    o = o / tl.where(mask_m, l_run, 1.0)[:, None]
    if PROJECT:
        cos, sin = _angles_from_table(cos_ptr, sin_ptr, offs_m, mask_m, offs_h, mask_h, head_dim)
        sign = tl.where(offs_h % 2 == 0, -1.0, 1.0)
        p = _out_proj_block(o * cos, o * (sin * sign[None, :]), wo_ptr, head, head_dim, offs_h, mask_h, offs_c,
                            mask_c, n_heads * head_dim, True, PRECISION, SWAP)
        _store_rows(out_ptr, p, head, n_rows, offs_m, mask_m, offs_c, mask_c, dim)
    else:
        _store_rows(out_ptr, o, 0, n_rows, offs_m, mask_m, head * head_dim + offs_h, mask_h, n_heads * head_dim)


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, wo_ptr, out_ptr, n_q: tl.constexpr, n_keys: tl.constexpr,
                      head_dim: tl.constexpr, scale, emb_ptr, ln_w_ptr, ln_b_ptr, wq_ptr, packed_ptr, rows_off,
                      times_off, omega_ptr, dim: tl.constexpr, eps,
                      Q_FROM_EMB: tl.constexpr, UNROTATE: tl.constexpr, PROJECT: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                      PRECISION: tl.constexpr, UNROLL: tl.constexpr, SWAP: tl.constexpr):
    """P[head] = unrotate(softmax(q k^T / sqrt(H)) v) @ Wo[:, head]^T (Nq, dim) for one (head, query block).

    k, v (h, Nk, H) head-major; Wo (dim, h*H); ``UNROTATE``: rotate the output back by cos/sin (Nq, H/2).
    Without ``PROJECT`` (summed residuals): the head's output o itself, neither rotated back nor projected,
    into columns ``head*H ...`` of out (Nq, h*H) (:func:`_proj_residual_kernel` does both).
    Queries: q (h, Nq, H), or with ``Q_FROM_EMB`` computed here as
    ``rotate(LayerNorm(emb[rows]) @ Wq[head]^T, times)``, rows = packed[rows_off + i], float64 times =
    packed[times_off + i] (the decoder; q_ptr is unused, as are the emb ... eps arguments without it).
    Model-width rows (emb rows, the output) are read and written in column chunks of BLOCK_K.
    Grid (h, cdiv(Nq, BLOCK_M)).
    """
    head, n_heads = tl.program_id(0), tl.num_programs(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_h = tl.arange(0, BLOCK_H)
    mask_m, mask_h = offs_m < n_q, offs_h < head_dim
    if Q_FROM_EMB:
        rows = tl.load(packed_ptr + rows_off + offs_m, mask=mask_m, other=0.0).to(tl.int64)
        y, y_sw = _ln_project_pair(emb_ptr, rows, emb_ptr, 0, emb_ptr, offs_m, mask_m, n_q, dim, ln_w_ptr, ln_b_ptr,
                                   wq_ptr, head * head_dim + offs_h, mask_h, eps, False, BLOCK_M, BLOCK_K, BLOCK_H,
                                   PRECISION, UNROLL, SWAP)
        times = tl.load(packed_ptr + times_off + offs_m, mask=mask_m, other=0.0)
        cos, sin = _angles_from_times(times, omega_ptr, offs_h, mask_h)
        q = _rotate(y, y_sw, cos, sin, offs_h)
    else:
        q = tl.load(q_ptr + (head * n_q + offs_m[:, None]) * head_dim + offs_h[None, :],
                    mask=mask_m[:, None] & mask_h[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_H], tl.float32)
    for start in tl.range(0, n_keys, BLOCK_N, loop_unroll_factor=_unroll(n_keys, BLOCK_N, UNROLL)):
        keys = start + tl.arange(0, BLOCK_N)
        valid = keys < n_keys
        k_t = tl.load(k_ptr + (head * n_keys + keys[None, :]) * head_dim + offs_h[:, None],
                      mask=valid[None, :] & mask_h[:, None], other=0.0)
        v = tl.load(v_ptr + (head * n_keys + keys[:, None]) * head_dim + offs_h[None, :],
                    mask=valid[:, None] & mask_h[None, :], other=0.0)
        s = _dot(q, k_t, PRECISION) * scale
        m_i, l_i, p, alpha = _softmax_step(s, valid[None, :], m_i, l_i)
        acc = acc * alpha[:, None] + _dot(p, v, PRECISION)
    o = acc / tl.where(mask_m, l_i, 1.0)[:, None]
    if PROJECT:
        if UNROTATE:
            cos, sin = _angles_from_table(cos_ptr, sin_ptr, offs_m, mask_m, offs_h, mask_h, head_dim)
            sign = tl.where(offs_h % 2 == 0, -1.0, 1.0)
            o_cos, o_sin = o * cos, o * (sin * sign[None, :])
        else:
            o_cos, o_sin = o, o
        for c0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
            offs_c = c0 + tl.arange(0, BLOCK_K)
            mask_c = offs_c < dim
            p = _out_proj_block(o_cos, o_sin, wo_ptr, head, head_dim, offs_h, mask_h, offs_c, mask_c,
                                n_heads * head_dim, UNROTATE, PRECISION, SWAP)
            _store_rows(out_ptr, p, head, n_q, offs_m, mask_m, offs_c, mask_c, dim)
    else:
        _store_rows(out_ptr, o, 0, n_q, offs_m, mask_m, head * head_dim + offs_h, mask_h, n_heads * head_dim)


@triton.jit
def _x1_chunk(x_ptr, x_rows, pieces_ptr, n_pieces, bias_ptr, proj_ptr, n_heads, bo_ptr, offs_m, mask_m, offs_k,
              mask_k, n_rows, dim, HAS_PIECES: tl.constexpr, HAS_PROJ: tl.constexpr, HAS_OUT_BIAS: tl.constexpr,
              UNROLL: tl.constexpr):
    """Columns ``offs_k`` (BM, BK) of ``x1 = x + (sum_h P[h] + bo)`` (see :func:`_ffn_kernel`); 0 where masked.
    Without ``HAS_PROJ`` just the rows of x."""
    x = _load_state(x_ptr, x_rows, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, offs_k, mask_k, n_rows, dim,
                    HAS_PIECES, UNROLL)
    if HAS_PROJ:
        mask = mask_m[:, None] & mask_k[None, :]
        proj = _sum_pieces(proj_ptr, n_heads, offs_m, offs_k, mask, n_rows, dim, UNROLL)
        if HAS_OUT_BIAS:
            proj += tl.load(bo_ptr + offs_k, mask=mask_k, other=0.0)[None, :]
        x = x + proj
    return x


@triton.jit
def _ffn_kernel(x_ptr, x_rows_off, packed_ptr, pieces_ptr, n_pieces: tl.constexpr, bias_ptr, proj_ptr,
                n_heads: tl.constexpr, bo_ptr, ln_w_ptr, ln_b_ptr, w1_ptr, b1_ptr, w2_ptr, x1_ptr, f_ptr,
                n_rows: tl.constexpr, dim: tl.constexpr, hidden: tl.constexpr, eps,
                X_GATHER: tl.constexpr, HAS_PIECES: tl.constexpr, HAS_OUT_BIAS: tl.constexpr,
                PROJECT_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr,
                PRECISION: tl.constexpr, UNROLL: tl.constexpr):
    """The residual of an attention, then one hidden chunk of its FFN, for one (row block, chunk):
    ``x1 = x + (sum_h P[h] + bo)``; ``F[chunk] = GEGLU(LayerNorm(x1) @ W1^T + b1)[:, chunk] @ W2[:, chunk]^T``.

    x (N, dim): a :class:`State` (x_ptr, pieces, bias), its base rows gathered at packed[x_rows_off + i]
    with ``X_GATHER``; P (h, N, dim) per-head out-projections; W1 (2*hidden, dim) value rows then gate
    rows, b1; W2 (dim, hidden). Writes x1 (N, dim) (the chunk-0 programs) and F (C, N, dim); the FFN
    output is ``sum_c F[c] + b2``. x1 is computed in column chunks of BLOCK_K twice (the LayerNorm
    statistics, then the K loop of W1); F is written in column blocks of BLOCK_K.
    Without ``PROJECT_OUT`` (summed residuals: x is then whole rows, no P, no bias): the activations
    ``GEGLU(LayerNorm(x) @ W1^T + b1)[:, chunk]`` into f (N, hidden), and no x1.
    Grid (cdiv(N, BLOCK_M), cdiv(hidden, BLOCK_F)).
    """
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    chunk = tl.program_id(1)
    offs_f = chunk * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_m, mask_f = offs_m < n_rows, offs_f < hidden
    if X_GATHER:
        x_rows = tl.load(packed_ptr + x_rows_off + offs_m, mask=mask_m, other=0.0).to(tl.int64)
    else:
        x_rows = offs_m
    x1_rows = tl.where(chunk == 0, n_rows, 0)  # the chunk-0 programs write x1
    mean = tl.zeros([BLOCK_M], tl.float32)
    m2 = tl.zeros([BLOCK_M], tl.float32)
    for k0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dim
        x = _x1_chunk(x_ptr, x_rows, pieces_ptr, n_pieces, bias_ptr, proj_ptr, n_heads, bo_ptr, offs_m, mask_m,
                      offs_k, mask_k, n_rows, dim, HAS_PIECES, PROJECT_OUT, HAS_OUT_BIAS, UNROLL)
        if PROJECT_OUT:
            tl.store(x1_ptr + offs_m[:, None] * dim + offs_k[None, :], x,
                     mask=(offs_m < x1_rows)[:, None] & mask_k[None, :])
        mean, m2 = _stats_update(mean, m2, x, k0, mask_k)
    rstd = 1.0 / tl.sqrt(m2 / dim + eps)
    a = tl.zeros([BLOCK_M, BLOCK_F], tl.float32)
    g = tl.zeros([BLOCK_M, BLOCK_F], tl.float32)
    for k0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dim
        x = _x1_chunk(x_ptr, x_rows, pieces_ptr, n_pieces, bias_ptr, proj_ptr, n_heads, bo_ptr, offs_m, mask_m,
                      offs_k, mask_k, n_rows, dim, HAS_PIECES, PROJECT_OUT, HAS_OUT_BIAS, UNROLL)
        xn = _normalize(x, mean, rstd, offs_k, mask_k, ln_w_ptr, ln_b_ptr)
        a += _linear_t(xn, w1_ptr, offs_f, mask_f, offs_k, mask_k, dim, PRECISION)
        g += _linear_t(xn, w1_ptr, hidden + offs_f, mask_f, offs_k, mask_k, dim, PRECISION)
    a += tl.load(b1_ptr + offs_f, mask=mask_f, other=0.0)[None, :]
    g += tl.load(b1_ptr + hidden + offs_f, mask=mask_f, other=0.0)[None, :]
    act = a * (g * 0.5 * (1.0 + tl.erf(g * 0.7071067811865476)))  # GEGLU (erf GELU); 0 where masked
    if PROJECT_OUT:
        for c0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
            offs_c = c0 + tl.arange(0, BLOCK_K)
            mask_c = offs_c < dim
            f = _linear_t(act, w2_ptr, offs_c, mask_c, offs_f, mask_f, hidden, PRECISION)
            _store_rows(f_ptr, f, chunk, n_rows, offs_m, mask_m, offs_c, mask_c, dim)
    else:
        _store_rows(f_ptr, act, 0, n_rows, offs_m, mask_m, offs_f, mask_f, hidden)


@triton.jit
def _proj_residual_kernel(a_ptr, w_ptr, bias_ptr, res_ptr, packed_ptr, res_rows_off, cos_ptr, sin_ptr, out_ptr,
                          n_rows: tl.constexpr, k_dim: tl.constexpr, dim: tl.constexpr, head_dim: tl.constexpr,
                          UNROTATE: tl.constexpr, RES_GATHER: tl.constexpr, HAS_BIAS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
                          PRECISION: tl.constexpr, UNROLL: tl.constexpr):
    """out = res + a' @ W^T (+ bias) (N, dim), one (row block, column block of BLOCK_C) a program: a residual
    add with its sum done in one place (summed residuals).

    a (N, k_dim): attention outputs (h*H columns, heads side by side) or FFN activations; ``UNROTATE``: a' is
    ``a`` rotated back by the rows' cos/sin (N, H/2) head by head (pairs ``(2i, 2i+1)`` of each head's H
    channels), else a' = a; W (dim, k_dim); res (*, dim), its rows gathered at packed[res_rows_off + i] with
    ``RES_GATHER`` (the decoder's session rows), else rows 0..N-1. Grid (cdiv(N, BLOCK_M), cdiv(dim, BLOCK_C)).
    """
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m, mask_c = offs_m < n_rows, offs_c < dim
    y = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    for k0 in tl.range(0, k_dim, BLOCK_K, loop_unroll_factor=_unroll(k_dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_dim
        mask = mask_m[:, None] & mask_k[None, :]
        a = tl.load(a_ptr + offs_m[:, None] * k_dim + offs_k[None, :], mask=mask, other=0.0)
        if UNROTATE:  # BLOCK_K is even, so each pair's twin is in the chunk's columns offs_k ^ 1
            a_sw = tl.load(a_ptr + offs_m[:, None] * k_dim + (offs_k ^ 1)[None, :], mask=mask, other=0.0)
            cos, sin = _angles_from_table(cos_ptr, sin_ptr, offs_m, mask_m, offs_k % head_dim, mask_k, head_dim)
            a = _rotate(a, a_sw, cos, -sin, offs_k)
        y += _linear_t(a, w_ptr, offs_c, mask_c, offs_k, mask_k, k_dim, PRECISION)
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0)[None, :]
    if RES_GATHER:
        res_rows = tl.load(packed_ptr + res_rows_off + offs_m, mask=mask_m, other=0.0).to(tl.int64)
    else:
        res_rows = offs_m
    mask = mask_m[:, None] & mask_c[None, :]
    y += tl.load(res_ptr + res_rows[:, None] * dim + offs_c[None, :], mask=mask, other=0.0)
    _store_rows(out_ptr, y, 0, n_rows, offs_m, mask_m, offs_c, mask_c, dim)


@triton.jit
def _readout_kernel(x_ptr, pieces_ptr, n_pieces: tl.constexpr, bias_ptr, wr_ptr, br_ptr, out_ptr,
                    n_rows: tl.constexpr, dim: tl.constexpr, d_out: tl.constexpr,
                    HAS_PIECES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr,
                    PRECISION: tl.constexpr, UNROLL: tl.constexpr):
    """out = x @ Wr^T + br (N, d_out) for x (N, dim) a :class:`State`, read in column chunks of BLOCK_K (the
    K loop). Grid (cdiv(N, BLOCK_M),)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.arange(0, BLOCK_O)
    mask_m, mask_o = offs_m < n_rows, offs_o < d_out
    y = tl.zeros([BLOCK_M, BLOCK_O], tl.float32)
    for k0 in tl.range(0, dim, BLOCK_K, loop_unroll_factor=_unroll(dim, BLOCK_K, UNROLL)):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dim
        x = _load_state(x_ptr, offs_m, pieces_ptr, n_pieces, bias_ptr, offs_m, mask_m, offs_k, mask_k, n_rows, dim,
                        HAS_PIECES, UNROLL)
        y += _linear_t(x, wr_ptr, offs_o, mask_o, offs_k, mask_k, dim, PRECISION)
    y += tl.load(br_ptr + offs_o, mask=mask_o, other=0.0)[None, :]
    _store_rows(out_ptr, y, 0, n_rows, offs_m, mask_m, offs_o, mask_o, d_out)


# -------------------------------------------------------------------------------------- host wrappers
def _block(n: int) -> int:
    """Smallest power of two >= n and >= 16 (tl.dot's minimum operand width)."""
    return max(16, triton.next_power_of_2(n))


def _width_block(dim: int, max_width: int = MAX_WIDTH_BLOCK) -> int:
    """Model-width columns a kernel handles at once (K chunks of projections, LayerNorm statistics, output
    column blocks): the whole (padded) row up to ``max_width``, chunks of ``max_width`` beyond."""
    return min(max_width, _block(dim))


def _precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


class Partials(NamedTuple):
    """Split attention outputs: ``acc`` (S, h, N, H) unnormalised, ``m`` running max and ``l`` running sum
    (S, h, N) of the scaled scores; the output is ``sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s``."""

    acc: Tensor
    m: Tensor
    l: Tensor


class State(NamedTuple):
    """Rows held as ``base + (sum_c pieces[c] + bias)``: base (N, dim), pieces (C, N, dim) or None (then the
    rows are ``base`` alone), bias (dim,) or None. Kernels add the pieces in order as they load the rows."""

    base: Tensor
    pieces: Tensor | None = None
    bias: Tensor | None = None

    def args(self) -> tuple:
        """(base, pieces, n_pieces, bias) kernel arguments (``base`` stands in for what is absent)."""
        if self.pieces is None:
            return self.base, self.base, 0, self.base
        return self.base, self.pieces, self.pieces.shape[0], self.bias

    def value(self) -> Tensor:
        """The rows as one tensor (N, dim) (tests)."""
        return self.base if self.pieces is None else self.base + (self.pieces.sum(0) + self.bias)


def _empty(*shape: int, like: Tensor) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def ln_proj_rotate(x: State, ln: nn.LayerNorm, weight: Tensor, cos: Tensor, sin: Tensor, *, head_dim: int,
                   n_rot_groups: int, precision: str = DEFAULT_PRECISION, block_m: int = PROJ_BLOCK_M,
                   num_warps: int = PROC_WARPS, max_width: int = MAX_WIDTH_BLOCK, unroll: bool = False,
                   swap_pairs: bool = False) -> Tensor:
    """``rotate(LayerNorm(x) @ weight^T)`` head-major: x (N, dim), weight (G*H, dim), cos/sin (N, H/2) ->
    (G, N, H); groups >= ``n_rot_groups`` are not rotated. block_m rows a program, on num_warps warps, model
    columns in chunks of at most max_width."""
    n_rows, dim = x.base.shape
    n_groups = weight.shape[0] // head_dim
    out = _empty(n_groups, n_rows, head_dim, like=x.base)
    _ln_proj_rotate_kernel[(triton.cdiv(n_rows, block_m), n_groups)](
        *x.args(), ln.weight, ln.bias, weight, cos, sin, out, n_rows, dim, head_dim, n_rot_groups, LN_EPS,
        HAS_PIECES=x.pieces is not None, BLOCK_M=block_m, BLOCK_K=_width_block(dim, max_width), BLOCK_H=_block(head_dim),
        PRECISION=_precision(precision), UNROLL=unroll, SWAP=swap_pairs, num_warps=num_warps)
    return out


def encoder_splits(n_keys: int, programs_per_split: int,
                   target_programs: int = ENC_TARGET_PROGRAMS) -> tuple[int, int]:
    """``(n_splits, keys_per_split)`` of the encoder: about ``target_programs`` programs, splits of whole
    ENC_BLOCK_N key blocks."""
    n_blocks = triton.cdiv(n_keys, ENC_BLOCK_N)
    n_splits = max(1, min(n_blocks, target_programs // programs_per_split))
    blocks_per_split = triton.cdiv(n_blocks, n_splits)
    return triton.cdiv(n_blocks, blocks_per_split), blocks_per_split * ENC_BLOCK_N


def encoder_attention(q: Tensor, kv_table: Tensor, packed: Tensor, omega: Tensor, n_input: int, *,
                      precision: str = DEFAULT_PRECISION, target_programs: int = ENC_TARGET_PROGRAMS) -> Partials:
    """Partials of ``softmax(q k^T / sqrt(H)) v`` over the packed input tokens (masked), keys/values
    ``rotate(kv_table[rows], times)``. q (h, N_lat, H) rotated; kv_table (rows, 2*h*H); packed float64 whose
    first 3 * n_input entries are rows | times | mask; omega (H/2,) float64; ``target_programs``: see
    :func:`encoder_splits` (fewer programs: longer splits, fewer partials to combine)."""
    n_heads, n_q, head_dim = q.shape
    block_m = min(ENC_MAX_BLOCK_M, max(ENC_MIN_BLOCK_M, _block(n_q)))
    q_blocks = triton.cdiv(n_q, block_m)
    n_splits, keys_per_split = encoder_splits(n_input, n_heads * q_blocks, target_programs)
    parts = Partials(_empty(n_splits, n_heads, n_q, head_dim, like=q), _empty(n_splits, n_heads, n_q, like=q),
                     _empty(n_splits, n_heads, n_q, like=q))
    _encoder_attention_kernel[(n_splits, n_heads, q_blocks)](
        q, kv_table, packed, omega, *parts, n_q, n_input, head_dim, n_heads, keys_per_split, head_dim ** -0.5,
        BLOCK_M=block_m, BLOCK_N=ENC_BLOCK_N, BLOCK_P=_block(head_dim // 2), PRECISION=_precision(precision),
        num_warps=ENC_NUM_WARPS)
    return parts


def _head_outputs(wo: Tensor | None, n_heads: int, n_rows: int, head_dim: int, like: Tensor) -> tuple[Tensor, int]:
    """Output of an attention kernel and the model width: per-head out-projections (h, N, dim) with ``wo``
    (dim, h*H), the heads' outputs side by side (N, h*H) without (summed residuals)."""
    if wo is None:
        return _empty(n_rows, n_heads * head_dim, like=like), n_heads * head_dim
    return _empty(n_heads, n_rows, wo.shape[0], like=like), wo.shape[0]


def combine_proj(parts: Partials, cos: Tensor, sin: Tensor, wo: Tensor | None, *,
                 precision: str = DEFAULT_PRECISION, swap_pairs: bool = False) -> Tensor:
    """Per-head out-projections (h, N, dim) of the combined ``parts``, rotated back by cos/sin (N, H/2)
    (the sum over heads is ``unrotate(o) @ wo^T``, wo (dim, h*H)); with ``wo=None`` the combined outputs
    (N, h*H) themselves, not rotated back."""
    _, n_heads, n_rows, head_dim = parts.acc.shape
    out, dim = _head_outputs(wo, n_heads, n_rows, head_dim, parts.acc)
    block_c = _width_block(dim)
    n_col_blocks = 1 if wo is None else triton.cdiv(dim, block_c)
    _combine_proj_kernel[(triton.cdiv(n_rows, ROW_BLOCK_M), n_heads, n_col_blocks)](
        *parts, parts.acc.shape[0], cos, sin, parts.acc if wo is None else wo, out, n_rows, dim, head_dim,
        PROJECT=wo is not None, BLOCK_M=ROW_BLOCK_M, BLOCK_C=block_c, BLOCK_H=_block(head_dim),
        BLOCK_S=COMBINE_BLOCK_S, PRECISION=_precision(precision), SWAP=swap_pairs, num_warps=COMBINE_NUM_WARPS)
    return out


def attention(q: Tensor, k: Tensor, v: Tensor, wo: Tensor | None, cos: Tensor, sin: Tensor, *,
              precision: str = DEFAULT_PRECISION, num_warps: int = PROC_WARPS,
              max_width: int = MAX_WIDTH_BLOCK, unroll: bool = False, swap_pairs: bool = False) -> Tensor:
    """Per-head out-projections (h, Nq, dim) of ``softmax(q k^T / sqrt(H)) v`` rotated back by cos/sin
    (Nq, H/2): q (h, Nq, H), k, v (h, Nk, H) contiguous, wo (dim, h*H); with ``wo=None`` the heads'
    outputs (Nq, h*H), not rotated back. num_warps warps a program, output columns in blocks of at most
    max_width."""
    n_heads, n_q, head_dim = q.shape
    out, dim = _head_outputs(wo, n_heads, n_q, head_dim, q)
    _attention_kernel[(n_heads, triton.cdiv(n_q, ATTN_BLOCK_M))](
        q, k, v, cos, sin, q if wo is None else wo, out, n_q, k.shape[1], head_dim, head_dim ** -0.5,
        q, q, q, q, q, 0, 0, q, dim, LN_EPS,  # decoder-query arguments, unused
        Q_FROM_EMB=False, UNROTATE=True, PROJECT=wo is not None, BLOCK_M=ATTN_BLOCK_M, BLOCK_N=BLOCK_N,
        BLOCK_H=_block(head_dim), BLOCK_K=_width_block(dim, max_width), PRECISION=_precision(precision),
        UNROLL=unroll, SWAP=swap_pairs, num_warps=num_warps)
    return out


def decoder_attention(emb: Tensor, ln: nn.LayerNorm, wq: Tensor, packed: Tensor, rows_off: int, times_off: int,
                      n_q: int, omega: Tensor, k: Tensor, v: Tensor, wo: Tensor | None, *,
                      precision: str = DEFAULT_PRECISION, unroll: bool = False, swap_pairs: bool = False) -> Tensor:
    """Per-head out-projections (h, n_q, dim) of the decoder cross-attention (values not rotated): queries
    ``rotate(LayerNorm(emb[rows]) @ wq^T, times)``, rows / float64 times the ``n_q`` packed entries at
    ``rows_off`` / ``times_off``; k (rotated), v (h, Nk, H); wo (dim, h*H); with ``wo=None`` the heads'
    outputs (n_q, h*H)."""
    n_heads, n_keys, head_dim = k.shape
    dim = emb.shape[1]
    out, _ = _head_outputs(wo, n_heads, n_q, head_dim, k)
    _attention_kernel[(n_heads, triton.cdiv(n_q, ATTN_BLOCK_M))](
        k, k, v, k, k, k if wo is None else wo, out, n_q, n_keys, head_dim, head_dim ** -0.5,  # q, cos, sin unused
        emb, ln.weight, ln.bias, wq, packed, rows_off, times_off, omega, dim, LN_EPS,
        Q_FROM_EMB=True, UNROTATE=False, PROJECT=wo is not None, BLOCK_M=ATTN_BLOCK_M, BLOCK_N=BLOCK_N,
        BLOCK_H=_block(head_dim), BLOCK_K=_width_block(dim), PRECISION=_precision(precision), UNROLL=unroll,
        SWAP=swap_pairs)
    return out


def project_residual(a: Tensor, linear: nn.Linear, residual: Tensor, *, bias: bool = True,
                     rotation: tuple[Tensor, Tensor] | None = None, head_dim: int = 0,
                     residual_rows: tuple[Tensor, int] | None = None, precision: str = DEFAULT_PRECISION,
                     block_m: int = SUMMED_BLOCK_M, unroll: bool = False) -> Tensor:
    """``residual + linear(a')`` (N, dim) in one kernel, a' = ``a`` (N, K) rotated back head by head by
    ``rotation`` = cos, sin (N, H/2) when given (attention outputs of ``head_dim`` channels a head).

    bias: False leaves out ``linear.bias`` (the residual holds it); residual_rows: ``(packed, offset)``: the
    residual's rows are the N packed entries at offset (a table's rows), else its first N rows; block_m rows
    a program."""
    n_rows, k_dim = a.shape
    dim = linear.out_features
    out = _empty(n_rows, dim, like=a)
    cos, sin = rotation if rotation is not None else (a, a)
    packed, rows_off = residual_rows if residual_rows is not None else (a, 0)
    block_c = _width_block(dim)
    _proj_residual_kernel[(triton.cdiv(n_rows, block_m), triton.cdiv(dim, block_c))](
        a, linear.weight, linear.bias if bias else a, residual, packed, rows_off, cos, sin, out,
        n_rows, k_dim, dim, max(head_dim, 1),
        UNROTATE=rotation is not None, RES_GATHER=residual_rows is not None, HAS_BIAS=bias,
        BLOCK_M=block_m, BLOCK_K=MAX_WIDTH_BLOCK, BLOCK_C=block_c, PRECISION=_precision(precision), UNROLL=unroll)
    return out


def ffn(x: State, proj: Tensor, to_out: nn.Linear, block: nn.Sequential, *, out_bias: bool = True,
        x_rows: tuple[Tensor, int] | None = None, precision: str = DEFAULT_PRECISION,
        block_f: int = FFN_BLOCK_F, num_warps: int = PROC_WARPS, max_width: int = MAX_WIDTH_BLOCK,
        unroll: bool = False) -> State:
    """``x1 = x + (sum_h proj[h] + to_out.bias)``, then ``x1 + block(x1)`` as a :class:`State`.

    proj (h, N, dim) per-head out-projections; out_bias: False where ``x`` already holds the bias;
    block: ``Sequential(LayerNorm, FeedForward)``; x_rows: ``(packed, offset)``: the rows of ``x.base``
    (a table) are the N packed entries at offset (then ``x`` has no pieces); block_f: hidden units a
    program (the output has ``cdiv(hidden, block_f)`` pieces), on num_warps warps, model columns in chunks of
    at most max_width.
    """
    n_heads, n_rows, dim = proj.shape
    ln, net = block[0], block[1].net
    hidden = net[3].in_features
    n_chunks = triton.cdiv(hidden, block_f)
    x1, pieces = _empty(n_rows, dim, like=proj), _empty(n_chunks, n_rows, dim, like=proj)
    packed, rows_off = x_rows if x_rows is not None else (proj, 0)
    _ffn_kernel[(triton.cdiv(n_rows, ROW_BLOCK_M), n_chunks)](
        x.base, rows_off, packed, *x.args()[1:], proj, n_heads, to_out.bias, ln.weight, ln.bias,
        net[0].weight, net[0].bias, net[3].weight, x1, pieces, n_rows, dim, hidden, LN_EPS,
        X_GATHER=x_rows is not None, HAS_PIECES=x.pieces is not None, HAS_OUT_BIAS=out_bias, PROJECT_OUT=True,
        BLOCK_M=ROW_BLOCK_M, BLOCK_K=_width_block(dim, max_width), BLOCK_F=block_f, PRECISION=_precision(precision),
        UNROLL=unroll, num_warps=num_warps)
    return State(x1, pieces, net[3].bias)


def ffn_hidden(x: Tensor, block: nn.Sequential, *, precision: str = DEFAULT_PRECISION,
               block_m: int = SUMMED_BLOCK_M, block_f: int = FFN_BLOCK_F, unroll: bool = False) -> Tensor:
    """The FFN's activations ``GEGLU(LayerNorm(x) @ W1^T + b1)`` (N, hidden) of whole rows x (N, dim)
    (summed residuals: :func:`project_residual` with ``W2`` then adds them to ``x``); block_m rows and
    block_f hidden units a program."""
    n_rows, dim = x.shape
    ln, net = block[0], block[1].net
    hidden = net[3].in_features
    act = _empty(n_rows, hidden, like=x)
    _ffn_kernel[(triton.cdiv(n_rows, block_m), triton.cdiv(hidden, block_f))](
        x, 0, x, x, 0, x, x, 0, x, ln.weight, ln.bias, net[0].weight, net[0].bias, net[3].weight, x, act,
        n_rows, dim, hidden, LN_EPS,
        X_GATHER=False, HAS_PIECES=False, HAS_OUT_BIAS=False, PROJECT_OUT=False,
        BLOCK_M=block_m, BLOCK_K=_width_block(dim), BLOCK_F=block_f, PRECISION=_precision(precision),
        UNROLL=unroll)
    return act


def readout(x: State, linear: nn.Linear, *, precision: str = DEFAULT_PRECISION, unroll: bool = False) -> Tensor:
    """``linear(x)`` (N, D_out) of a :class:`State`."""
    n_rows, dim = x.base.shape
    d_out = linear.out_features
    out = _empty(n_rows, d_out, like=x.base)
    _readout_kernel[(triton.cdiv(n_rows, ROW_BLOCK_M),)](
        *x.args(), linear.weight, linear.bias, out, n_rows, dim, d_out, HAS_PIECES=x.pieces is not None,
        BLOCK_M=ROW_BLOCK_M, BLOCK_K=_width_block(dim), BLOCK_O=_block(d_out), PRECISION=_precision(precision),
        UNROLL=unroll)
    return out


def latent_cos_sin(fused: FusedPOYO) -> tuple[Tensor, Tensor]:
    """cos, sin (N_lat, H/2) float32 of the latent times, from ``fused.latent_rot`` (either form)."""
    table = fused.latent_rot
    if table.is_complex():
        return table.real.contiguous(), table.imag.contiguous()
    return table[:, 0, 0::2].contiguous(), table[:, 1, 1::2].contiguous()  # [cos repeated; (-s, +s)]


def residual_layout(fused: FusedPOYO, ffn_block_f: int = FFN_BLOCK_F) -> str:
    """The residual layout ``"auto"`` picks for ``fused``'s model (see :class:`TritonPOYO`): ``"split"`` while
    a row and the pieces a kernel adds to it hold at most SPLIT_MAX_ROW_FLOATS floats, ``"summed"`` beyond."""
    m = fused.model
    hidden = m.enc_ffn[1].net[3].in_features
    pieces = max(triton.cdiv(hidden, ffn_block_f), m.enc_atn.heads, m.dec_atn.heads,
                 *(attn.heads for attn, _ in m.proc_layers))
    return "split" if (1 + pieces) * m.dim <= SPLIT_MAX_ROW_FLOATS else "summed"


def launches_per_forward(fused: FusedPOYO, residuals: str = "auto") -> int:
    """Kernel launches of one :class:`TritonPOYO` call. Split residuals: 3 for the encoder (attention,
    combine/projection, FFN), 3 per processor layer (q/k/v, attention/projection, FFN), 4 for the decoder
    (k/v, attention/projection, FFN, readout). Summed: each projection and the FFN's second matmul become
    launches of their own (residual add): 5 + 5 per layer + 6."""
    depth = len(fused.model.proc_layers)
    if residuals == "auto":
        residuals = residual_layout(fused)
    return 7 + 3 * depth if residuals == "split" else 11 + 5 * depth


class TritonPOYO:
    """``fused``'s forward from the Triton kernels: ``TritonPOYO(fused)(packed)`` equals ``fused(packed)``.

    Reads the model's weights and ``fused``'s buffers at each call (no copies: they must be contiguous and
    on the packed input's device). A call launches :func:`launches_per_forward` kernels and allocates only
    shape-dependent scratch, with no host synchronisation, so a CUDA graph can capture it (after one
    warm-up call has compiled the kernels).

    Two layouts of the residual sums (``residuals``): ``"split"`` (fewest launches) leaves the sums over
    heads and FFN hidden chunks apart (:class:`State` pieces), and each kernel that reads the rows adds them
    again, once per program; ``"summed"`` adds them once, in a projection kernel of their own
    (:func:`project_residual`; 4 + 2 x depth more launches). For poyo_1.3M (dim 64, 8 pieces) the re-reads
    are small (a program reads 9 rows of 64 floats where it needs one); for dim 512 (64 FFN chunks) a split
    forward would re-read ~14 GB a layer. ``"auto"`` (default) picks by :func:`residual_layout`.

    Args:
        precision: how ``tl.dot`` multiplies: ``"tf32x3"`` (default: three TF32 tensor-core products per
            fp32 product, fp32-level accuracy), ``"ieee"`` (fp32 on the CUDA cores: the slowest; its
            register use on sm_90 is not checked, ``python -m poyo_rt.kernels.aot`` measures it) or
            ``"tf32"`` (one TF32 product: the fastest, ~1e-3 relative error), or ``"tf32x3i"``: tf32x3's three
            products with the operands split in the kernel (:func:`_dot`; opt-in until timed on a GPU: with
            ``unroll``, poyo_1.3M's processor kernels compile to ~14 % fewer instructions than in tf32x3, while
            the encoder's combine and the decoder's attention, run once a forward, spill 36-84 B on sm_90). The
            interpreter computes the products in fp32 in every precision.
        residuals: ``"auto"`` (default), ``"split"`` or ``"summed"``, see above.
        encoder_programs: programs the encoder attention aims at (:func:`encoder_splits`).
        summed_block_m: rows a program of the summed layout's projection and FFN kernels.
        ffn_block_f: FFN hidden units a program (fewer: more programs, and more pieces for the split
            layout's next kernels to add).
        proc_warps: warps a program of the latents' self-attention kernel and, in the split layout, of the
            LayerNorm-projection and FFN kernels (4 or 8; on sm_90 each uses ~250 of 255 registers a thread
            at 4, 123-174 at 8, and spills ~300 B at 2: ``python -m poyo_rt.kernels.aot``).
        proc_width: model columns those kernels take at once (32, or 64 with ``proc_warps=8``: a dim-64 row
            in one chunk, so the LayerNorm statistics and the projection's K loop take one round trip each
            instead of two; at 4 warps 64 spills ~400 B a thread on sm_90, at 8 none).
        unroll: unroll the latent and output kernels' loops of at most MAX_UNROLL_STEPS steps (LayerNorm
            and projection column chunks, key blocks, residual pieces) into straight code. The kernels know
            every shape but the input's as a compile-time constant, so an unrolled loop has no counters or
            masks left to compute and its loads can all be issued at once. Compiled for sm_90, poyo_1.3M's
            attention, projection and FFN kernels then run ~40 % fewer instructions a thread, with no loop
            left and fewer registers (``python -m poyo_rt.kernels.aot --config poyo_1.3M --unroll``; dim
            512's long loops stay loops). Off by default until timed on a GPU.
        swap_pairs: rotations take each channel pair's partner by swapping the computed columns in registers
            (:func:`_swap_pairs`) instead of projecting again with the pair-swapped weight rows: the projection
            of q, k, v and the out-projections that rotate back do one product where they did two (exact for q,
            k, v; a rounding's difference for the out-projection). Compiled for sm_90 with ``unroll``, the
            projection kernel runs 13-17 % fewer instructions and 80 instead of 130-142 registers. Off by
            default until timed on a GPU.
        (All tunings; ``tools/profile_gpu.py --sweep`` times them against each other on a GPU.)
    """

    def __init__(self, fused: FusedPOYO, *, precision: str = DEFAULT_PRECISION, residuals: str = "auto",
                 encoder_programs: int = ENC_TARGET_PROGRAMS, summed_block_m: int = SUMMED_BLOCK_M,
                 ffn_block_f: int = FFN_BLOCK_F, proc_warps: int = PROC_WARPS, proc_width: int = MAX_WIDTH_BLOCK,
                 unroll: bool = False, swap_pairs: bool = False):
        if residuals not in RESIDUAL_LAYOUTS:
            raise ValueError(f"residuals must be one of {RESIDUAL_LAYOUTS}, got {residuals!r}")
        if encoder_programs < 1 or summed_block_m not in (16, 32, 64, 128) or ffn_block_f not in (16, 32, 64, 128):
            raise ValueError(f"encoder_programs must be >= 1, summed_block_m and ffn_block_f one of 16, 32, 64, 128; "
                             f"got {encoder_programs}, {summed_block_m}, {ffn_block_f}")
        self.fused = fused
        self.precision = _precision(precision)
        self.residuals = residual_layout(fused, ffn_block_f) if residuals == "auto" else residuals
        self.rotation = latent_cos_sin(fused)  # (N_lat, H/2) each
        self.enc_q = fused.enc_q[0].contiguous()  # (h_c, N_lat, H)
        self.encoder_programs, self.summed_block_m = int(encoder_programs), int(summed_block_m)
        self.ffn_block_f = int(ffn_block_f)
        if proc_warps not in (4, 8):
            raise ValueError(f"proc_warps must be 4 or 8, got {proc_warps}")
        if proc_width not in (32, 64) or (proc_width == 64 and proc_warps != 8):
            raise ValueError(f"proc_width must be 32, or 64 with proc_warps=8 (64 on 4 warps spills registers); "
                             f"got {proc_width} with proc_warps={proc_warps}")
        self.proc_warps, self.proc_width = int(proc_warps), int(proc_width)
        self.unroll, self.swap_pairs = bool(unroll), bool(swap_pairs)

    def __call__(self, packed: Tensor) -> Tensor:
        """``packed`` (3 * N_in + 2 * N_out,) float64 -> (N_out, D_out) float32, as ``FusedPOYO.forward``."""
        fused, m, precision, unroll = self.fused, self.fused.model, self.precision, self.unroll
        n_out, head_dim, rot = fused.n_output, fused.head_dim, self.rotation
        n_input, rest = divmod(packed.shape[0] - 2 * n_out, 3)
        if rest or n_input < 1:
            raise ValueError(f"packed input of length {packed.shape[0]} does not fit {n_out} output queries")
        enc, split = m.enc_atn, self.residuals == "split"
        blocks = ({"num_warps": self.proc_warps, "max_width": self.proc_width} if split  # ln_proj_rotate's
                  else {"block_m": self.summed_block_m, "num_warps": SUMMED_PROJ_WARPS})
        blocks |= {"unroll": unroll, "swap_pairs": self.swap_pairs}
        wo = lambda attn: attn.to_out.weight if split else None  # noqa: E731 (summed: heads' outputs, projected later)
        parts = encoder_attention(self.enc_q, fused.kv_table, packed, fused.omega, n_input, precision=precision,
                                  target_programs=self.encoder_programs)
        out = combine_proj(parts, *rot, wo(enc), precision=precision, swap_pairs=self.swap_pairs)
        latents = self._residual_ffn(State(fused.enc_residual), out, enc.to_out, m.enc_ffn, rot, out_bias=False)
        for attn, layer_ffn in m.proc_layers:
            qkv = ln_proj_rotate(latents, attn.norm, attn.to_qkv.weight, *rot, head_dim=head_dim,
                                 n_rot_groups=3 * attn.heads, precision=precision, **blocks)
            out = attention(*qkv.unflatten(0, (3, attn.heads)), wo(attn), *rot, precision=precision,
                            num_warps=self.proc_warps, max_width=self.proc_width, unroll=unroll,
                            swap_pairs=self.swap_pairs)
            latents = self._residual_ffn(latents, out, attn.to_out, layer_ffn, rot)
        dec = m.dec_atn
        kv = ln_proj_rotate(latents, dec.norm_context, dec.to_kv.weight, *rot, head_dim=head_dim,
                            n_rot_groups=dec.heads, precision=precision, **blocks)  # k rotated, v not
        rows_off, times_off = 3 * n_input + n_out, 3 * n_input  # the output queries' session rows and times
        out = decoder_attention(m.session_emb.weight, dec.norm, dec.to_q.weight, packed, rows_off, times_off,
                                n_out, fused.omega, kv[:dec.heads], kv[dec.heads:], wo(dec), precision=precision,
                                unroll=unroll, swap_pairs=self.swap_pairs)
        queries = self._residual_ffn(State(m.session_emb.weight), out, dec.to_out, m.dec_ffn, None,
                                     x_rows=(packed, rows_off))
        return readout(queries, m.readout, precision=precision, unroll=unroll)

    def _residual_ffn(self, x: State, out: Tensor, to_out: nn.Linear, block: nn.Sequential,
                      rotation: tuple[Tensor, Tensor] | None, *, out_bias: bool = True,
                      x_rows: tuple[Tensor, int] | None = None) -> State:
        """``x1 = x + to_out(attention)``, then ``x1 + block(x1)``. ``out``: the attention's per-head
        projections (split residuals; the FFN kernel adds them) or its heads' outputs (summed: projected,
        rotated back by ``rotation`` if given, and added here). out_bias: False where ``x`` holds the bias;
        x_rows: ``(packed, offset)`` where ``x``'s rows are gathered (see :func:`ffn`)."""
        precision, unroll = self.precision, self.unroll
        if self.residuals == "split":
            return ffn(x, out, to_out, block, out_bias=out_bias, x_rows=x_rows, precision=precision,
                       block_f=self.ffn_block_f, num_warps=self.proc_warps, max_width=self.proc_width, unroll=unroll)
        bm = self.summed_block_m
        x1 = project_residual(out, to_out, x.value(), bias=out_bias, rotation=rotation, head_dim=self.fused.head_dim,
                              residual_rows=x_rows, precision=precision, block_m=bm, unroll=unroll)
        act = ffn_hidden(x1, block, precision=precision, block_m=bm, block_f=self.ffn_block_f, unroll=unroll)
        return State(project_residual(act, block[1].net[3], x1, precision=precision, block_m=bm, unroll=unroll))


def triton_forward(fused: FusedPOYO, packed: Tensor) -> Tensor:
    """One-off ``fused(packed)`` through the Triton kernels (build a :class:`TritonPOYO` once to reuse it)."""
    return TritonPOYO(fused)(packed)

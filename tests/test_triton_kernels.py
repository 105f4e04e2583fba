"""The Triton forward (poyo_rt.kernels) equals FusedPOYO's, kernel by kernel and end to end.

On the CPU the kernels run under Triton's interpreter: ``TRITON_INTERPRET`` is read when a kernel is
decorated (when ``poyo_rt.kernels.triton_poyo`` is first imported), so it is set here before that import.
With ``TRITON_INTERPRET=0`` on a CUDA machine the same tests run the compiled kernels on the GPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E402 (before the kernels are imported and decorated)

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from _poyo_ref import CONFIGS, make_pair, random_batch  # noqa: E402
from test_fused import packed_window  # noqa: E402

from poyo_rt.kernels import triton_poyo as tp  # noqa: E402
from poyo_rt.model.fused import FusedPOYO  # noqa: E402

INTERPRET = os.environ["TRITON_INTERPRET"] == "1"
DEVICE = "cpu" if INTERPRET else "cuda"
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 needs a CUDA device", allow_module_level=True)
TOL = 1e-5
# wider than the kernels' column chunks (tp.MAX_WIDTH_BLOCK): LayerNorms, K loops and output columns in 5
# chunks, the last partial (dim 144 = 4 * 32 + 16)
WIDE = dict(dim=144, depth=1, dim_head=32, cross_heads=1, self_heads=2, num_latents_per_step=4)


def _fused(name: str, n_output: int, complex_rotation: bool = True, **pair) -> FusedPOYO:
    ours, _ = make_pair(WIDE if name == "wide" else CONFIGS[name], **pair)
    return FusedPOYO(ours.to(DEVICE), n_output=n_output, complex_rotation=complex_rotation)


def _window(fused: FusedPOYO, *, seed: int, shift: float, n_pad: int, max_spikes: int = 200) -> tuple[torch.Tensor, int]:
    """A packed window (times relative to its start ``shift``) with ``n_pad`` padding slots holding garbage
    (rows of other units, times far outside the window); returns (packed, real tokens)."""
    batch = random_batch(fused.model, batch=1, n_out=fused.n_output, seed=seed, shift=shift, max_spikes=max_spikes)
    n_real = int(batch["input_mask"][0].sum())
    packed = packed_window(fused, batch, start=shift, n_slots=n_real + n_pad)
    rows, times, _, _, _ = fused.layout(n_real + n_pad).views(packed)
    rng = np.random.default_rng(seed)
    rows[n_real:] = torch.from_numpy(rng.integers(0, fused.kv_table.shape[0], n_pad).astype(np.float64))
    times[n_real:] = torch.from_numpy(rng.uniform(-50.0, 50.0, n_pad))
    return packed.to(DEVICE), n_real


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------ setup
def test_kernels_are_interpreted_on_the_cpu():
    """TRITON_INTERPRET took effect: the kernels were decorated after it was set."""
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(tp._ffn_kernel, InterpretedFunction) == INTERPRET


def test_package_imports_without_triton(monkeypatch):
    """``poyo_rt.kernels`` imports anywhere; asking for the forward without Triton names the fix."""
    import poyo_rt.kernels as kernels

    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    with pytest.raises(ImportError, match="pip install triton"):
        kernels.TritonPOYO  # noqa: B018
    with pytest.raises(AttributeError):
        kernels.nothing_here  # noqa: B018


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "poyo_1.3M"])
def test_forward_equals_fused(name):
    """Windows at absolute times up to an hour (window-relative in the packed vector), padding slots holding
    garbage, several sessions and output times."""
    fused = _fused(name, n_output=4, n_sessions=3)
    forward = tp.TritonPOYO(fused)
    for seed, shift in enumerate((0.0, 37.25, 3600.0)):
        packed, _ = _window(fused, seed=seed, shift=shift, n_pad=8 * seed)
        with torch.inference_mode():
            out, exact = forward(packed), fused(packed)
        assert out.shape == (4, 2) and out.dtype == torch.float32
        assert _max_err(out, exact) <= TOL, (name, shift)


def test_forward_equals_fused_wide():
    """A model several column chunks wide (rows never held whole), 20 FFN hidden chunks."""
    fused = _fused("wide", n_output=3, n_sessions=2)
    assert fused.model.dim > 4 * tp.MAX_WIDTH_BLOCK
    packed, _ = _window(fused, seed=6, shift=600.0, n_pad=7)
    with torch.inference_mode():
        assert _max_err(tp.TritonPOYO(fused)(packed), fused(packed)) <= TOL


@pytest.mark.parametrize("name", ["small", "depth3_head8", "wide", "poyo_1.3M"])
def test_forward_with_summed_residuals_equals_fused(name):
    """Residual sums done once by projection kernels (the layout wide models get) give the same forward."""
    fused = _fused(name, n_output=3, n_sessions=2)
    forward = tp.TritonPOYO(fused, residuals="summed")
    assert forward.residuals == "summed"
    packed, _ = _window(fused, seed=7, shift=3600.0, n_pad=6)
    with torch.inference_mode():
        assert _max_err(forward(packed), fused(packed)) <= TOL


def test_residual_layout_by_width():
    """"auto" keeps sums split for narrow models (poyo_1.3M: 8 pieces of 64) and sums them for dim 512 (64
    FFN chunks: a split forward would re-read gigabytes); an unknown layout is refused."""
    assert tp.residual_layout(_fused("poyo_1.3M", n_output=1)) == "split"
    assert tp.residual_layout(_fused("wide", n_output=1)) == "split"
    ours, _ = make_pair(dict(dim=512, depth=2, dim_head=64, cross_heads=1, self_heads=8, num_latents_per_step=8),
                        n_units=4)
    wide = FusedPOYO(ours, n_output=1)
    assert tp.residual_layout(wide) == "summed" == tp.TritonPOYO(wide).residuals
    assert tp.launches_per_forward(wide) == 11 + 5 * 2
    with pytest.raises(ValueError, match="residuals must be one of"):
        tp.TritonPOYO(wide, residuals="fused")


def test_forward_equals_fused_real_rotation():
    """FusedPOYO's real-arithmetic rotation tables give the same latent rotations."""
    fused = _fused("cross2_head24", n_output=2, complex_rotation=False)
    packed, _ = _window(fused, seed=4, shift=12.5, n_pad=5)
    with torch.inference_mode():
        assert _max_err(tp.triton_forward(fused, packed), fused(packed)) <= TOL


def test_forward_equals_fused_poyo_1_3m():
    """poyo_1.3M on a window of ~2,000 tokens (keys split across many programs), shifted by an hour."""
    fused = _fused("poyo_1.3M", n_output=3, n_units=100, n_sessions=3)
    packed, n_real = _window(fused, seed=1, shift=3600.0, n_pad=24, max_spikes=2000)
    assert n_real > 1000
    with torch.inference_mode():
        out, exact = tp.TritonPOYO(fused)(packed), fused(packed)
    assert _max_err(out, exact) <= TOL


@pytest.mark.parametrize("encoder_programs, summed_block_m, ffn_block_f", [(1, 16, 16), (8, 32, 64), (64, 128, 32)])
def test_tunings_give_the_same_forward(encoder_programs, summed_block_m, ffn_block_f):
    """The sweep's tunings (tools/profile_gpu.py --sweep): the encoder in 1 to 64 programs (one split of all
    keys up to one per key block), 16 to 128 rows a program in the summed layout and 16 to 64 FFN hidden units
    a program, all equal to fused."""
    fused = _fused("depth3_head8", n_output=2, n_units=40)
    packed, n_real = _window(fused, seed=5, shift=60.0, n_pad=11, max_spikes=400)
    with torch.inference_mode():
        exact = fused(packed)
        for residuals in ("split", "summed"):
            forward = tp.TritonPOYO(fused, residuals=residuals, encoder_programs=encoder_programs,
                                    summed_block_m=summed_block_m, ffn_block_f=ffn_block_f)
            assert _max_err(forward(packed), exact) <= TOL, residuals
    n_splits, per_split = tp.encoder_splits(n_real, 1, encoder_programs)
    assert n_splits <= max(encoder_programs, 1) and n_splits * per_split >= n_real
    with pytest.raises(ValueError, match="summed_block_m"):
        tp.TritonPOYO(fused, summed_block_m=48)
    with pytest.raises(ValueError, match="ffn_block_f"):
        tp.TritonPOYO(fused, ffn_block_f=48)


def test_latent_kernel_tunings_give_the_same_forward():
    """The sweep's tunings of the latents' kernels: proc_warps 8 (a launch option: the interpreter runs one
    program at a time, so this checks the plumbing; the sm_90 compile is in tests/test_triton_aot.py) and, on 8
    warps, proc_width 64, which changes the kernels' column chunks (a dim-64 row in one chunk instead of two: a
    different loop the interpreter does check), in both residual layouts, equal to fused. 2 warps and 64 columns
    on 4 warps are refused (they spill on sm_90)."""
    fused = _fused("depth3_head8", n_output=2, n_units=40)
    assert tp._block(fused.model.dim) == 64  # dim 40, padded to 64: two 32-column chunks by default, one at 64
    packed, _ = _window(fused, seed=6, shift=60.0, n_pad=11, max_spikes=400)
    with torch.inference_mode():
        exact = fused(packed)
        for residuals in ("split", "summed"):
            for tuning in ({"proc_warps": 8}, {"proc_warps": 8, "proc_width": 64}):
                got = tp.TritonPOYO(fused, residuals=residuals, **tuning)(packed)
                assert _max_err(got, exact) <= TOL, (residuals, tuning)
    with pytest.raises(ValueError, match="proc_warps must be 4 or 8"):
        tp.TritonPOYO(fused, proc_warps=2)
    with pytest.raises(ValueError, match="proc_width must be 32, or 64 with proc_warps=8"):
        tp.TritonPOYO(fused, proc_width=64)


def test_unrolled_kernels_give_the_same_forward():
    """TritonPOYO(unroll=True) (the sweep's tuning) equals fused in both residual layouts: dim 40 (two column
    chunks: unrolled) and dim 144 (five, the last partial: more than MAX_UNROLL_STEPS, so a loop). The
    interpreter runs the same loops either way, so this checks the values and the plumbing; what the compiler
    makes of them (loop-free code, no spills) is checked for sm_90 in tests/test_triton_aot.py."""
    assert (tp._unroll(64, 32, True), tp._unroll(64, 32, False), tp._unroll(8, 4, True)) == (2, 1, 2)
    assert tp._unroll(144, 32, True) == 1 and tp._unroll(128, 32, True) == tp.MAX_UNROLL_STEPS == 4
    for name in ("depth3_head8", "wide"):
        fused = _fused(name, n_output=2, n_units=40)
        packed, _ = _window(fused, seed=8, shift=60.0, n_pad=5, max_spikes=300)
        with torch.inference_mode():
            exact = fused(packed)
            for residuals in ("split", "summed"):
                got = tp.TritonPOYO(fused, residuals=residuals, unroll=True)(packed)
                assert _max_err(got, exact) <= TOL, (name, residuals)


def test_inline_tf32_split_rounds_to_nearest_tf32():
    """_split_tf32 (precision "tf32x3i"): hi is x rounded to 11 significant bits, to nearest with ties away from
    zero (computed here independently, in float64 from frexp), and hi + lo == x exactly."""
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(x_ptr, hi_ptr, lo_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        hi, lo = tp._split_tf32(tl.load(x_ptr + offs))
        tl.store(hi_ptr + offs, hi)
        tl.store(lo_ptr + offs, lo)

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(4096) * 10.0 ** rng.integers(-20, 20, 4096)).astype(np.float32)
    x[:4] = [1.0 + 2.0 ** -11, -(1.0 + 2.0 ** -11), 1.0 + 2.0 ** -12, 0.0]  # ties away, and below half an ulp
    hi, lo = torch.empty(4096, device=DEVICE), torch.empty(4096, device=DEVICE)
    split_kernel[(1,)](torch.from_numpy(x).to(DEVICE), hi, lo, 4096)
    hi, lo = hi.cpu().numpy(), lo.cpu().numpy()
    m, e = np.frexp(x.astype(np.float64))  # x = m 2^e, 0.5 <= |m| < 1: 11 significant bits are m 2^11 rounded
    expected = np.sign(m) * np.floor(np.abs(m) * 2.0 ** 11 + 0.5) * 2.0 ** (e - 11)
    assert np.array_equal(hi.astype(np.float64), expected)
    assert np.array_equal(hi.astype(np.float64) + lo.astype(np.float64), x.astype(np.float64))
    assert hi[0] == 1.0 + 2.0 ** -10 and hi[1] == -(1.0 + 2.0 ** -10) and hi[2] == 1.0 and lo[3] == 0.0


def test_inline_split_precision_gives_the_same_forward():
    """precision "tf32x3i" with unroll (the sweep's row) equals fused in both layouts; "tf32x3j" is refused."""
    fused = _fused("depth3_head8", n_output=2, n_units=40)
    packed, _ = _window(fused, seed=9, shift=60.0, n_pad=5, max_spikes=300)
    with torch.inference_mode():
        exact = fused(packed)
        for residuals in ("split", "summed"):
            got = tp.TritonPOYO(fused, residuals=residuals, unroll=True, precision="tf32x3i")(packed)
            assert _max_err(got, exact) <= TOL, residuals
    with pytest.raises(ValueError, match="precision must be one of"):
        tp.TritonPOYO(fused, precision="tf32x3j")


def test_swapped_pairs_give_the_same_forward():
    """swap_pairs (the sweep's tuning): _swap_pairs exchanges each channel pair, and the forward with the
    rotation partners swapped in registers equals fused in both layouts, alone, with unroll and "tf32x3i", and
    with those on 8 warps taking a dim-64 row at once (the sweep's last row)."""
    import triton
    import triton.language as tl

    @triton.jit
    def swap_kernel(x_ptr, out_ptr, R: tl.constexpr, C: tl.constexpr):
        offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
        tl.store(out_ptr + offs, tp._swap_pairs(tl.load(x_ptr + offs)))

    x = torch.randn(16, 64, device=DEVICE)
    out = torch.empty_like(x)
    swap_kernel[(1,)](x, out, 16, 64)
    assert torch.equal(out.cpu(), x.cpu()[:, torch.arange(64) ^ 1])
    fused = _fused("depth3_head8", n_output=2, n_units=40)
    packed, _ = _window(fused, seed=10, shift=60.0, n_pad=5, max_spikes=300)
    with torch.inference_mode():
        exact = fused(packed)
        for residuals in ("split", "summed"):
            for tuning in ({"swap_pairs": True}, {"swap_pairs": True, "unroll": True, "precision": "tf32x3i"},
                           {"swap_pairs": True, "unroll": True, "precision": "tf32x3i", "proc_warps": 8,
                            "proc_width": 64}):
                got = tp.TritonPOYO(fused, residuals=residuals, **tuning)(packed)
                assert _max_err(got, exact) <= TOL, (residuals, tuning)


def test_padding_is_ignored_and_results_are_deterministic():
    """Whatever the padding slots hold, the output is bitwise the same (no atomics, masked slots read row 0)."""
    fused = _fused("small", n_output=2)
    forward = tp.TritonPOYO(fused)
    packed, n_real = _window(fused, seed=2, shift=0.0, n_pad=40)
    rows, times, _, _, _ = fused.layout(n_real + 40).views(packed)
    with torch.inference_mode():
        first = forward(packed)
        assert torch.equal(first, forward(packed))
        rows[n_real:] = 0.0
        times[n_real:] = float("nan")
        assert torch.equal(first, forward(packed))


@pytest.mark.parametrize("residuals", ["split", "summed"])
@pytest.mark.parametrize("name", ["small", "depth0"])
def test_launch_count(name, residuals, monkeypatch):
    """One forward launches exactly launches_per_forward kernels (25 for poyo_1.3M: depth 6)."""
    launches = []

    class Counted:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.append(self.kernel)
            return self.kernel[grid]

    for attr in [a for a in vars(tp) if a.startswith("_") and a.endswith("_kernel")]:
        monkeypatch.setattr(tp, attr, Counted(getattr(tp, attr)))
    fused = _fused(name, n_output=2)
    packed, _ = _window(fused, seed=0, shift=0.0, n_pad=0)
    with torch.inference_mode():
        tp.TritonPOYO(fused, residuals=residuals)(packed)
    depth = len(fused.model.proc_layers)
    assert len(launches) == tp.launches_per_forward(fused, residuals) == (
        7 + 3 * depth if residuals == "split" else 11 + 5 * depth)
    assert tp.launches_per_forward(_fused("poyo_1.3M", n_output=1)) == 25


def test_rejects_a_packed_vector_that_does_not_fit():
    fused = _fused("small", n_output=2)
    with pytest.raises(ValueError, match="does not fit"):
        tp.TritonPOYO(fused)(torch.zeros(3 * 16 + 2 * 2 + 1, dtype=torch.float64, device=DEVICE))


# --------------------------------------------------------------------------------- kernel by kernel
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Torch reference: rotate pairs of x (..., N, H) by cos/sin (N, H/2) as complex numbers."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)


def _cis(times: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, H/2) float32 of float64 times, angles in float64."""
    angles = times[:, None] * omega
    return angles.cos().float(), angles.sin().float()


def _partials_output(parts: tp.Partials) -> torch.Tensor:
    """Torch reference of the split combination: (h, N, H)."""
    m = parts.m.max(0).values
    w = torch.exp(parts.m - m)  # (S, h, N)
    return (w[..., None] * parts.acc).sum(0) / (w * parts.l).sum(0)[..., None]


@pytest.mark.parametrize("name", ["small", "depth3_head8", "wide"])
def test_ln_proj_rotate(name):
    """q/k/v of a processor layer (all rotated) and the decoder's k/v (k rotated), from a State with pieces
    (rows offset by 10: the LayerNorm statistics, gathered chunk by chunk, do not cancel)."""
    fused = _fused(name, n_output=1)
    m, head_dim = fused.model, fused.head_dim
    cos, sin = tp.latent_cos_sin(fused)
    n_lat = cos.shape[0]
    gen = torch.Generator().manual_seed(0)
    state = tp.State(*(torch.randn(shape, generator=gen).to(DEVICE) for shape in ((n_lat, m.dim), (3, n_lat, m.dim),
                                                                                (m.dim,))))
    state = state._replace(base=state.base + 10.0)
    attn = m.proc_layers[0][0]
    for ln, weight, n_rot in ((attn.norm, attn.to_qkv.weight, 3 * attn.heads),
                              (m.dec_atn.norm_context, m.dec_atn.to_kv.weight, m.dec_atn.heads)):
        with torch.inference_mode():
            out = tp.ln_proj_rotate(state, ln, weight, cos, sin, head_dim=head_dim, n_rot_groups=n_rot)
            y = F.linear(ln(state.value()), weight).unflatten(-1, (-1, head_dim)).transpose(0, 1)  # (G, N, H)
        exact = torch.cat((_rotate(y[:n_rot], cos, sin), y[n_rot:]))
        assert out.shape == exact.shape
        assert _max_err(out, exact) <= TOL


@pytest.mark.parametrize("name", ["cross2_head24", "depth3_head8", "wide"])
def test_encoder_attention_and_combine(name):
    """Split-key partials over gathered, rotated, masked keys combine to SDPA's output; their per-head
    projections sum to the encoder's out-projection of the output rotated back."""
    fused = _fused(name, n_output=1, n_units=60)
    packed, n_real = _window(fused, seed=3, shift=5.0, n_pad=100, max_spikes=400)
    n_input = n_real + 100
    rows, times, mask, _, _ = fused.layout(n_input).views(packed)
    cos, sin = tp.latent_cos_sin(fused)
    enc, head_dim = fused.model.enc_atn, fused.head_dim
    q = fused.enc_q[0].contiguous()
    with torch.inference_mode():
        parts = tp.encoder_attention(q, fused.kv_table, packed, fused.omega, n_input)
        proj = tp.combine_proj(parts, cos, sin, enc.to_out.weight)
        heads = tp.combine_proj(parts, cos, sin, None)  # summed residuals: the outputs, side by side
    assert parts.acc.shape[0] > 1 and (parts.l[-1] == 0).all()  # several splits; the last only padding
    kv = fused.kv_table[rows.long()].unflatten(-1, (2, enc.heads, head_dim)).permute(1, 2, 0, 3)  # (2, h, N_in, H)
    kv = _rotate(kv, *_cis(times, fused.omega))
    o = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=(mask > 0.5)[None, None, :])  # (h, N_lat, H)
    assert _max_err(_partials_output(parts), o) <= TOL
    exact = _rotate(o, cos, -sin).transpose(0, 1).flatten(-2) @ enc.to_out.weight.t()
    assert _max_err(proj.sum(0), exact) <= TOL
    assert _max_err(heads, o.transpose(0, 1).flatten(-2)) <= TOL


@pytest.mark.parametrize("name", ["small", "poyo_1.3M", "wide"])
def test_attention(name):
    """Self-attention over head-major q/k/v, rotated back and projected per head."""
    fused = _fused(name, n_output=1)
    attn = fused.model.proc_layers[0][0]
    cos, sin = tp.latent_cos_sin(fused)
    n_lat, head_dim = cos.shape[0], fused.head_dim
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn((3, attn.heads, n_lat, head_dim), generator=gen).to(DEVICE).unbind(0)
    with torch.inference_mode():
        proj = tp.attention(q, k, v, attn.to_out.weight, cos, sin)
        heads = tp.attention(q, k, v, None, cos, sin)  # summed residuals: (N, h*H), not rotated back
    o = F.scaled_dot_product_attention(q, k, v)  # (h, N, H)
    assert _max_err(heads, o.transpose(0, 1).flatten(-2)) <= TOL
    exact = torch.einsum("hnc,dhc->hnd", _rotate(o, cos, -sin), attn.to_out.weight.unflatten(1, (attn.heads, head_dim)))
    assert _max_err(proj, exact) <= TOL


def test_decoder_attention():
    """Decoder queries computed in the kernel from session rows and float64 output times; values not rotated."""
    fused = _fused("cross2_head24", n_output=20, n_sessions=3)  # two query blocks
    dec, emb, head_dim = fused.model.dec_atn, fused.model.session_emb.weight, fused.head_dim
    gen = torch.Generator().manual_seed(2)
    k, v = torch.randn((2, dec.heads, 24, head_dim), generator=gen).to(DEVICE).unbind(0)
    out_times = torch.linspace(-0.5, 1.5, 20, dtype=torch.float64) + 3600.0
    out_rows = torch.arange(20, dtype=torch.float64) % 4
    packed = torch.cat((torch.zeros(7, dtype=torch.float64), out_times, out_rows)).to(DEVICE)
    with torch.inference_mode():
        proj = tp.decoder_attention(emb, dec.norm, dec.to_q.weight, packed, 27, 7, 20, fused.omega, k, v,
                                    dec.to_out.weight)
        heads = tp.decoder_attention(emb, dec.norm, dec.to_q.weight, packed, 27, 7, 20, fused.omega, k, v, None)
        q = dec.to_q(dec.norm(emb[out_rows.long()])).unflatten(-1, (dec.heads, head_dim)).transpose(0, 1)
    q = _rotate(q, *_cis(out_times.to(DEVICE), fused.omega))
    o = F.scaled_dot_product_attention(q, k, v)  # (h, N_out, H)
    assert _max_err(heads, o.transpose(0, 1).flatten(-2)) <= TOL
    exact = torch.einsum("hnc,dhc->hnd", o, dec.to_out.weight.unflatten(1, (dec.heads, head_dim)))
    assert _max_err(proj, exact) <= TOL


@pytest.mark.parametrize("name", ["depth3_head8", "poyo_1.3M", "wide"])
def test_ffn_and_readout(name):
    """Residual + per-head projections + bias, then the FFN in hidden chunks; from a plain State, a State
    with pieces and gathered table rows; then the readout."""
    fused = _fused(name, n_output=1)
    m = fused.model
    attn, layer_ffn = m.proc_layers[0]
    gen = torch.Generator().manual_seed(3)
    rand = lambda *shape: torch.randn(shape, generator=gen).to(DEVICE)  # noqa: E731
    n = 40
    proj = rand(attn.heads, n, m.dim)
    table = rand(7, m.dim)
    rows = torch.arange(n, dtype=torch.float64) % 7
    packed = torch.cat((torch.zeros(3, dtype=torch.float64), rows)).to(DEVICE)
    for x, x_rows, base in ((tp.State(rand(n, m.dim)), None, None),
                            (tp.State(rand(n, m.dim), rand(5, n, m.dim), rand(m.dim)), None, None),
                            (tp.State(table), (packed, 3), table[rows.long()])):
        with torch.inference_mode():
            out = tp.ffn(x, proj, attn.to_out, layer_ffn, x_rows=x_rows)
            x1 = (x.value() if base is None else base) + (proj.sum(0) + attn.to_out.bias)
            exact = x1 + layer_ffn(x1)
            y, y_exact = tp.readout(out, m.readout), m.readout(exact)
        assert _max_err(out.base, x1) <= TOL
        assert _max_err(out.value(), exact) <= TOL
        assert _max_err(y, y_exact) <= TOL


@pytest.mark.parametrize("name", ["depth3_head8", "cross2_head24", "wide", "poyo_1.3M"])
def test_summed_residual_kernels(name):
    """Summed residuals, kernel by kernel: the out-projection of the heads' outputs rotated back head by head
    (K chunks spanning several heads for H = 8, pairs of a head split across chunks never for H = 24),
    plus bias and a residual of own or gathered rows; the FFN's activations; its second matmul; the
    readout of whole rows. poyo_1.3M: 128 rows, several row blocks of SUMMED_BLOCK_M."""
    fused = _fused(name, n_output=1)
    m, head_dim = fused.model, fused.head_dim
    attn, layer_ffn = m.proc_layers[0]
    cos, sin = tp.latent_cos_sin(fused)
    n = cos.shape[0]
    gen = torch.Generator().manual_seed(4)
    rand = lambda *shape: torch.randn(shape, generator=gen).to(DEVICE)  # noqa: E731
    assert n > tp.SUMMED_BLOCK_M or name != "poyo_1.3M"  # several row blocks
    heads, x = rand(n, attn.heads * head_dim), rand(n, m.dim) + 3.0
    table = rand(5, m.dim)
    rows = torch.arange(n, dtype=torch.float64) % 5
    packed = torch.cat((torch.zeros(2, dtype=torch.float64), rows)).to(DEVICE)
    with torch.inference_mode():
        x1 = tp.project_residual(heads, attn.to_out, x, rotation=(cos, sin), head_dim=head_dim)
        unrotated = _rotate(heads.unflatten(-1, (attn.heads, head_dim)).transpose(0, 1), cos, -sin)
        exact = x + attn.to_out(unrotated.transpose(0, 1).flatten(-2))
        assert _max_err(x1, exact) <= TOL
        gathered = tp.project_residual(heads, attn.to_out, table, bias=False, residual_rows=(packed, 2))
        assert _max_err(gathered, table[rows.long()] + heads @ attn.to_out.weight.t()) <= TOL
        act = tp.ffn_hidden(x1, layer_ffn)
        net = layer_ffn[1].net
        assert _max_err(act, net[1](net[0](layer_ffn[0](x1)))) <= TOL  # GEGLU(LayerNorm(x1) @ W1^T + b1)
        x2 = tp.project_residual(act, net[3], x1)
        assert _max_err(x2, x1 + layer_ffn(x1)) <= TOL
        assert _max_err(tp.readout(tp.State(x2), m.readout), m.readout(x2)) <= TOL


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_cuda_graph_capture():
    """The forward is capturable (no host sync) and replays to the eager result."""
    fused = _fused("poyo_1.3M", n_output=1, n_units=100)
    forward = tp.TritonPOYO(fused)
    packed, _ = _window(fused, seed=5, shift=0.0, n_pad=16, max_spikes=2000)
    with torch.inference_mode():
        eager = forward(packed)  # compiles the kernels
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = forward(packed)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager)
        assert _max_err(out, fused(packed)) <= TOL


def test_doorbell_releases_one_launch_per_ring_and_absorbs_a_late_ring():
    """The doorbell of Runner(warm="launch") (poyo_rt.kernels.doorbell): each ring releases one waiting kernel,
    whether it came before the launch or after; a wait whose ring does not come gives up after max_spins reads,
    is counted, and still counts as served, so its late ring does not release the next launch. (Under the
    interpreter a launch runs to its end, so each ring here comes before its launch; the GPU test holds a
    launch and rings it later.)"""
    from poyo_rt.kernels.doorbell import Doorbell

    bell = Doorbell(DEVICE, max_spins=50)

    def counts() -> tuple[int, int]:
        if not INTERPRET:
            torch.cuda.synchronize()
        return int(bell.served.item()), bell.timeouts_seen()

    bell.ring()
    bell.wait()
    assert counts() == (1, 0)
    bell.ring()
    bell.ring()
    bell.wait()
    bell.wait()
    assert counts() == (3, 0) and bell.rung == 3
    bell.wait()  # no ring for it: gives up, counted, served all the same
    assert counts() == (4, 1)
    bell.ring()  # its late ring
    bell.wait()  # the next launch, without a ring of its own: the late ring does not release it
    assert counts() == (5, 2)
    bell.ring()  # (its ring, late too)
    bell.ring()
    bell.wait()  # rung for: released at once
    assert counts() == (6, 2)
    with pytest.raises(ValueError, match="max_spins"):
        Doorbell(DEVICE, max_spins=0)

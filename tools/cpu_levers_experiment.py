#!/usr/bin/env python3
"""CPU levers for the per-tick forward that were measured and NOT adopted (sixth session), kept so that the
numbers in docs/performance.md can be reproduced. One thread, poyo_1.3M, the key/value cache's tail
(``FusedPOYO.process_and_decode``: processor + decoder, ~90 % of a prepared tick):

    python tools/cpu_levers_experiment.py attention     # where the processor's attention goes: bmm, softmax
    python tools/cpu_levers_experiment.py bf16          # bf16 weights + bf16 attention matmuls: time, error
    python tools/cpu_levers_experiment.py half-rotation # rotate only the pairs with a non-zero frequency
    python tools/cpu_levers_experiment.py int8          # int8 weights (dynamic quantization): time, error

Medians of repeated calls, microseconds unless said. An experiment, not a supported mode.
"""

import argparse
import copy
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from poyo_rt.bench.forward import BENCH_CONFIGS, build_model
from poyo_rt.model.fused import FusedPOYO

BF16 = torch.bfloat16


def median_us(fn, n: int = 200) -> float:
    for _ in range(max(10, n // 10)):
        fn()
    took = []
    for _ in range(n):
        a = time.perf_counter_ns()
        fn()
        took.append(time.perf_counter_ns() - a)
    return float(np.median(took)) / 1e3


def attention(fused: FusedPOYO) -> None:
    """The processor's self-attention shape (8 heads, 128 latents, head dim 64): SDPA against its parts."""
    qkv = torch.randn(128, 3, 8, 64)
    q, k, v = (x.contiguous() for x in qkv.permute(1, 2, 0, 3)[:, None].unbind(0))
    scores = torch.randn(8, 128, 128)
    flops = 4 * 8 * 128 * 128 * 64
    sdpa = median_us(lambda: F.scaled_dot_product_attention(q, k, v))
    print(f"SDPA {sdpa:.0f} µs ({flops / sdpa / 1e3:.0f} GFLOP/s); q k^T bmm "
          f"{median_us(lambda: torch.bmm(q[0], k[0].transpose(1, 2))):.0f}, softmax "
          f"{median_us(lambda: torch.softmax(scores, -1)):.0f}, p v bmm {median_us(lambda: torch.bmm(scores, v[0])):.0f}")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    print(f"fp32 matmul rate here: {2 * 1024**3 / median_us(lambda: a @ b, 20) / 1e3:.0f} GFLOP/s")


class Bf16Tail:
    """process_and_decode with the processor's linear layers in bf16 (weights cast once) and its attention
    as bf16 matmuls around an fp32 softmax; LayerNorms, residuals, decoder in fp32."""

    def __init__(self, fused: FusedPOYO):
        self.f, m = fused, fused.model

        def lin(layer):
            w = layer.weight.detach().to(BF16)
            b = None if layer.bias is None else layer.bias.detach().to(BF16)
            return lambda x: F.linear(x.to(BF16), w, b).float()

        self.layers = [(attn, lin(attn.to_qkv), lin(attn.to_out), ffn[0], lin(ffn[1].net[0]), lin(ffn[1].net[3]))
                       for attn, ffn in m.proc_layers]

    def __call__(self, latents, out_rows, out_times):
        f, m = self.f, self.f.model
        latents = latents + m.enc_ffn(latents)
        for attn, to_qkv, to_out, norm, w1, w2 in self.layers:
            qkv = f.rotary.apply(to_qkv(attn.norm(latents)).unflatten(-1, (3, attn.heads, f.head_dim)),
                                 f.latent_rot, 2)
            q, k, v = qkv.permute(1, 2, 0, 3).unbind(0)  # (h, N, H)
            scores = torch.bmm(q.to(BF16), k.to(BF16).transpose(1, 2)).float() * f.head_dim ** -0.5
            out = torch.bmm(torch.softmax(scores, -1).to(BF16), v.to(BF16)).float()
            latents = latents + to_out(f._unrotate(out[None]))
            x, gate = w1(norm(latents)).chunk(2, -1)
            latents = latents + w2(x * F.gelu(gate))
        queries = m.session_emb.weight[out_rows]
        queries = queries + f._decode(queries, latents, out_times)
        return m.readout(queries + m.dec_ffn(queries))


def bf16(fused: FusedPOYO) -> None:
    tail, m = Bf16Tail(fused), fused.model
    g = torch.Generator().manual_seed(0)
    rows, out_t = torch.ones(1, dtype=torch.long), torch.tensor([0.99], dtype=torch.float64)
    n_lat = fused.latent_rot.shape[0]
    errs = []
    for _ in range(20):  # latents as the encoder leaves them: their embeddings plus a perturbation
        lat = m.latent_emb.weight[torch.arange(n_lat) % m.latent_emb.weight.shape[0]]
        lat = lat + 0.5 * torch.randn(lat.shape, generator=g)
        ref = fused.process_and_decode(lat, rows, out_t)
        errs.append(float((tail(lat, rows, out_t) - ref).abs().max() / ref.abs().max()))
    fp32 = median_us(lambda: fused.process_and_decode(lat, rows, out_t), 60)
    low = median_us(lambda: tail(lat, rows, out_t), 60)
    print(f"fp32 {fp32 / 1e3:.2f} ms, bf16 {low / 1e3:.2f} ms; |bf16 - fp32| / max |fp32|: median "
          f"{np.median(errs):.1e}, max {max(errs):.1e} over 20 inputs")


def int8(fused: FusedPOYO) -> None:
    """The processor's linear layers as int8 dynamic-quantized layers (fbgemm/x86: int8 weights per channel
    scaled, activations quantized per call), everything else fp32; same inputs and error measure as ``bf16``."""
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (not a dependency)
        warnings.simplefilter("ignore")
        model = copy.deepcopy(fused.model)
        for attn, ffn in model.proc_layers:
            for parent in (attn, ffn):
                torch.ao.quantization.quantize_dynamic(parent, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        low = FusedPOYO(model, n_output=1, encoder=False)
    m = fused.model
    g = torch.Generator().manual_seed(0)
    rows, out_t = torch.ones(1, dtype=torch.long), torch.tensor([0.99], dtype=torch.float64)
    n_lat = fused.latent_rot.shape[0]
    errs = []
    for _ in range(20):
        lat = m.latent_emb.weight[torch.arange(n_lat) % m.latent_emb.weight.shape[0]]
        lat = lat + 0.5 * torch.randn(lat.shape, generator=g)
        ref = fused.process_and_decode(lat, rows, out_t)
        errs.append(float((low.process_and_decode(lat, rows, out_t) - ref).abs().max() / ref.abs().max()))
    fp32 = median_us(lambda: fused.process_and_decode(lat, rows, out_t), 60)
    q8 = median_us(lambda: low.process_and_decode(lat, rows, out_t), 60)
    print(f"fp32 {fp32 / 1e3:.2f} ms, int8 linear layers {q8 / 1e3:.2f} ms ({fp32 / q8:.2f}x); "
          f"|int8 - fp32| / max |fp32|: median {np.median(errs):.1e}, max {max(errs):.1e} over 20 inputs")


def half_rotation(fused: FusedPOYO) -> None:
    """Pairs with frequency 0 rotate by 1 + 0i: skipping them (in place on the fresh q/k/v) is bit-exact."""
    n_rot = int((fused.omega != 0).sum())
    x = torch.randn(128, 3, 8, fused.head_dim)
    table = fused.latent_rot[:, None, None, :]
    head = table[..., :n_rot].contiguous()

    def full():
        return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * table).flatten(-2)

    def partial():
        y = x.clone()  # stands for the projection's fresh output
        torch.view_as_complex(y.unflatten(-1, (-1, 2)))[..., :n_rot] *= head
        return y

    assert torch.equal(full(), partial())
    print(f"{n_rot} of {fused.head_dim // 2} pairs rotate; q/k/v rotation all pairs {median_us(full):.0f} µs, "
          f"rotated pairs only (incl. the copy it replaces) {median_us(partial):.0f} µs, the copy alone "
          f"{median_us(lambda: x.clone()):.0f} µs")


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("lever", choices=["attention", "bf16", "half-rotation", "int8"])
args = ap.parse_args()
torch.set_num_threads(1)
model = build_model(BENCH_CONFIGS["poyo_1.3M"], n_units=100)
with torch.inference_mode():
    fused = FusedPOYO(model, n_output=1, encoder=False)
    {"attention": attention, "bf16": bf16, "half-rotation": half_rotation, "int8": int8}[args.lever](fused)

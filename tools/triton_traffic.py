"""Estimate the bytes one processor layer of the Triton forward loads, per residual layout.

A hand model of `poyo_rt/kernels/triton_poyo.py`'s grids and tiles (not a measurement): for each kernel,
programs x (rows, partial sums and weight tiles each program loads), fp32. Loads that several programs repeat
are counted each time: they are what the L2 (or HBM) must serve. It shows why wide models get summed residuals
(docs/performance.md, "Fourth session"):

    python tools/triton_traffic.py                      # poyo_1.3M and dim512_depth2
    python tools/triton_traffic.py --config dim512_depth2 --block-m 16
"""

from __future__ import annotations

import argparse
import math

from poyo_rt.bench.forward import BENCH_CONFIGS

F32 = 4  # bytes


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_layer(n: int, dim: int, heads: int, head_dim: int, hidden: int, *, block_m: int = 16,
                chunk: int = 32) -> dict[str, float]:
    """Bytes a processor layer loads with split residuals: rows carry ``hidden / chunk`` FFN pieces into the
    q/k/v kernel and those plus ``heads`` out-projection pieces into the FFN kernel; each read twice
    (LayerNorm statistics, then the K loop)."""
    ffn_pieces = _cdiv(hidden, chunk)
    qkv_programs = _cdiv(n, block_m) * 3 * heads
    attn_programs = heads * _cdiv(n, 16)
    ffn_programs = _cdiv(n, block_m) * ffn_pieces
    return {
        "q/k/v rows": qkv_programs * block_m * dim * (1 + ffn_pieces) * F32 * 2,
        "q/k/v weights": qkv_programs * 2 * head_dim * dim * F32,  # the rows and their pair-swapped twins
        "attention": attn_programs * (2 * n * head_dim + 2 * dim * head_dim) * F32,
        "FFN rows": ffn_programs * block_m * dim * (1 + ffn_pieces + heads) * F32 * 2,
        "FFN weights": ffn_programs * 3 * chunk * dim * F32,
    }


def summed_layer(n: int, dim: int, heads: int, head_dim: int, hidden: int, *, block_m: int = 64,
                 chunk: int = 32) -> dict[str, float]:
    """Bytes a processor layer loads with summed residuals (whole rows; two projection kernels more)."""
    inner = heads * head_dim
    row_blocks, col_blocks = _cdiv(n, block_m), _cdiv(dim, chunk)
    qkv_programs = row_blocks * 3 * heads
    return {
        "q/k/v": qkv_programs * (block_m * dim * 2 + 2 * head_dim * dim) * F32,
        "attention": heads * _cdiv(n, 16) * 2 * n * head_dim * F32,
        "out-projection": row_blocks * col_blocks * (block_m * inner * 2 + chunk * inner + block_m * chunk) * F32,
        "FFN activations": row_blocks * _cdiv(hidden, chunk) * (block_m * dim * 2 + 2 * chunk * dim) * F32,
        "FFN output": row_blocks * col_blocks * (block_m * hidden + chunk * hidden + block_m * chunk) * F32,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(BENCH_CONFIGS), action="append",
                    help="bench config (repeatable; default: all)")
    ap.add_argument("--window", type=float, default=1.0, help="window, seconds (latents = per step x steps)")
    ap.add_argument("--latent-step", type=float, default=0.125, help="latent step, seconds")
    ap.add_argument("--block-m", type=int, default=64, help="rows a program in the summed layout")
    args = ap.parse_args()
    for name in args.config or sorted(BENCH_CONFIGS):
        c = BENCH_CONFIGS[name]
        n = c["num_latents_per_step"] * math.ceil(args.window / args.latent_step)
        shape = dict(n=n, dim=c["dim"], heads=c["self_heads"], head_dim=c["dim_head"], hidden=4 * c["dim"])
        print(f"{name}: {n} latents, dim {c['dim']}, {c['self_heads']} heads of {c['dim_head']}, "
              f"hidden {4 * c['dim']}; bytes loaded a processor layer")
        for label, parts in (("split", split_layer(**shape)),
                             (f"summed ({args.block_m} rows)", summed_layer(**shape, block_m=args.block_m))):
            detail = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in parts.items())
            print(f"  {label:<18} {sum(parts.values()) / 1e9:7.3f} GB  ({detail})")


if __name__ == "__main__":
    main()

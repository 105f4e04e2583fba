"""The Triton kernels compile for the GPUs poyo-rt targets (sm_90: H100/H200), ahead of time on this CPU with
the ptxas Triton bundles, and do not spill registers: what the interpreter (tests/test_triton_kernels.py)
cannot check."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E402 (phase 1 interprets the kernels once)

import pytest
import torch

pytest.importorskip("triton")

from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model, fused_inputs  # noqa: E402
from poyo_rt.kernels.aot import check, compile_env, format_reports  # noqa: E402
from poyo_rt.model.fused import FusedPOYO  # noqa: E402

if os.environ["TRITON_INTERPRET"] != "1":
    pytest.skip("records launches by interpreting the kernels (TRITON_INTERPRET=1)", allow_module_level=True)

import triton  # noqa: E402

#: Spill bytes a thread allowed in the 4-warp unrolled latent kernels. Triton 3.9's ptxas (here, CI) spills
#: none; triton 3.6's (the device's) spills 8 B in the latents' attention and 12 B in the processor's FFN, 16 and
#: 24 B with "tf32x3i" (sixteenth session, tools/device_stack.sh). Their 8-warp builds spill nothing under either.
UNROLL_4_WARP_SPILL_B = 0 if tuple(int(v) for v in triton.__version__.split(".")[:2]) >= (3, 9) else 24


def _spill_ok(r: dict) -> bool:
    """No spill, or (4-warp builds of the latents' kernels, older Triton) at most UNROLL_4_WARP_SPILL_B."""
    allowed = UNROLL_4_WARP_SPILL_B if r.get("num_warps") == 4 and r["grid"][0] > 2 else 0
    return r["ok"] and r["spill_store_bytes"] <= allowed and r["spill_load_bytes"] <= allowed


@pytest.mark.slow
def test_poyo_1_3m_kernels_compile_for_sm90_without_spills():
    """Every kernel in both residual layouts, without spills, but one: the decoder's attention in the summed
    layout (not poyo_1.3M's own: it is split) with one output query. Its shapes as constants (n_q = 1) made
    triton 3.9's ptxas spill 16 B a thread; with n_q at run time it did not, but then the processor's attention,
    unrolled, spilled 176 B. It runs once a forward, so 32 B is allowed there and nowhere else."""
    model = build_model(BENCH_CONFIGS["poyo_1.3M"], n_units=100)
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=500, device=torch.device("cpu")))
    reports = check(fused, packed, arch=90, residuals=("split", "summed"))  # dim 512 gets the same blocks, summed
    table = format_reports(reports)
    assert {r["kernel"] for r in reports} == {"_encoder_attention_kernel", "_combine_proj_kernel", "_ffn_kernel",
                                              "_ln_proj_rotate_kernel", "_attention_kernel", "_readout_kernel",
                                              "_proj_residual_kernel"}, table
    assert all(r["ok"] for r in reports), table
    summed_decoder = [r for r in reports if r["kernel"] == "_attention_kernel" and r["args"]["Q_FROM_EMB"]["value"]
                      and not r["args"]["PROJECT"]["value"]]
    assert len(summed_decoder) == 1, table
    others = [r for r in reports if r not in summed_decoder]
    assert all(r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 for r in others), table
    assert all(r["spill_store_bytes"] <= 32 and r["spill_load_bytes"] <= 32 for r in summed_decoder), table
    assert all(r["registers"] <= 255 and r["shared_bytes"] <= 227 * 1024 for r in reports), table  # sm_90 limits


@pytest.mark.slow
def test_encoder_compiles_without_spills_for_few_latents():
    """A model with 32 latents (a 0.25 s window of poyo_1.3M's geometry): the encoder's query block stays at
    64 rows or more (32 made ptxas keep 32 registers and spill ~40 KB a thread)."""
    model = build_model(dict(BENCH_CONFIGS["poyo_1.3M"], depth=0, num_latents_per_step=4), n_units=20)
    fused = FusedPOYO(model, n_output=1)
    assert fused.latent_rot.shape[0] == 32
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=200, device=torch.device("cpu")))
    reports = [r for r in check(fused, packed, arch=90) if r["kernel"] == "_encoder_attention_kernel"]
    table = format_reports(reports)
    assert reports and all(r["ok"] and r["spill_store_bytes"] == 0 == r["spill_load_bytes"] for r in reports), table


@pytest.mark.slow
def test_ffn_tunings_compile_for_sm90_without_spills():
    """The sweep's other FFN tunings (16 and 32 hidden units a program; 64 is the default, tools/profile_gpu.py
    --sweep) for poyo_1.3M's widths, and the default for dim 512's (its summed layout's hidden-layer kernel);
    one processor layer and few spikes: the FFN kernel compiles the same, the interpreter runs less."""
    model = build_model(dict(BENCH_CONFIGS["poyo_1.3M"], depth=1, num_latents_per_step=4), n_units=20)
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=50, device=torch.device("cpu")))
    reports = check(fused, packed, arch=90, tunings=({"ffn_block_f": 16}, {"ffn_block_f": 32}),
                    kernels=("_ffn_kernel",))
    table = format_reports(reports)
    assert len(reports) >= 2 and {r["kernel"] for r in reports} == {"_ffn_kernel"} and all(r["ok"] for r in reports), table
    assert all(r["spill_store_bytes"] == 0 == r["spill_load_bytes"] for r in reports), table
    wide = build_model(dict(BENCH_CONFIGS["dim512_depth2"], depth=1, num_latents_per_step=4), n_units=20)
    fused = FusedPOYO(wide, n_output=1)
    packed = fused_inputs(fused, bench_inputs(wide, n_spikes=50, device=torch.device("cpu")))
    reports = check(fused, packed, arch=90, kernels=("_ffn_kernel",))
    table = format_reports(reports)
    assert reports and all(r["ok"] and r["spill_store_bytes"] == 0 == r["spill_load_bytes"] for r in reports), table


@pytest.mark.slow
def test_eight_warps_for_the_latent_kernels_compile_for_sm90():
    """The sweep's proc_warps=8 (tools/profile_gpu.py --sweep) for poyo_1.3M's widths: the latents' attention,
    projection and FFN kernels on 8 warps compile with half the registers of 4 warps and at most a few bytes of
    spill (one FFN variant spilled 4/8 B under triton 3.9; 2 warps spilled ~300 B, so the option stops at 4);
    with proc_width 64 on 8 warps (a dim-64 row in one chunk) without spills (on 4 warps: ~400 B)."""
    model = build_model(dict(BENCH_CONFIGS["poyo_1.3M"], depth=1, num_latents_per_step=4), n_units=20)
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=50, device=torch.device("cpu")))
    kernels = ("_ffn_kernel", "_ln_proj_rotate_kernel", "_attention_kernel")
    reports = check(fused, packed, arch=90, tunings=({"proc_warps": 8},), kernels=kernels)
    table = format_reports(reports)
    eight = [r for r in reports if r.get("num_warps") == 8]
    assert {r["kernel"] for r in eight} == set(kernels), table
    assert all(r["ok"] and r["registers"] <= 192 and r["spill_store_bytes"] <= 16 for r in eight), table
    reports = check(fused, packed, arch=90, tunings=({"proc_warps": 8, "proc_width": 64},), kernels=kernels)
    table = format_reports(reports)
    wide = [r for r in reports if r.get("num_warps") == 8]
    assert {r["kernel"] for r in wide} == set(kernels), table
    assert all(r["ok"] and r["spill_store_bytes"] == 0 == r["spill_load_bytes"] for r in wide), table


@pytest.mark.slow
def test_unrolled_kernels_compile_loop_free_for_sm90():
    """TritonPOYO(unroll=True): poyo_1.3M's latent and output kernels compile for sm_90 to straight code (no
    backward branch in the machine code, so what a thread runs is the instruction count aot reports) without
    spills on 8 warps, nor on 4 with triton 3.9 (3.6: see UNROLL_4_WARP_SPILL_B); the decoder's attention keeps
    the loop of float64 sin/cos. dim 512's 16-step column loops stay loops (unrolled whole they spilled 120 B
    to 1.3 KB a thread), and still compile without spills."""
    model = build_model(dict(BENCH_CONFIGS["poyo_1.3M"], depth=1), n_units=20)  # 128 latents: 4 key blocks
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=50, device=torch.device("cpu")))
    kernels = ("_ffn_kernel", "_ln_proj_rotate_kernel", "_attention_kernel", "_readout_kernel")
    reports = check(fused, packed, arch=90, tunings=({"unroll": True}, {"unroll": True, "proc_warps": 8}),
                    kernels=kernels)
    table = format_reports(reports)
    unrolled = [r for r in reports if r["args"]["UNROLL"]["value"]]
    assert {r["kernel"] for r in unrolled} == set(kernels), table
    assert {r["kernel"] for r in unrolled if r["num_warps"] == 8} == {"_ffn_kernel", "_ln_proj_rotate_kernel",
                                                                       "_attention_kernel"}, table
    assert all(_spill_ok(r) for r in unrolled), table
    decoder = [r for r in unrolled if r["kernel"] == "_attention_kernel" and r["args"]["Q_FROM_EMB"]["value"]]
    assert len(decoder) == 1 and all(r["loops"] == 0 for r in unrolled if r not in decoder), table
    wide = build_model(dict(BENCH_CONFIGS["dim512_depth2"], depth=1, num_latents_per_step=4), n_units=20)
    fused = FusedPOYO(wide, n_output=1)
    packed = fused_inputs(fused, bench_inputs(wide, n_spikes=50, device=torch.device("cpu")))
    reports = check(fused, packed, arch=90, tunings=({"unroll": True},),
                    kernels=("_ffn_kernel", "_ln_proj_rotate_kernel"))
    table = format_reports(reports)
    assert reports and all(r["ok"] and r["spill_store_bytes"] == 0 == r["spill_load_bytes"] for r in reports), table
    assert all(r["loops"] >= 1 and len(r["loop_bodies"]) == r["loops"] for r in reports), table
    assert all(0 < body < r["instructions"] for r in reports for body in r["loop_bodies"]), table


@pytest.mark.slow
def test_inline_split_and_swapped_pairs_compile_to_fewer_instructions_for_sm90():
    """The options' reason to exist, with unroll: precision "tf32x3i" (the operands of the three TF32 products
    split in the kernel) compiles poyo_1.3M's processor kernels for sm_90 to fewer instructions than Triton's
    own tf32x3 (triton 3.9: attention 3,504 -> 2,864, FFN 2,864 -> 2,576, projection 1,608 -> 1,408), and
    swap_pairs (a rotation's partner channels swapped in registers, one product instead of two) the projection
    and attention kernels to fewer again (1,224 and 2,656), all without spills (triton 3.6: attention 3,360 ->
    2,752 -> 2,736, FFN 5,832 -> 5,496, projection 2,864 -> 2,592 -> 2,384, with the 4-warp spills
    UNROLL_4_WARP_SPILL_B allows)."""
    model = build_model(dict(BENCH_CONFIGS["poyo_1.3M"], depth=1), n_units=20)
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=50, device=torch.device("cpu")))
    kernels = ("_ffn_kernel", "_ln_proj_rotate_kernel", "_attention_kernel")
    base, inline, swap = {"unroll": True}, {"unroll": True, "precision": "tf32x3i"}, {"unroll": True,
                                                                                      "precision": "tf32x3i",
                                                                                      "swap_pairs": True}
    reports = check(fused, packed, arch=90, kernels=kernels, tunings=(base, inline, swap))
    table = format_reports(reports)
    processor = [r for r in reports if r["grid"][0] > 2]  # not the decoder's and output queries' launches

    def variant(r: dict) -> str:
        if r["args"]["PRECISION"]["value"] == "tf32x3":
            return "base"
        return "swap" if r["args"].get("SWAP", {}).get("value") else "inline"

    by = {(r["kernel"], variant(r), tuple(r["grid"])): r for r in processor}
    assert {k[0] for k in by if k[1] == "inline"} == set(kernels), table
    for kernel, name, grid in by:
        r = by[(kernel, name, grid)]
        assert _spill_ok(r), table
        if name == "inline":
            assert r["instructions"] < by[(kernel, "base", grid)]["instructions"], table
        if name == "swap" and kernel != "_ffn_kernel":  # the FFN has no rotation: the same code
            assert r["instructions"] < by[(kernel, "inline", grid)]["instructions"], table


def test_phase_probe_compiles_for_sm90_with_its_barrier_atomics():
    """tools/gpu_phase_probe.py (the next device run's persistent-kernel probe) builds for sm_90, and its grid
    barrier is a release add and acquire loads issued by one thread of each program: what the device run's
    correctness check then tests under real concurrency."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "gpu_phase_probe.py"
    res = subprocess.run([sys.executable, str(tool), "--compile-only"], capture_output=True, text=True,
                         env=compile_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    facts = {r["kernel"]: r["ptx_counts"] for r in map(json.loads, res.stdout.splitlines())}
    assert facts["_persistent_kernel"]["global.gpu.release.add"] == 1
    assert facts["_persistent_kernel"]["ld.global.gpu.acquire"] >= 1 and facts["_persistent_kernel"]["%tid.x"] >= 1
    separate = facts["_separate_kernel"]
    assert separate["global.gpu.release.add"] == 0 == separate["ld.global.gpu.acquire"]


def test_doorbell_spins_on_a_volatile_load_for_sm90():
    """The doorbell's wait (poyo_rt.kernels.doorbell) compiled for sm_90: the bell is read with volatile loads,
    before the loop and again in it (a load the compiler kept in a register would spin forever), and the
    counters are stored."""
    import subprocess
    import sys

    code = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from poyo_rt.kernels.doorbell import _doorbell_kernel
sig = {"bell_ptr": "*i64", "served_ptr": "*i64", "timeouts_ptr": "*i64", "max_spins": "i32"}
print(triton.compile(ASTSource(_doorbell_kernel, sig), target=GPUTarget("cuda", 90, 32),
                     options={"num_warps": 1}).asm["ptx"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=compile_env(),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ptx = out.stdout
    assert ptx.count("ld.volatile.global.b64") >= 2, ptx
    assert ptx.count("st.global.b64") >= 2, ptx  # served, and the timeouts

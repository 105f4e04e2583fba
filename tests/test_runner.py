"""Buffer -> incremental tokenizer -> runner equals offline POYO.tokenize + forward, tick by tick."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, make_pair
from poyo_rt.model import collate
from poyo_rt.runtime.runner import Runner, default_buckets, resolve_kernels, triton_available
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer

TOL = 1e-5


def offline_decode(model, t_end, times, units, unit_ids, session_id, out_rel):
    """The reference path: slice the window, POYO.tokenize, collate, forward."""
    start = t_end - model.sequence_length
    keep = (times >= start) & (times < t_end)
    window = SimpleNamespace(
        spikes=SimpleNamespace(timestamps=times[keep] - start, unit_index=units[keep]),
        units=SimpleNamespace(id=np.array(unit_ids)),
        session=SimpleNamespace(id=session_id),
        cursor=SimpleNamespace(timestamps=np.asarray(out_rel), vel=np.zeros((len(out_rel), 2))),
    )
    batch = collate([model.tokenize(window)])["model_inputs"]
    with torch.inference_mode():
        return model(**batch)[0, : len(out_rel)].numpy()


@pytest.mark.parametrize("mode", ["kv_cache", "exact", "fused"])
@pytest.mark.parametrize("name", ["small", "poyo_1.3M"])
def test_streaming_runner_equals_offline(name, mode):
    """Each CPU path; "fused" is also the host half of the CUDA path (packing, window-relative times). Every
    other tick is tokenized in two parts with the runner warmed in between, as the engine's pre-tick does."""
    rng = np.random.default_rng(3)
    model, _ = make_pair(CONFIGS[name], n_units=20, n_sessions=2)
    unit_ids = [f"unit{i}" for i in rng.permutation(20)[:15]]  # stream units: a shuffled subset
    vocab_index = np.asarray(model.unit_emb.tokenizer(unit_ids), dtype=np.int64)
    tok = IncrementalTokenizer(window_s=1.0, latent_step_s=0.125, num_latents_per_step=model.num_latents_per_step,
                               unit_vocab_index=vocab_index, session_vocab_index=model.session_emb.tokenizer("sess1"),
                               max_spikes=600, n_outputs=2, output_lag_s=0.0, output_spacing_s=0.01)
    buf = SpikeBuffer(capacity=4096, n_units=len(unit_ids), unit_map=vocab_index)
    runner = Runner(model, capacity=tok.n_in, n_outputs=2, device="cpu", kv_cache=mode == "kv_cache",
                    fused=mode == "fused")
    assert (runner.kv_cache is not None) == (mode == "kv_cache") and (runner.fused is not None) == (mode == "fused")
    # the engine's warm-up: the tokenizer before any update holds a well-formed empty window [0, 1 s)
    warm = runner.run(tok.arrays(), tok.n_start_end)
    empty = offline_decode(model, 1.0, np.zeros(0), np.zeros(0, dtype=np.int64), unit_ids, "sess1", [0.99, 1.0])
    assert np.abs(warm.values - empty).max() <= TOL
    t0 = 5000.0  # LSL-like absolute clock
    rate = rng.uniform(5, 40, len(unit_ids))
    all_t, all_u = [], []
    t_prev = t0
    for k in range(1, 160):  # 3.2 s at 50 Hz: windows fill, slide, wrap
        t_end = t0 + k * 0.02
        burst = 8 if k in (60, 61) else 1  # a burst, and a silent stretch below
        lam = rate * 0.02 * burst * (0 if 100 <= k < 130 else 1)
        counts = rng.poisson(lam)
        u = np.repeat(np.arange(len(unit_ids)), counts)
        t = rng.uniform(t_prev, t_end, len(u))
        order = np.argsort(t)
        all_t.append(t[order]), all_u.append(u[order])
        t_prev = t_end
        if k % 2:  # the engine's pre-tick: tokenize with the spikes so far, warm the runner, then the rest
            cut = len(order) // 2
            buf.append(t[order[:cut]], u[order[:cut]])
            early = tok.update(t_end, buf)
            runner.warm(tok.arrays(), early.n_input_tokens)
            buf.append(t[order[cut:]], u[order[cut:]])
            info = tok.update(t_end, buf).after(early)
        else:
            buf.append(t[order], u[order])
            info = tok.update(t_end, buf)
        res = runner.run(tok.arrays(), info.n_input_tokens)
        ref = offline_decode(model, t_end, np.concatenate(all_t), np.concatenate(all_u), unit_ids, "sess1",
                             [0.99, 1.0])
        assert res.values.shape == (2, 2) and res.values.dtype == np.float32
        assert np.abs(res.values - ref).max() <= TOL, k
        if mode == "kv_cache":  # exactly the real tokens
            assert res.n_input == info.n_input_tokens
        else:  # trimmed views, rounded up to 8
            assert res.n_input % 8 == 0 and res.n_input >= info.n_input_tokens


def test_default_buckets():
    assert default_buckets(2210) == [256, 512, 1024, 2048, 2216]
    assert default_buckets(100) == [104]
    assert all(b % 8 == 0 for b in default_buckets(5000))
    fine = default_buckets(8392, growth=1.25)  # the CUDA runner's: padding at most a quarter of a bucket
    assert fine[0] == 256 and fine[-1] == 8392 and all(b % 8 == 0 for b in fine)
    assert all(1.0 < b / a <= 1.25 + 8 / a for a, b in zip(fine[:-2], fine[1:-1]))
    assert next(b for b in fine if b >= 2200) <= 2200 * 1.25
    with pytest.raises(ValueError, match="growth"):
        default_buckets(1000, growth=1.0)


def test_runner_rejects_bad_requests():
    model, _ = make_pair(CONFIGS["small"])
    runner = Runner(model, capacity=64, n_outputs=1)
    arrays = {"input_mask": np.zeros((1, 64), bool)}
    with pytest.raises(ValueError, match="exceeds"):
        runner.run(arrays, 65)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            Runner(model, capacity=64, n_outputs=1, device="cuda")


@pytest.mark.slow
def test_compiled_cpu_runner_equals_eager():
    """The optional torch.compile CPU path gives the eager values (compiles once per token count)."""
    from _poyo_ref import random_batch

    model, _ = make_pair(CONFIGS["small"])
    batch = random_batch(model, batch=1, n_out=1, seed=4)
    n = batch["input_unit_index"].shape[1]
    arrays = {k: v.numpy().copy() for k, v in batch.items()}
    eager = Runner(model, capacity=n, n_outputs=1, kv_cache=False).run(arrays, n)
    with pytest.raises(ValueError, match="compact"):  # this batch has padding among its tokens
        Runner(model, capacity=n, n_outputs=1).run(arrays, n)
    compiled = Runner(model, capacity=n, n_outputs=1, compile=True).run(arrays, n)
    assert np.abs(compiled.values - eager.values).max() <= TOL


def test_bf16_runner_is_close_to_fp32_and_opt_in():
    """CPU bf16 autocast: a stated ~1e-2 relative tolerance, never bit-equal (it really ran in bf16)."""
    from _poyo_ref import random_batch

    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    batch = random_batch(model, batch=1, n_out=1, seed=5)
    n = batch["input_unit_index"].shape[1]
    arrays = {k: v.numpy().copy() for k, v in batch.items()}
    fp32 = Runner(model, capacity=n, n_outputs=1, kv_cache=False).run(arrays, n).values
    runner = Runner(model, capacity=n, n_outputs=1, precision="bf16")
    assert runner.kv_cache is None  # bf16 runs the full forward
    bf16 = runner.run(arrays, n).values
    rel = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    assert 0 < rel <= 2e-2 and bf16.dtype == np.float32
    with pytest.raises(ValueError, match="precision"):
        Runner(model, capacity=n, n_outputs=1, precision="fp16")
    with pytest.raises(ValueError, match="tf32' is a CUDA option"):
        Runner(model, capacity=n, n_outputs=1, precision="tf32")


def test_fused_runner_rejects_what_it_cannot_run():
    from _poyo_ref import random_batch

    model, _ = make_pair(CONFIGS["small"])
    batch = random_batch(model, batch=1, n_out=1, seed=4)  # padding among the real tokens
    n = batch["input_unit_index"].shape[1]
    arrays = {k: v.numpy().copy() for k, v in batch.items()}
    with pytest.raises(ValueError, match="compact"):
        Runner(model, capacity=n, n_outputs=1, fused=True).run(arrays, n)
    with pytest.raises(ValueError, match="bf16"):
        Runner(model, capacity=n, n_outputs=1, fused=True, precision="bf16")
    with pytest.raises(ValueError, match="CUDA"):  # the Triton kernels are a GPU path
        Runner(model, capacity=n, n_outputs=1, fused=True, kernels="triton")
    with pytest.raises(ValueError, match="kernels"):
        Runner(model, capacity=n, n_outputs=1, kernels="cuda")
    for options in ({"graph_copies": True}, {"warm": "replay"}, {"warm": "launch"}):  # options of the CUDA graphs
        with pytest.raises(ValueError, match="CUDA graphs"):
            Runner(model, capacity=n, n_outputs=1, **options)
    with pytest.raises(ValueError, match="warm must be"):
        Runner(model, capacity=n, n_outputs=1, warm="forward")
    import platform

    with pytest.MonkeyPatch.context() as mp:  # the doorbell relies on x86-64's store order
        mp.setattr(platform, "machine", lambda: "aarch64")
        with pytest.raises(ValueError, match="x86-64's store order.*aarch64"):
            Runner(model, capacity=n, n_outputs=1, warm="launch")
    with pytest.raises(ValueError, match="during= is a CUDA option"):  # the CPU forward leaves no wait to use
        Runner(model, capacity=n, n_outputs=1, kv_cache=False).run(arrays, n, during=lambda: None)
    arrays["latent_timestamps"] = arrays["latent_timestamps"] * 2.0  # not the model's latent grid
    arrays["input_mask"][:] = True
    with pytest.raises(ValueError, match="latent"):
        Runner(model, capacity=n, n_outputs=1, fused=True).run(arrays, n)


def test_matmul_tf32_is_scoped():
    """The CUDA runner captures under TF32 only inside the block, and restores the flag after, error or not."""
    from poyo_rt.runtime.runner import matmul_tf32

    before = torch.backends.cuda.matmul.allow_tf32
    with matmul_tf32(not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before
    with pytest.raises(RuntimeError), matmul_tf32(not before):
        raise RuntimeError("capture failed")
    assert torch.backends.cuda.matmul.allow_tf32 is before


def test_kernels_auto_picks_triton_only_where_it_runs():
    """model.kernels "auto" (the default): the Triton forward on CUDA for the fused, uncompiled forward when
    Triton imports; the torch operators everywhere else; an explicit choice is kept."""
    assert resolve_kernels("auto", is_cuda=True, fused=True, compile=False) == ("triton" if triton_available() else "torch")
    assert resolve_kernels("auto", is_cuda=False, fused=True, compile=False) == "torch"
    assert resolve_kernels("auto", is_cuda=True, fused=False, compile=False) == "torch"
    assert resolve_kernels("auto", is_cuda=True, fused=True, compile="default") == "torch"
    assert resolve_kernels("torch", is_cuda=True, fused=True, compile=False) == "torch"
    assert resolve_kernels("auto", is_cuda=True, fused=True, compile=False, precision="tf32") == "torch"
    model, _ = make_pair(CONFIGS["small"])
    assert Runner(model, capacity=64, n_outputs=1, device="cpu").kernels == "torch"
    with pytest.raises(ValueError, match="kernels must be"):
        Runner(model, capacity=64, n_outputs=1, device="cpu", kernels="cuda")

"""GPU checks: CUDA-graph capture of the fixed-shape forward, against eager. Skipped without CUDA;
run on the device machine with ``tools/gpu_check.sh``."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, make_pair, random_batch
from poyo_rt.model import allocate_static_inputs, static_forward

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TOL = 1e-5


@pytest.mark.parametrize("name", ["small", "cross2_head24", "poyo_1.3M"])
def test_cuda_graph_equals_eager_across_updates(name):
    from poyo_rt.runtime.cudagraph import GraphedForward

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_model, _ = make_pair(CONFIGS[name])
    model, _ = make_pair(CONFIGS[name])
    model = model.cuda()
    buf = allocate_static_inputs(model, n_input=512, n_output=3, device="cuda")
    graphed = GraphedForward(model, buf)
    for seed in range(4):
        batch = random_batch(model, batch=1, n_out=3, seed=seed, shift=50.0 * seed)
        n = batch["input_unit_index"].shape[1]
        for key in ("input_unit_index", "input_timestamps", "input_token_type", "input_mask"):
            getattr(buf, key).zero_()
            getattr(buf, key)[:, :n].copy_(batch[key])
        for key in ("latent_timestamps", "output_session_index", "output_timestamps"):
            getattr(buf, key).copy_(batch[key])
        out = graphed.replay().clone()
        with torch.inference_mode():
            eager = static_forward(model, buf)
            cpu_ref = cpu_model(**batch)
        assert (out - eager).abs().max().item() <= TOL
        assert (out.cpu() - cpu_ref).abs().max().item() <= 1e-4  # GPU vs CPU kernels (fp32, no TF32)


def test_replay_does_not_synchronise():
    from poyo_rt.runtime.cudagraph import GraphedForward

    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    model = model.cuda()
    buf = allocate_static_inputs(model, n_input=256, device="cuda")
    graphed = GraphedForward(model, buf)
    torch.cuda.set_sync_debug_mode("error")
    try:
        graphed.replay()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_runner_cuda_matches_cpu():
    from poyo_rt.runtime.runner import Runner

    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    batch = random_batch(model, batch=1, n_out=2, seed=9)
    n = batch["input_unit_index"].shape[1]
    cap = 1024
    arrays = {}
    for key, value in batch.items():
        if key.startswith("input_"):
            full = np.zeros((1, cap), dtype=value.numpy().dtype)
            full[:, :n] = value.numpy()
            arrays[key] = full
        else:
            arrays[key] = value.numpy().copy()
    cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu", kv_cache=False).run(arrays, n)  # masked slots
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    runner = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", buckets=[256, 512, 1024], fused=False)
    t0 = time.perf_counter_ns()
    res = runner.run(arrays, n)  # the exact graph: the fused one needs compact tokens
    wall_us = (time.perf_counter_ns() - t0) / 1e3
    assert res.n_input >= n and res.forward_us > 0
    # the host's side of the call: packing, queueing, waiting; together within the call's wall time, and the
    # queueing plus the wait at least as long as the GPU's events between the first and the last
    assert set(res.host_us) == {"pack", "launch", "sync"} and min(res.host_us.values()) >= 0, res.host_us
    assert sum(res.host_us.values()) <= wall_us, (res.host_us, wall_us)
    assert res.host_us["launch"] + res.host_us["sync"] >= 0.9 * (res.h2d_us + res.forward_us + res.d2h_us), res
    np.testing.assert_allclose(res.values, cpu.values, atol=1e-4)


def _stream_arrays(model, n_ticks: int, seed: int = 0):
    """(arrays, n_tokens) of successive 50 Hz ticks of a Poisson stream on an LSL-like clock (5,000 s)."""
    from poyo_rt.stream.buffer import SpikeBuffer
    from poyo_rt.stream.tokenizer import IncrementalTokenizer

    rng = np.random.default_rng(seed)
    vocab_index = np.arange(1, 21, dtype=np.int64)
    tok = IncrementalTokenizer(window_s=1.0, latent_step_s=0.125, num_latents_per_step=model.num_latents_per_step,
                               unit_vocab_index=vocab_index, session_vocab_index=1, max_spikes=1000, n_outputs=2,
                               output_lag_s=0.0, output_spacing_s=0.01)
    buf = SpikeBuffer(capacity=8192, n_units=20, unit_map=vocab_index)
    t0, t_prev = 5000.0, 5000.0
    for k in range(1, n_ticks + 1):
        t_end = t0 + 0.02 * k
        n = rng.poisson(20 * 20 * 0.02 * (6 if k % 37 == 0 else 1))
        buf.append(np.sort(rng.uniform(t_prev, t_end, n)), rng.integers(0, 20, n))
        t_prev = t_end
        info = tok.update(t_end, buf)
        yield tok.arrays(), info.n_input_tokens, tok.n_in


@pytest.mark.parametrize("mode", ["fused", "exact", "triton"])
def test_runner_cuda_streams_like_cpu(mode):
    """The CUDA runner (graphs of the fused forward as torch ops or as Triton kernels, or of the exact forward)
    tick by tick against the CPU runner; on every other tick warmed first (Runner.warm: the engine's pre-tick
    stages the window and copies it to the device), which must not change the result."""
    from poyo_rt.runtime.runner import Runner

    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    cpu = gpu = None
    worst = 0.0
    for i, (arrays, n, cap) in enumerate(_stream_arrays(model, 150)):
        if cpu is None:
            cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu")
            gpu = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", fused=mode != "exact",
                         kernels="triton" if mode == "triton" else "torch")
            assert (gpu.fused is not None) == (mode != "exact") and gpu._graphs
        if i % 2:
            gpu.warm(arrays, n)
        res, ref = gpu.run(arrays, n), cpu.run(arrays, n)
        worst = max(worst, float(np.abs(res.values - ref.values).max()))
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("options", [{"graph_copies": True}, {"warm": "replay"}, {"graph_copies": True, "warm": "replay"}])
def test_runner_graph_copies_and_replay_warm_decode_like_cpu(options):
    """model.graph_copies (each graph copies its input in and its output out) and model.cuda_warm: replay (the
    pre-tick runs the whole call) decode tick by tick what the CPU runner decodes. Every other tick is warmed on
    the previous tick's window first, so a graph that skipped its copy in, or a tick that returned the warm
    call's output, would decode the wrong window. With the copies in the graph, h2d and d2h are inside the
    forward's time (NaN on their own)."""
    from poyo_rt.runtime.runner import Runner

    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    cpu = gpu = prev = None
    worst = 0.0
    for i, (arrays, n, cap) in enumerate(_stream_arrays(model, 60)):
        if cpu is None:
            cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu")
            gpu = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", **options)
            assert gpu.graph_copies == options.get("graph_copies", False) and gpu.warm_mode == options.get("warm", "copy")
        if i % 2 and prev is not None:
            gpu.warm(*prev)
        res, ref = gpu.run(arrays, n), cpu.run(arrays, n)
        worst = max(worst, float(np.abs(res.values - ref.values).max()))
        assert res.forward_us > 0 and set(res.host_us) == {"pack", "launch", "sync"}
        assert np.isnan(res.h2d_us) == np.isnan(res.d2h_us) == gpu.graph_copies
        prev = ({k: v.copy() for k, v in arrays.items()}, n)
    assert worst <= 1e-4, worst


def test_launch_ahead_waits_for_the_tick_and_decodes_like_cpu():
    """model.cuda_warm: launch. The pre-tick (Runner.warm) launches the graph on the previous tick's window; the
    graph waits for the doorbell (its end event still pending 3 ms later), the tick packs its own window and
    rings, and the values are the CPU runner's for the tick's window. A tick that grows into another bucket
    than its pre-tick's launches its own graph (launch_missed), and still decodes its window; no wait timed out.
    Runner.release lets a launch that no tick took run."""
    from poyo_rt.runtime.runner import Runner

    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    cpu = gpu = prev = None
    worst, warmed = 0.0, 0
    for i, (arrays, n, cap) in enumerate(_stream_arrays(model, 60)):
        if cpu is None:
            cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu")
            gpu = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", warm="launch")
            assert gpu.warm_mode == "launch" and gpu.graph_copies  # no fallback: the start-up check passed
            empty = ({k: v.copy() for k, v in arrays.items()}, n)  # the first window: START/END tokens only
        if i % 2 and prev is not None:
            gpu.warm(*prev)
            warmed += 1
            time.sleep(0.003)
            assert not gpu._events[3].query(), "the graph launched ahead ran before its ring"
        res, ref = gpu.run(arrays, n), cpu.run(arrays, n)
        worst = max(worst, float(np.abs(res.values - ref.values).max()))
        assert res.forward_us > 0 and np.isnan(res.h2d_us) and np.isnan(res.d2h_us)
        prev = ({k: v.copy() for k, v in arrays.items()}, n)
    assert worst <= 1e-4, worst
    gpu.warm(*empty)  # a launch in the smallest bucket, then a tick in a bigger one
    res = gpu.run(*prev)
    np.testing.assert_allclose(res.values, cpu.run(*prev).values, atol=1e-4)
    counters = gpu.counters()
    assert counters["launched_early"] == warmed + 1 and counters["launch_missed"] >= 1, counters
    assert counters["bell_timeouts"] == 0, counters
    gpu.warm(*prev)  # no tick takes it: release runs it (output discarded)
    t0 = time.perf_counter()
    gpu.release()
    assert time.perf_counter() - t0 < 1.0 and gpu._events[3].query()
    gpu.release()  # nothing pending: a no-op
    np.testing.assert_allclose(gpu.run(*prev).values, cpu.run(*prev).values, atol=1e-4)
    assert gpu.counters()["bell_timeouts"] == 0


@pytest.mark.parametrize("how", ["no kernel", "no wait"])
def test_launch_ahead_falls_back_to_copy_when_the_doorbell_fails(monkeypatch, caplog, how):
    """Should the doorbell's kernel not launch, or the graphs not wait for it (the start-up check), the runner
    warns, runs model.cuda_warm: copy with the copies as asked, and decodes as before."""
    import poyo_rt.runtime.runner as runner_module
    from poyo_rt.kernels.doorbell import Doorbell

    if how == "no kernel":
        def refuse(self):
            raise RuntimeError("simulated: the doorbell kernel does not launch")

        monkeypatch.setattr(Doorbell, "wait", refuse)
        warning = "simulated: the doorbell kernel does not launch"
    else:
        def no_wait(module, dev, *, call, bell):
            return call(module, dev)

        monkeypatch.setattr(runner_module, "_call_after_bell", no_wait)
        warning = "did not hold the graph"
    gpu, _ = _decode_after_a_fallback(caplog, warning, 10, warm="launch")
    assert gpu.warm_mode == "copy" and not gpu.graph_copies and gpu.counters() == {}


def test_runner_runs_host_work_while_the_gpu_works():
    """run(during=f) (the engine's warm_during_forward): f runs once a call, after the call is queued and while the
    GPU still works on it, timed as host_us["overlap"], with the copies outside the graph or in it; the values
    are those of the same call without it."""
    from poyo_rt.runtime.runner import Runner

    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    for graph_copies in (False, True):
        gpu = None
        for arrays, n, cap in _stream_arrays(model, 10):
            if gpu is None:
                gpu = Runner(model, capacity=cap, n_outputs=2, device="cuda", graph_copies=graph_copies)
            busy = []

            def during():
                busy.append(not torch.cuda.current_stream().query())  # the queued call not finished yet
                time.sleep(0.0002)

            res, ref = gpu.run(arrays, n, during=during), gpu.run(arrays, n)
            assert len(busy) == 1 and res.host_us["overlap"] >= 200 and "overlap" not in ref.host_us
            np.testing.assert_array_equal(res.values, ref.values)
            assert busy[0], "during= ran after the GPU had finished: nothing overlapped"


def test_graph_copies_fall_back_to_copies_outside_when_the_capture_fails(monkeypatch, caplog):
    """Should a torch refuse the pinned-memory copies in a capture, the runner warns and captures the graphs with
    the copies outside them, and decodes as before."""
    import poyo_rt.runtime.runner as runner_module

    def refuse(*args, **kwargs):
        raise RuntimeError("simulated: copies not capturable")

    monkeypatch.setattr(runner_module, "_call_with_copies", refuse)
    gpu, results = _decode_after_a_fallback(caplog, "copies not capturable", 10, graph_copies=True)
    assert not gpu.graph_copies and all(np.isfinite(res.h2d_us) for res in results)


def _decode_after_a_fallback(caplog, warning: str, n_ticks: int, **options):
    """A CUDA runner (``options``) whose first capture a test made fail: it warned (``warning``), captured its
    graphs all the same, and decodes ``n_ticks`` of a stream like the CPU runner; returns it and its results."""
    from poyo_rt.runtime.runner import Runner

    model, _ = make_pair(CONFIGS["small"])
    twin, _ = make_pair(CONFIGS["small"])
    gpu = cpu = None
    results = []
    for arrays, n, cap in _stream_arrays(twin, n_ticks):
        if gpu is None:
            with caplog.at_level("WARNING", logger="poyo_rt.runtime.runner"):
                gpu = Runner(model, capacity=cap, n_outputs=2, device="cuda", **options)
            assert gpu._graphs and warning in caplog.text
            cpu = Runner(twin, capacity=cap, n_outputs=2, device="cpu")
        results.append(gpu.run(arrays, n))
        assert np.abs(results[-1].values - cpu.run(arrays, n).values).max() <= 1e-4
    return gpu, results


def test_runner_cuda_compiled_fused_equals_cpu():
    """compile: inductor compiles the fused forward (its default mode and one bucket here, to keep the device
    time short; the bench times max-autotune)."""
    from poyo_rt.runtime.runner import Runner

    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    cpu = gpu = None
    for arrays, n, cap in _stream_arrays(model, 40, seed=1):
        if cpu is None:
            cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu")
            gpu = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", compile="default",
                         buckets=[-(-cap // 8) * 8])
        assert np.abs(gpu.run(arrays, n).values - cpu.run(arrays, n).values).max() <= 1e-4


def test_fused_graph_replay_does_not_synchronise():
    from poyo_rt.model.fused import FusedPOYO
    from poyo_rt.runtime.cudagraph import GraphedForward

    model, _ = make_pair(CONFIGS["poyo_1.3M"])
    fused = FusedPOYO(model.cuda(), n_output=1)
    packed = torch.zeros(fused.layout(256).size, dtype=torch.float64, device="cuda")
    packed[:8] = 1.0  # rows
    packed[512:520] = 1.0  # mask
    graphed = GraphedForward(fused, packed, call=lambda m, x: m(x))
    torch.cuda.set_sync_debug_mode("error")
    try:
        graphed.replay()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(graphed.output).all()



def test_runner_defaults_to_the_triton_forward_on_cuda():
    """model.kernels "auto": Triton's forward where it runs (it is installed on the device machine)."""
    from poyo_rt.runtime.runner import Runner

    model, _ = make_pair(CONFIGS["small"])
    runner = Runner(model, capacity=256, n_outputs=1, device="cuda")
    assert runner.kernels == "triton" and runner.fused is not None


@pytest.mark.parametrize("tuning", [{"unroll": True, "precision": "tf32x3i", "swap_pairs": True},
                                    {"unroll": True, "proc_warps": 8, "proc_width": 64}])
def test_triton_tunings_compiled_equal_the_fused_forward(tuning):
    """The sweep's tunings of the latents' kernels, compiled for this GPU (the CPU suite checks them under the
    interpreter, which runs a loop the same whether it is unrolled or not, a program on one thread whatever its
    warps, and TF32 products in fp32), two combinations that take every option's code path (each compiles a
    forward's kernels: ~10 s): poyo_1.3M on 2,000 spikes equals the fused forward's torch operators within
    1e-5. The sweep prints every tuning's error too."""
    from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model, fused_inputs
    from poyo_rt.kernels import TritonPOYO
    from poyo_rt.model.fused import FusedPOYO

    model = build_model(BENCH_CONFIGS["poyo_1.3M"], n_units=100).cuda()
    fused = FusedPOYO(model, n_output=1)  # bench_inputs holds one output query
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=2000, device=torch.device("cuda")))
    with torch.inference_mode():
        exact, got = fused(packed), TritonPOYO(fused, **tuning)(packed)
    assert float((got - exact).abs().max()) <= TOL


def test_runner_tf32_is_opt_in_and_within_its_stated_error():
    """model.precision "tf32": the fused forward's torch operators captured with TF32 matmuls, the default
    kernels then torch; close to the fp32 runner (5e-3 of the output scale here; `poyo-rt bench forward
    --tf32` reports each config's error: H200, dim 512 5.0e-5, poyo_1.3M 1.2e-3), not bit-equal (it really
    ran in TF32), and the global TF32 flag is left as it was."""
    from poyo_rt.runtime.runner import Runner

    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = make_pair(CONFIGS["cross2_head24"])
    twin, _ = make_pair(CONFIGS["cross2_head24"])
    fp32, tf32 = None, None
    worst, scale, differs = 0.0, 0.0, False
    for arrays, n, cap in _stream_arrays(model, 40):
        if fp32 is None:
            fp32 = Runner(model, capacity=cap, n_outputs=2, device="cuda", kernels="torch")
            tf32 = Runner(twin, capacity=cap, n_outputs=2, device="cuda", precision="tf32")
            assert tf32.kernels == "torch" and torch.backends.cuda.matmul.allow_tf32 is False
        a, b = fp32.run(arrays, n).values, tf32.run(arrays, n).values
        worst, scale = max(worst, float(np.abs(a - b).max())), max(scale, float(np.abs(a).max()))
        differs |= not np.array_equal(a, b)
    assert differs and worst <= 5e-3 * scale, (worst, scale)
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_auto_falls_back_to_torch_operators_when_triton_fails(monkeypatch, caplog):
    """model.kernels "auto" picks Triton because it imports; if its forward then fails to build or capture
    (an unsupported GPU or driver), the runner warns and captures the torch operators; asked for explicitly,
    "triton" fails loudly instead."""
    import poyo_rt.kernels
    from poyo_rt.runtime.runner import Runner

    def broken(self, packed):
        raise RuntimeError("simulated Triton compile failure")

    monkeypatch.setattr(poyo_rt.kernels.TritonPOYO, "__call__", broken)  # the runner calls the module
    gpu, _ = _decode_after_a_fallback(caplog, "simulated Triton compile failure", 20)
    assert gpu.kernels == "torch"
    with pytest.raises(RuntimeError, match="simulated Triton compile failure"):
        Runner(gpu.model, capacity=gpu.capacity, n_outputs=2, device="cuda", kernels="triton")

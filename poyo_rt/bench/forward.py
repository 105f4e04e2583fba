"""Forward-latency benchmarks: poyo_rt's POYO against torch_brain's, same weights and inputs.

:func:`run_forward_bench`, one fixed window per call: batch 1, a 1 s window, 100 units and 2,000 spikes
(2,200 input tokens with the start/end tokens), fp32. Both models run in this process on the same
device, one after the other, interleaved in rounds so drifting machine load hits both alike. On CUDA
the CUDA-graph replay of the fixed-shape forward is timed as well. Prints the model's FLOPs and the
time they take at this machine's measured fp32 matmul rate.

:func:`run_stream_bench`, per tick of a sliding stream (CPU): torch_brain, poyo_rt's exact forward and
poyo_rt's encoder key/value cache on the same windows, with the largest difference between them.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from poyo_rt.bench.common import (Timing, count_cuda_kernels, count_kernel_ops, percentiles_us, time_callable,
                                  with_ratios)
from poyo_rt.model.fused import FusedPOYO, pack_window
from poyo_rt.model.poyo import POYO
from poyo_rt.model.static import StaticInputs, allocate_static_inputs, static_forward
from poyo_rt.registry import MODALITY_REGISTRY

log = logging.getLogger(__name__)

#: Benchmark model configurations (POYO constructor arguments besides the window).
BENCH_CONFIGS: dict[str, dict] = {
    "dim512_depth2": dict(dim=512, depth=2, dim_head=64, cross_heads=1, self_heads=8, num_latents_per_step=64),
    "poyo_1.3M": dict(dim=64, depth=6, dim_head=64, cross_heads=2, self_heads=8, num_latents_per_step=16),
}


def build_model(config: dict, *, n_units: int, window_s: float = 1.0, latent_step_s: float = 0.125,
                seed: int = 0) -> POYO:
    """A random-weight eval-mode POYO with ``n_units`` units and one session."""
    torch.manual_seed(seed)
    model = POYO(sequence_length=float(window_s), latent_step=float(latent_step_s),
                 readout_spec=MODALITY_REGISTRY["cursor_velocity_2d"], **config)
    model.unit_emb.initialize_vocab([f"unit{i}" for i in range(n_units)])
    model.session_emb.initialize_vocab(["session0"])
    return model.eval()


def torch_brain_twin(model: POYO) -> torch.nn.Module | None:
    """torch_brain's POYO with ``model``'s weights, or None when torch_brain is not installed."""
    try:
        from torch_brain.models import POYO as TBPOYO
    except ImportError:
        return None
    hp = {k: v for k, v in model.hparams.items()}
    twin = TBPOYO(dim_out=model.readout_spec.dim, **hp)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def torch_brain_kwargs(kwargs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """poyo_rt forward keywords -> torch_brain 0.2.1's (one ``session_index`` per sample there)."""
    out = {k: v for k, v in kwargs.items() if k != "output_session_index"}
    out["session_index"] = kwargs["output_session_index"][:, 0]
    return out


def bench_inputs(model: POYO, *, n_spikes: int, device: torch.device, seed: int = 0) -> StaticInputs:
    """Static buffers holding one window: start/end tokens for every unit plus ``n_spikes`` spikes."""
    rng = np.random.default_rng(seed)
    n_units = len(model.unit_emb.vocab) - 1
    window = model.sequence_length
    n_tok = 2 * n_units + n_spikes
    buf = allocate_static_inputs(model, n_input=n_tok + (-n_tok % 8), n_output=1, device=device)
    unit = np.concatenate([np.repeat(np.arange(1, n_units + 1), 2), rng.integers(1, n_units + 1, n_spikes)])
    ttype = np.concatenate([np.tile([1, 2], n_units), np.zeros(n_spikes, np.int64)])
    times = np.concatenate([np.tile([0.0, window], n_units), np.sort(rng.uniform(0, window, n_spikes))])
    buf.input_unit_index[0, :n_tok] = torch.from_numpy(unit)
    buf.input_token_type[0, :n_tok] = torch.from_numpy(ttype)
    buf.input_timestamps[0, :n_tok] = torch.from_numpy(times)
    buf.input_mask[0, :n_tok] = True
    buf.output_session_index.fill_(1)
    buf.output_timestamps.fill_(window)
    return buf


def _call(module: torch.nn.Module, packed: torch.Tensor) -> torch.Tensor:
    return module(packed)


def fused_inputs(fused: FusedPOYO, buf: StaticInputs) -> torch.Tensor:
    """The packed input of :class:`FusedPOYO` for the first window of ``buf`` (its times start at 0), on
    ``buf``'s device, padded like ``buf``."""
    mask = buf.input_mask[0].cpu().numpy()
    layout = fused.layout(mask.shape[0])
    packed = np.zeros(layout.size)
    pack_window(packed, layout, {k: v.cpu() for k, v in buf.as_kwargs().items()}, fused.n_types, tokens=mask)
    return torch.from_numpy(packed).to(buf.input_mask.device)


def _cpu_attention_flops() -> dict:
    """FLOP formula for the CPU flash-attention kernel, which torch's FLOP counter does not know (it counts 0
    for it, so a CPU forward's attention would be left out of the bound): 4 * B * h * N_q * N_k * H, as for
    the CUDA kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {op: formula}


def forward_gflop(model: POYO, buf: StaticInputs) -> float:
    """Floating-point work of one static forward, GFLOP: torch's FLOP counter (matmuls, attention), with
    the CPU attention kernel counted too."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with torch.inference_mode(), mode as counter:
        static_forward(model, buf)
    return counter.get_total_flops() / 1e9


def matmul_gflops(*, device: torch.device, n: int = 1024, iters: int = 20) -> float:
    """This machine's fp32 matrix-multiply rate, GFLOP/s: median over ``iters`` n x n x n products."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        samples_us = time_callable(lambda: a @ b, iters=iters, warmup=3, sync=sync)
    return 2 * n**3 / (float(np.median(samples_us)) * 1e-6) / 1e9


def run_forward_bench(
    config_names: list[str], *, iters: int = 50, warmup: int = 5, device: str = "cpu", n_units: int = 100,
    n_spikes: int = 2000, rounds: int = 5, compile_modes: tuple[str, ...] = (), tf32: bool = False,
    progress: Callable[[str], None] = log.info,
) -> list[dict]:
    """Time each config's forward: torch_brain eager, poyo_rt eager (exact and fused), and on CUDA the
    CUDA graphs of the exact forward, of the fused forward, of its Triton kernels (:mod:`poyo_rt.kernels`;
    also in the residual layout ``TritonPOYO``'s "auto" does not pick) and (``compile_modes``) of the fused
    forward compiled by inductor in each mode; ``tf32`` adds the fused and Triton graphs with TF32 matmuls,
    with their error.
    Each row reports the operators (CPU) or GPU kernels one call runs."""
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    results = []
    for name in config_names:
        if name not in BENCH_CONFIGS:
            raise ValueError(f"unknown bench config {name!r}; choose from {sorted(BENCH_CONFIGS)}")
        model = build_model(BENCH_CONFIGS[name], n_units=n_units).to(dev)
        twin = torch_brain_twin(model)
        twin = twin.to(dev) if twin is not None else None
        buf = bench_inputs(model, n_spikes=n_spikes, device=dev)
        kwargs = buf.as_kwargs()
        tb_kwargs = torch_brain_kwargs(kwargs)

        candidates: dict[str, Callable[[], object]] = {}
        if twin is not None:
            candidates["torch_brain eager"] = lambda: twin(**tb_kwargs)
        candidates["poyo_rt eager"] = lambda: static_forward(model, buf)
        fused = FusedPOYO(model, n_output=buf.output_timestamps.shape[1])
        packed = fused_inputs(fused, buf)
        candidates["poyo_rt fused eager"] = lambda: fused(packed)
        max_err = None
        errors: dict[str, float] = {}
        unavailable: dict[str, str] = {}  # rows that could not be built here, and why
        with torch.inference_mode():
            ours_out = static_forward(model, buf)
            if twin is not None:
                max_err = float((ours_out - twin(**tb_kwargs)).abs().max())
            errors["poyo_rt fused eager"] = float((fused(packed) - ours_out[0]).abs().max())
        bf16_rel_err = None
        if dev.type == "cpu":  # the opt-in reduced-precision path, with its error against fp32
            from poyo_rt.runtime.runner import bf16_forward

            candidates["poyo_rt bf16 (opt-in)"] = lambda: bf16_forward(model, buf)
            with torch.inference_mode():
                bf16_rel_err = float((bf16_forward(model, buf) - ours_out).abs().max() / ours_out.abs().max())
            progress(f"{name}: bf16 autocast vs fp32 max relative error = {bf16_rel_err:.1e}")
        if dev.type == "cuda":
            from poyo_rt.runtime.cudagraph import GraphedForward

            graphed = GraphedForward(model, buf)
            candidates["poyo_rt cuda graph"] = graphed.replay
            graphs = {"poyo_rt cuda graph": graphed,
                      "poyo_rt fused cuda graph": GraphedForward(fused, packed, call=_call)}

            def try_graph(label: str, build: Callable[[], torch.nn.Module | object], allow_tf32: bool = False) -> None:
                """Capture ``build()``'s forward as row ``label``; a failure is reported, the other rows go on."""
                t0, before = time.perf_counter(), torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = allow_tf32  # cuBLAS picks its kernels at capture
                try:
                    graphs[label] = GraphedForward(build(), packed, call=_call)
                    progress(f"{name}: {label} captured in {time.perf_counter() - t0:.1f} s")
                except Exception as exc:
                    unavailable[label] = f"{type(exc).__name__}: {exc}"
                    progress(f"{name}: {label} unavailable ({unavailable[label]})")
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = before

            def triton(precision: str = "tf32x3", residuals: str = "auto") -> object:
                from poyo_rt.kernels import TritonPOYO

                return TritonPOYO(fused, precision=precision, residuals=residuals)

            def other_layout() -> str:
                """The residual layout TritonPOYO's "auto" does not pick for this model (timed too, as a check)."""
                from poyo_rt.kernels.triton_poyo import residual_layout

                return {"split": "summed", "summed": "split"}[residual_layout(fused)]

            for mode in compile_modes:  # inductor wants the real-valued rotations
                try_graph(f"fused compiled {mode}", lambda mode=mode: torch.compile(
                    FusedPOYO(model, n_output=fused.n_output, complex_rotation=False), fullgraph=True,
                    dynamic=False, mode=mode))
            try_graph("poyo_rt triton cuda graph", triton)  # tf32x3: fp32-level accuracy on tensor cores
            try_graph("poyo_rt triton cuda graph ieee", lambda: triton("ieee"))  # fp32 on the CUDA cores
            try:
                other = other_layout()
                try_graph(f"poyo_rt triton cuda graph {other}", lambda: triton(residuals=other))
            except ImportError as exc:  # no Triton: the rows above already say so
                progress(f"{name}: no second residual layout ({exc})")
            if tf32:
                try_graph("poyo_rt fused cuda graph tf32", lambda: fused, allow_tf32=True)
                try_graph("poyo_rt triton cuda graph tf32", lambda: triton("tf32"))
            for label, g in graphs.items():
                candidates[label] = g.replay
                with torch.inference_mode():
                    errors[label] = float((g.replay().reshape(ours_out.shape) - ours_out).abs().max())
        rel = {k: v / float(ours_out.abs().max()) for k, v in errors.items()}
        for label, err in errors.items():
            progress(f"{name}: {label} vs the exact eager forward: max |diff| {err:.2e} ({rel[label]:.1e} relative)")
        kernels = {}
        with torch.inference_mode():
            for label, fn in candidates.items():
                if "graph" in label:  # a replay is one launch: count the kernels of the call it captured
                    continue
                kernels[label] = (count_cuda_kernels(fn) if dev.type == "cuda"
                                  else sum(count_kernel_ops(fn).values()))
            if dev.type == "cuda":
                kernels["poyo_rt cuda graph"] = kernels["poyo_rt eager"]
                for label in candidates:
                    if label.startswith(("poyo_rt fused cuda graph", "fused compiled", "poyo_rt triton")):
                        g = graphs[label]
                        kernels[label] = count_cuda_kernels(lambda g=g: _call(g.model, g.inputs))

        gflop = forward_gflop(model, buf)
        per_round = max(1, iters // rounds)
        samples: dict[str, list[np.ndarray]] = {k: [] for k in candidates}
        with torch.inference_mode():
            for r in range(rounds):
                for label, fn in candidates.items():
                    samples[label].append(time_callable(fn, iters=per_round, warmup=warmup if r == 0 else 1, sync=sync))
                progress(f"{name}: round {r + 1}/{rounds} done")
        timings = [Timing(label, np.concatenate(s)) for label, s in samples.items()]
        rate = matmul_gflops(device=dev)
        results.append({
            "config": name, "device": str(dev), "n_units": n_units, "n_spikes": n_spikes,
            "n_input_tokens": int(buf.input_mask.sum()), "max_abs_diff_vs_torch_brain": max_err,
            "bf16_max_rel_err_vs_fp32": bf16_rel_err, "max_abs_diff_vs_exact": errors,
            "unavailable": unavailable,
            "kernels_per_call": kernels, "kernels_unit": "GPU kernels" if dev.type == "cuda" else "aten operators",
            "gflop_per_forward": gflop, "matmul_gflops": rate, "flop_bound_ms": gflop / rate * 1e3,
            "timings": [dict(row, kernels=kernels.get(row["name"])) for row in with_ratios(timings)],
            "baseline": timings[0].name,
        })
    return results


def format_forward_table(results: list[dict]) -> str:
    """Aligned text table: config, path, median and p99 (ms), speed-up against the baseline."""
    lines = [f"{'config':<15} {'path':<38} {'median ms':>10} {'p99 ms':>9} {'x baseline (p50)':>17} {'x (p99)':>8}"
             f" {'kernels':>8}"]
    for res in results:
        for t in res["timings"]:
            k = t.get("kernels")
            lines.append(f"{res['config']:<15} {t['name']:<38} {t['median_us'] / 1e3:>10.3f} {t['p99_us'] / 1e3:>9.3f}"
                         f" {t['ratio_median_vs_baseline']:>17.2f} {t['ratio_p99_vs_baseline']:>8.2f}"
                         f" {k if k is not None else '-':>8}")
        lines.append(f"{'':<15} kernels: {res.get('kernels_unit', '')} one call runs")
        for label, err in (res.get("max_abs_diff_vs_exact") or {}).items():
            lines.append(f"{'':<15} max |{label} - exact| = {err:.2e}")
        for label, why in (res.get("unavailable") or {}).items():
            lines.append(f"{'':<15} {label}: not run ({why})")
        if res["max_abs_diff_vs_torch_brain"] is not None:
            lines.append(f"{'':<15} max |poyo_rt - torch_brain| = {res['max_abs_diff_vs_torch_brain']:.2e}")
        if res.get("bf16_max_rel_err_vs_fp32") is not None:
            lines.append(f"{'':<15} bf16 (opt-in) max |bf16 - fp32| / max |fp32| = {res['bf16_max_rel_err_vs_fp32']:.1e}")
        best = min(t["median_us"] for t in res["timings"]) / 1e3
        lines.append(f"{'':<15} {res['gflop_per_forward']:.3f} GFLOP a forward; fp32 matmul here "
                     f"{res['matmul_gflops']:.0f} GFLOP/s -> {res['flop_bound_ms']:.2f} ms at that rate "
                     f"(fastest path: {best / res['flop_bound_ms']:.1f}x that)")
    return "\n".join(lines)


def run_stream_bench(
    config_names: list[str], *, ticks: int = 300, warmup_ticks: int = 60, n_units: int = 100,
    rate_hz: float = 2000.0, tick_hz: float = 50.0, seed: int = 0, progress: Callable[[str], None] = log.info,
) -> list[dict]:
    """Per-tick forward cost on a sliding stream (CPU): torch_brain, poyo_rt exact, poyo_rt with the
    encoder key/value cache, and the cache with the next tick's encoder attention prepared between ticks
    (``kv-cache ahead``: its row times the tick's own work; the preparation, off the critical path, is
    reported apart), all on the same tick's tokens, in rotating order.

    Poisson spikes at ``rate_hz`` over ``n_units`` units feed the incremental tokenizer at ``tick_hz``;
    each tick the paths decode the same window (torch_brain and exact on the tokenizer's arrays
    trimmed to the real tokens and masked; the cache updating only what changed).
    """
    from poyo_rt.bench.common import poisson_spikes
    from poyo_rt.model.kvcache import EncoderKVCache
    from poyo_rt.runtime.runner import trimmed_views
    from poyo_rt.stream.buffer import SpikeBuffer
    from poyo_rt.stream.tokenizer import IncrementalTokenizer

    results = []
    for name in config_names:
        if name not in BENCH_CONFIGS:
            raise ValueError(f"unknown bench config {name!r}; choose from {sorted(BENCH_CONFIGS)}")
        model = build_model(BENCH_CONFIGS[name], n_units=n_units)
        twin = torch_brain_twin(model)
        window = model.sequence_length
        tok = IncrementalTokenizer(window_s=window, latent_step_s=model.latent_step,
                                   num_latents_per_step=model.num_latents_per_step,
                                   unit_vocab_index=np.arange(1, n_units + 1), session_vocab_index=1,
                                   max_spikes=int(rate_hz * window * 1.5) + 256)
        buf = SpikeBuffer(capacity=1 << 16, n_units=n_units)
        cache = EncoderKVCache(model, tok.n_in, tok.latent_index)
        ahead = EncoderKVCache(model, tok.n_in, tok.latent_index)
        t0 = 10_000.0
        total = warmup_ticks + ticks
        times, units = poisson_spikes(np.random.default_rng(seed), rate_hz, window + total / tick_hz + 1.0,
                                      n_units, t0=t0)
        arrays = tok.arrays()
        samples: dict[str, list[float]] = {"poyo_rt exact": [], "poyo_rt kv-cache": [], "poyo_rt kv-cache ahead": []}
        if twin is not None:
            samples = {"torch_brain eager": [], **samples}
        max_err = {"poyo_rt exact": 0.0, "poyo_rt kv-cache": 0.0, "poyo_rt kv-cache ahead": 0.0}
        recomputed, n_tokens, prepare_us, sent = [], [], [], 0
        with torch.inference_mode():
            for k in range(total):
                t_end = t0 + window + k / tick_hz
                upto = int(np.searchsorted(times, t_end, side="left"))
                if upto > sent:
                    buf.append(times[sent:upto], units[sent:upto])
                    sent = upto
                info = tok.update(t_end, buf)
                n = -(-info.n_input_tokens // 8) * 8
                v = trimmed_views(arrays, n)
                tb_kw = torch_brain_kwargs(v)
                outs, took = {}, {}
                paths = {
                    "torch_brain eager": lambda: twin(**tb_kw),
                    "poyo_rt exact": lambda: static_forward(model, StaticInputs(**v)),
                    "poyo_rt kv-cache": lambda: (
                        recomputed.append(cache.update(arrays["input_unit_index"][0], arrays["input_token_type"][0],
                                                       arrays["input_timestamps"][0], info.n_input_tokens)),
                        cache.forward(v["latent_timestamps"], v["output_session_index"], v["output_timestamps"]),
                    )[1],
                    "poyo_rt kv-cache ahead": lambda: (
                        ahead.update(arrays["input_unit_index"][0], arrays["input_token_type"][0],
                                     arrays["input_timestamps"][0], info.n_input_tokens),
                        ahead.forward(v["latent_timestamps"], v["output_session_index"], v["output_timestamps"]),
                    )[1],
                }
                labels = list(samples)
                for label in labels[k % len(labels):] + labels[: k % len(labels)]:  # rotate the order
                    a = time.perf_counter_ns()
                    outs[label] = paths[label]()
                    took[label] = (time.perf_counter_ns() - a) / 1e3
                a = time.perf_counter_ns()  # between ticks: the next tick's encoder attention, prepared
                ahead.prepare(*tok.window_times_at(t0 + window + (k + 1) / tick_hz))
                if k >= warmup_ticks:
                    prepare_us.append((time.perf_counter_ns() - a) / 1e3)
                ref = outs.get("torch_brain eager", outs["poyo_rt exact"])
                for label in max_err:
                    max_err[label] = max(max_err[label], float((outs[label] - ref).abs().max()))
                if k >= warmup_ticks:
                    for label in samples:
                        samples[label].append(took[label])
                    n_tokens.append(info.n_input_tokens)
                if (k + 1) % 100 == 0:
                    progress(f"{name}: streaming tick {k + 1}/{total}")
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()) as fc:
            cache.forward(v["latent_timestamps"], v["output_session_index"], v["output_timestamps"])
        cached_gflop = fc.get_total_flops() / 1e9  # the attention and everything after it (updates: tiny)
        exact_gflop = forward_gflop(model, StaticInputs(**v))
        rate = matmul_gflops(device=torch.device("cpu"))
        timings = [Timing(label, np.asarray(s)) for label, s in samples.items()]
        results.append({
            "config": name, "device": "cpu", "n_units": n_units, "rate_hz": rate_hz, "tick_hz": tick_hz,
            "exact_gflop_per_tick": exact_gflop, "cached_gflop_per_tick": cached_gflop, "matmul_gflops": rate,
            "exact_flop_bound_ms": exact_gflop / rate * 1e3, "cached_flop_bound_ms": cached_gflop / rate * 1e3,
            "ticks": ticks, "mean_input_tokens": float(np.mean(n_tokens)),
            "mean_recomputed_per_tick": float(np.mean(recomputed[warmup_ticks:])),
            "ahead_prepare_us": percentiles_us(np.asarray(prepare_us)),
            "ahead_used_ticks": int(ahead.counters["prepared_used"]), "ahead_ticks": int(ahead.counters["ticks"]),
            "max_abs_diff_vs_reference": max_err,
            "reference": "torch_brain eager" if twin is not None else "poyo_rt exact",
            "timings": with_ratios(timings), "baseline": timings[0].name,
        })
    return results


def format_stream_table(results: list[dict]) -> str:
    """Aligned text table of :func:`run_stream_bench` results."""
    lines = [f"{'config':<15} {'path (per tick)':<22} {'median ms':>10} {'p99 ms':>9} {'x baseline (p50)':>17} "
             f"{'x (p99)':>8}"]
    for res in results:
        for t in res["timings"]:
            lines.append(f"{res['config']:<15} {t['name']:<22} {t['median_us'] / 1e3:>10.3f} {t['p99_us'] / 1e3:>9.3f}"
                         f" {t['ratio_median_vs_baseline']:>17.2f} {t['ratio_p99_vs_baseline']:>8.2f}")
        errs = ", ".join(f"{k} {v:.1e}" for k, v in res["max_abs_diff_vs_reference"].items())
        lines.append(f"{'':<15} {res['ticks']} ticks at {res['tick_hz']:g} Hz, {res['rate_hz']:g} spikes/s, "
                     f"{res['mean_input_tokens']:.0f} input tokens a window, kv-cache recomputed "
                     f"{res['mean_recomputed_per_tick']:.0f} a tick; max |diff| vs {res['reference']}: {errs}")
        if "ahead_prepare_us" in res:
            prepared_ms = res["ahead_prepare_us"]["median_us"] / 1e3
            lines.append(f"{'':<15} kv-cache ahead: prepared between ticks in {prepared_ms:.3f} ms median (off the "
                         f"tick's path), used by {res['ahead_used_ticks']} of "
                         f"{res['ahead_ticks']} ticks")
        best = min(t["median_us"] for t in res["timings"]) / 1e3
        lines.append(f"{'':<15} {res['exact_gflop_per_tick']:.3f} GFLOP exact, {res['cached_gflop_per_tick']:.3f} "
                     f"with the cache; fp32 matmul here {res['matmul_gflops']:.0f} GFLOP/s -> "
                     f"{res['exact_flop_bound_ms']:.2f} / {res['cached_flop_bound_ms']:.2f} ms (fastest path: "
                     f"{best / res['exact_flop_bound_ms']:.2f}x the exact model's bound)")
    return "\n".join(lines)

"""Forward-latency benchmark: poyo_rt's POYO against torch_brain's, same weights and inputs.

Batch 1, a 1 s window, 100 units and 2,000 spikes (2,200 input tokens with the
start/end tokens), fp32. Both models run in this process on the same device, one
after the other, interleaved in rounds so drifting machine load hits both alike.
On CUDA the CUDA-graph replay of the fixed-shape forward is timed as well.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from poyo_rt.model.poyo import POYO
from poyo_rt.model.static import StaticInputs, allocate_static_inputs, static_forward
from poyo_rt.registry import MODALITY_REGISTRY

log = logging.getLogger(__name__)

#: Benchmark model configurations (POYO constructor arguments besides the window).
BENCH_CONFIGS: dict[str, dict] = {
    "dim512_depth2": dict(dim=512, depth=2, dim_head=64, cross_heads=1, self_heads=8, num_latents_per_step=64),
    "poyo_1.3M": dict(dim=64, depth=6, dim_head=64, cross_heads=2, self_heads=8, num_latents_per_step=16),
}


@dataclass
class Timing:
    """Latencies of one benchmarked callable, microseconds."""

    name: str
    samples_us: np.ndarray = field(repr=False)

    @property
    def median_us(self) -> float:
        return float(np.median(self.samples_us))

    @property
    def p99_us(self) -> float:
        return float(np.percentile(self.samples_us, 99))

    def as_dict(self) -> dict:
        return {"name": self.name, "n": int(len(self.samples_us)), "median_us": self.median_us, "p99_us": self.p99_us,
                "min_us": float(self.samples_us.min()), "max_us": float(self.samples_us.max())}


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


def time_callable(fn: Callable[[], object], *, iters: int, warmup: int, sync: Callable[[], None]) -> np.ndarray:
    """Per-call latency in µs of ``fn`` (synchronised after each call), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        sync()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def forward_gflop(model: POYO, buf: StaticInputs) -> float:
    """Floating-point work of one static forward, GFLOP (torch's FLOP counter: matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
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
    n_spikes: int = 2000, rounds: int = 5, progress: Callable[[str], None] = log.info,
) -> list[dict]:
    """Time each config's forward: torch_brain eager, poyo_rt eager, and poyo_rt CUDA graph (on CUDA)."""
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
        tb_kwargs = {k: v for k, v in kwargs.items() if k != "output_session_index"}
        tb_kwargs["session_index"] = kwargs["output_session_index"][:, 0]

        candidates: dict[str, Callable[[], object]] = {}
        if twin is not None:
            candidates["torch_brain eager"] = lambda: twin(**tb_kwargs)
        candidates["poyo_rt eager"] = lambda: static_forward(model, buf)
        max_err = None
        with torch.inference_mode():
            ours_out = static_forward(model, buf)
            if twin is not None:
                max_err = float((ours_out - twin(**tb_kwargs)).abs().max())
        if dev.type == "cuda":
            from poyo_rt.runtime.cudagraph import GraphedForward

            graphed = GraphedForward(model, buf)
            with torch.inference_mode():
                graph_err = float((graphed.replay() - ours_out).abs().max())
            candidates["poyo_rt cuda graph"] = graphed.replay
            progress(f"{name}: CUDA graph vs eager max |diff| = {graph_err:.2e}")

        gflop = forward_gflop(model, buf)
        per_round = max(1, iters // rounds)
        samples: dict[str, list[np.ndarray]] = {k: [] for k in candidates}
        with torch.inference_mode():
            for r in range(rounds):
                for label, fn in candidates.items():
                    samples[label].append(time_callable(fn, iters=per_round, warmup=warmup if r == 0 else 1, sync=sync))
                progress(f"{name}: round {r + 1}/{rounds} done")
        timings = [Timing(label, np.concatenate(s)) for label, s in samples.items()]
        base = timings[0]
        rate = matmul_gflops(device=dev)
        results.append({
            "config": name, "device": str(dev), "n_units": n_units, "n_spikes": n_spikes,
            "n_input_tokens": int(buf.input_mask.sum()), "max_abs_diff_vs_torch_brain": max_err,
            "gflop_per_forward": gflop, "matmul_gflops": rate, "flop_bound_ms": gflop / rate * 1e3,
            "timings": [dict(t.as_dict(), ratio_median_vs_baseline=base.median_us / t.median_us,
                             ratio_p99_vs_baseline=base.p99_us / t.p99_us) for t in timings],
            "baseline": base.name,
        })
    return results


def machine_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def format_forward_table(results: list[dict]) -> str:
    """Aligned text table: config, path, median and p99 (ms), speed-up against the baseline."""
    lines = [f"{'config':<15} {'path':<20} {'median ms':>10} {'p99 ms':>9} {'x baseline (p50)':>17} {'x (p99)':>8}"]
    for res in results:
        for t in res["timings"]:
            lines.append(f"{res['config']:<15} {t['name']:<20} {t['median_us'] / 1e3:>10.3f} {t['p99_us'] / 1e3:>9.3f}"
                         f" {t['ratio_median_vs_baseline']:>17.2f} {t['ratio_p99_vs_baseline']:>8.2f}")
        if res["max_abs_diff_vs_torch_brain"] is not None:
            lines.append(f"{'':<15} max |poyo_rt - torch_brain| = {res['max_abs_diff_vs_torch_brain']:.2e}")
        best = min(t["median_us"] for t in res["timings"]) / 1e3
        lines.append(f"{'':<15} {res['gflop_per_forward']:.3f} GFLOP a forward; fp32 matmul here "
                     f"{res['matmul_gflops']:.0f} GFLOP/s -> {res['flop_bound_ms']:.2f} ms at that rate "
                     f"(fastest path: {best / res['flop_bound_ms']:.1f}x that)")
    return "\n".join(lines)


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)

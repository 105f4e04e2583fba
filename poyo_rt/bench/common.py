"""Shared pieces of the benchmarks: latency samples, timing loops, machine facts, JSON output."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


@dataclass
class Timing:
    """Latencies of one benchmarked path, microseconds."""

    name: str
    samples_us: np.ndarray = field(repr=False)

    @property
    def median_us(self) -> float:
        return float(np.median(self.samples_us))

    @property
    def p99_us(self) -> float:
        return float(np.percentile(self.samples_us, 99))

    def as_dict(self) -> dict:
        return {"name": self.name, **percentiles_us(self.samples_us), "min_us": float(self.samples_us.min())}


def with_ratios(timings: list[Timing]) -> list[dict]:
    """Each timing as a dict with its speed-up against the first (the baseline): ``baseline / this``."""
    base = timings[0]
    return [dict(t.as_dict(), ratio_median_vs_baseline=base.median_us / t.median_us,
                 ratio_p99_vs_baseline=base.p99_us / t.p99_us) for t in timings]


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


def poisson_spikes(rng: np.random.Generator, rate_hz: float, duration_s: float, n_units: int,
                   t0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A homogeneous Poisson population: sorted spike times (s, from ``t0``) and units ``[0, n_units)``."""
    n = rng.poisson(rate_hz * duration_s)
    return t0 + np.sort(rng.uniform(0.0, duration_s, n)), rng.integers(0, n_units, n)


def machine_info() -> dict:
    """Python/torch versions, CPU, threads and GPU of this process."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        if model:
            info["cpu"] = model
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=str)


def percentiles_us(samples_us: np.ndarray) -> dict:
    """median, p90, p99, p99.9, max of a latency sample (µs); NaNs where it is empty."""
    s = np.asarray(samples_us, dtype=np.float64)
    if s.size == 0:
        return {k: float("nan") for k in ("median_us", "p90_us", "p99_us", "p999_us", "max_us")} | {"n": 0}
    return {"n": int(s.size), "median_us": float(np.median(s)), "p90_us": float(np.percentile(s, 90)),
            "p99_us": float(np.percentile(s, 99)), "p999_us": float(np.percentile(s, 99.9)), "max_us": float(s.max())}


#: aten ops that only reshape or alias a tensor: no kernel runs for them.
_METADATA_OPS = {"detach", "view", "_unsafe_view", "alias", "lift_fresh", "t", "transpose", "permute",
                 "expand", "unsqueeze", "squeeze", "slice", "select", "unbind", "split", "chunk", "as_strided",
                 "view_as_real", "view_as_complex", "_reshape_alias", "unflatten", "_conj", "conj", "resolve_conj",
                 "empty", "empty_like", "empty_strided", "_to_copy_noop"}


def count_kernel_ops(fn: Callable[[], object]) -> dict[str, int]:
    """aten operators one call of ``fn`` dispatches that compute something (views and allocations
    excluded), by name: on a GPU each launches about one kernel, so their total is the CPU-side measure
    of what a CUDA graph of ``fn`` replays."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: dict[str, int] = {}

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            inert = name == "dropout" and not (args[2] if len(args) > 2 else kwargs.get("train", False))
            if name not in _METADATA_OPS and not func.is_view and not inert:
                counts[name] = counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    with _Count():
        fn()
    return counts


def cuda_kernel_events(fn: Callable[[], object], calls: int = 1) -> list:
    """The GPU kernels (torch profiler events; memory copies and sets excluded) of ``calls`` calls of ``fn``:
    each has ``name`` and ``device_time`` (µs)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
            and not e.name.lower().startswith(("memcpy", "memset"))]


def count_cuda_kernels(fn: Callable[[], object]) -> int:
    """GPU kernels one call of ``fn`` launches: the nodes a CUDA graph of ``fn`` replays."""
    return len(cuda_kernel_events(fn))


def replay_times(graph, replays: int) -> tuple[float, float]:
    """(median, p99) µs of one ``graph.replay()`` (a ``torch.cuda.CUDAGraph`` or anything with ``replay``),
    CUDA events around each of ``replays`` replays."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 99))

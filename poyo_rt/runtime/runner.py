"""Runs the fixed-shape POYO forward on a tokenizer's static arrays, once per tick.

* CPU: by default with the encoder key/value cache (:mod:`poyo_rt.model.kvcache`): each tick only
  the tokens that changed (new spikes, moved slots, start/end tokens) get their keys and values
  computed, then the attention and the rest of the model run on the cache. With ``kv_cache=False``,
  the exact forward runs eager, straight on zero-copy torch views of the tokenizer's numpy arrays,
  trimmed to the real tokens rounded up to 8: no padding bucket is needed and no copy is made
  (``h2d_us`` is 0). Both give the same values (<= 1e-5). With ``compile=True`` the forward is ``torch.compile``-d and the tokens
  are padded up to a bucket, so that only a handful of shapes are ever compiled. ``precision="bf16"`` runs
  the exact forward under CPU bf16 autocast (opt-in, never the default: about 5e-3 relative error against
  fp32, measured in docs/performance.md; faster only for wide models such as dim 512).
* CUDA: one CUDA graph per padding bucket, captured at construction (warm-up first), of the fused
  forward (:mod:`poyo_rt.model.fused`, default; ``fused=False`` captures the exact module forward).
  Each tick the real tokens are written into a pinned host staging vector (table rows, times relative
  to the window start, mask, output times and session rows: :func:`~poyo_rt.model.fused.pack_inputs`),
  copied to the device in one transfer, the graph is replayed, and the output comes back to pinned host
  memory. With ``compile=True`` the fused forward is ``torch.compile``-d (inductor, no CUDA graphs of its
  own) before the capture. Device events time host-to-device, forward and device-to-host separately.
  ``precision="tf32"`` (opt-in) captures the fused forward's torch operators with TF32 matmuls: faster for
  wide models (H200, dim 512: 0.73 ms against 1.07 for the Triton forward, 5.0e-5 relative error), not for
  small ones (poyo_1.3M: 0.72 ms against 0.30, and 1.2e-3 relative error, over the issue's 1e-3 bound).

The model sees the tokens exactly as :func:`~poyo_rt.model.static.static_forward` takes them;
padding slots are masked. Nothing here depends on the values of the tokens.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from poyo_rt.model.fused import FusedPOYO, PackedLayout, pack_window
from poyo_rt.model.kvcache import EncoderKVCache
from poyo_rt.model.poyo import POYO
from poyo_rt.model.static import StaticInputs, allocate_static_inputs, static_forward
from poyo_rt.stream.tokenizer import WindowTimes

log = logging.getLogger(__name__)

STATIC_KEYS = (
    "input_unit_index", "input_timestamps", "input_token_type", "input_mask",
    "latent_index", "latent_timestamps", "output_session_index", "output_timestamps",
)
INPUT_KEYS = STATIC_KEYS[:4]


def trimmed_views(arrays: dict[str, np.ndarray], n: int) -> dict[str, torch.Tensor]:
    """Zero-copy torch views of a tokenizer's arrays (:data:`STATIC_KEYS`), input arrays cut to their first ``n``
    slots."""
    return {k: torch.from_numpy(arrays[k][:, :n] if k in INPUT_KEYS else arrays[k]) for k in STATIC_KEYS}


def bf16_forward(model: POYO, inputs: StaticInputs) -> torch.Tensor:
    """:func:`static_forward` under CPU bfloat16 autocast; returns float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return static_forward(model, inputs).float()


def triton_available() -> bool:
    """True when Triton can be imported (torch's Linux CUDA wheels bring it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kernels(kernels: str, *, is_cuda: bool, fused: bool, compile: bool | str, precision: str = "fp32") -> str:
    """``"auto"`` -> ``"triton"`` where the Triton forward runs (CUDA, fused, not compiled, fp32, Triton
    importable), else ``"torch"``; ``"torch"`` and ``"triton"`` stay as asked. On an H200 the Triton graph ran
    poyo_1.3M in 0.30 ms against 0.77 for the fused forward's torch operators, and dim 512 in 1.07 against
    1.08 ms (docs/performance.md, seventh session); ``precision="tf32"`` is the torch operators' (Triton's
    single-pass TF32 was 2.4-3.0e-3 off, over the 1e-3 bound)."""
    if kernels != "auto":
        return kernels
    return "triton" if is_cuda and fused and not compile and precision == "fp32" and triton_available() else "torch"


@contextlib.contextmanager
def matmul_tf32(enabled: bool) -> Iterator[None]:
    """CUDA matmuls in TF32 inside the block (``torch.backends.cuda.matmul.allow_tf32``), restored after.
    cuBLAS picks its kernels when they are launched, so a graph captured inside keeps TF32 for every replay."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def check_options(*, is_cuda: bool, compile: bool | str, precision: str, fused: bool, kernels: str) -> None:
    """Reject combinations of :class:`Runner` options that no path runs (``ValueError`` naming the option)."""
    if precision not in ("fp32", "bf16", "tf32"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'tf32', got {precision!r}")
    if precision == "bf16" and is_cuda:
        raise ValueError("precision='bf16' is a CPU option (the CUDA path runs fp32 CUDA graphs, or tf32)")
    if precision == "tf32" and not is_cuda:
        raise ValueError("precision='tf32' is a CUDA option (TF32 matmuls on tensor cores; the CPU has none)")
    if precision == "tf32" and (kernels == "triton" or not fused or compile):
        raise ValueError("precision='tf32' runs the fused forward's torch operators: kernels 'auto' or 'torch', "
                         "fused, not compiled")
    if kernels not in ("auto", "torch", "triton"):
        raise ValueError(f"kernels must be 'auto', 'torch' or 'triton', got {kernels!r}")
    if kernels == "triton" and not (is_cuda and fused and not compile):
        raise ValueError("kernels='triton' runs the fused forward on CUDA (device cuda, fused, no compile)")
    if fused and not is_cuda and (compile or precision != "fp32"):
        raise ValueError("fused=True on the CPU runs the fused forward eager in fp32: not with compile or bf16")
    if compile and is_cuda and not fused:
        raise ValueError("compile on CUDA compiles the fused forward: leave fused on")


def _call_fused(fused, packed: torch.Tensor) -> torch.Tensor:
    """The fused forward (a :class:`FusedPOYO`, compiled or not, or its Triton twin) as the CUDA graph captures
    it: (1, N_out, D_out), like :func:`static_forward`."""
    return fused(packed)[None]


def _overlap(during: Callable[[], object] | None, t_queued_ns: int) -> dict[str, float]:
    """Run ``during`` (the host's work while the GPU runs the queued call); ``{"overlap": µs}``, or {} without."""
    if during is None:
        return {}
    during()
    return {"overlap": (time.perf_counter_ns() - t_queued_ns) / 1e3}


def _call_after_bell(module, dev: torch.Tensor, *, call, bell) -> torch.Tensor:
    """``call(module, dev)`` after the doorbell's waiting kernel (``Runner(warm="launch")``). An eager call (the
    capture's warm-up runs) rings for itself first; a captured one waits for the ring of each replay."""
    if not torch.cuda.is_current_stream_capturing():
        bell.ring()
    bell.wait()
    return call(module, dev)


def _call_with_copies(module, dev: torch.Tensor, *, call, host: torch.Tensor, host_out: torch.Tensor) -> torch.Tensor:
    """``call(module, dev)`` between the copy of the pinned staging buffer ``host`` to ``dev`` and the copy of
    its output to the pinned ``host_out`` (``Runner(graph_copies=True)``: all three captured in one graph)."""
    dev.copy_(host, non_blocking=True)
    out = call(module, dev)
    host_out.copy_(out, non_blocking=True)
    return out


def default_buckets(capacity: int, smallest: int = 256, growth: float = 2.0) -> list[int]:
    """Padding buckets for ``capacity`` input tokens: ``smallest``, then each ``growth`` times the last
    (rounded up to a multiple of 8), then capacity. A window runs in the smallest bucket that holds it, so
    ``growth`` bounds the padding's share of the work (2: powers of two; the CUDA runner uses
    :data:`CUDA_BUCKET_GROWTH`).

    Each bucket is a multiple of 8; the last one is ``capacity`` rounded up to 8.
    """
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    top = -(-capacity // 8) * 8
    buckets, b = [], smallest
    while b < top:
        buckets.append(b)
        b = max(b + 8, -(-int(math.ceil(b * growth)) // 8) * 8)
    buckets.append(top)
    return buckets


# CUDA: one graph per bucket costs ~10 ms to capture and a few MB, and the padding is real work on the GPU
# (2,200 tokens ran in the 4,096 bucket: the e2e forward 0.41 ms vs 0.35 at 2,200 on the H200)
CUDA_BUCKET_GROWTH = 1.25


@dataclass
class ForwardResult:
    """One tick's decoded values and where the time went (µs)."""

    values: np.ndarray  #: (N_out, D_out) float32, a fresh array the caller may keep
    n_input: int  #: input slots the forward ran over (bucket size)
    h2d_us: float
    forward_us: float
    d2h_us: float
    #: CUDA only, the host's side of the call: ``pack`` (the window into its bucket's pinned staging buffer),
    #: ``launch`` (queueing the copies, the graph and the timing events), ``overlap`` (what ``run(during=...)``
    #: ran meanwhile, when given) and ``sync`` (waiting for the GPU).
    #: ``launch + sync`` beyond ``h2d + forward + d2h`` is time the GPU's events cannot see: it passed before
    #: the GPU began the call (e.g. the GPU waking after the loop's idle gap) or after it finished.
    host_us: dict[str, float] = field(default_factory=dict)


class Runner:
    """Fixed-shape POYO forward, CUDA graphs on GPU, eager on CPU.

    Args:
        model: the POYO (moved to ``device`` and set to eval mode here).
        capacity: most input tokens a tick can hold (the tokenizer's ``N_in``).
        n_outputs: output queries per tick.
        device: "cpu" or "cuda[:i]".
        buckets: padding buckets (ascending multiples of 8, last >= capacity) for CUDA graphs and
            for the compiled CPU path; default :func:`default_buckets`. Unused by eager CPU.
        cuda_graphs: capture CUDA graphs (True) or run eager on the GPU (False, for debugging).
        compile: wrap the forward in ``torch.compile`` (off by default; measure first). On CUDA this
            compiles the fused forward before the capture, in inductor's ``max-autotune-no-cudagraphs``
            mode for ``True`` or in the mode a string names (e.g. ``"default"``: compiles faster).
        kv_cache: on CPU (eager), keep the encoder's per-token keys/values between ticks (default);
            ignored with ``compile``, ``precision="bf16"`` and on CUDA, which run the full fixed-shape forward.
        precision: "fp32" (default), "bf16" (CPU only: the forward under ``torch.autocast``, bfloat16) or
            "tf32" (CUDA only: the graphs captured with TF32 matmuls, torch-operator kernels; opt-in).
        fused: run :class:`~poyo_rt.model.fused.FusedPOYO` (same values to 1e-5, far fewer kernels a tick)
            rather than the module forward. None (default) = on CUDA only; on the CPU the key/value cache is
            faster, and ``fused=True`` there runs it eager (fp32, not with ``compile``).
        kernels: on CUDA, the fused forward as torch operators (``"torch"``) or as the Triton kernels of
            :mod:`poyo_rt.kernels` (``"triton"``: 7 + 3 x depth launches a tick; needs Triton); ``"auto"``
            (default): Triton where it runs (:func:`resolve_kernels`), and the torch operators, with a warning,
            if the Triton forward then fails to build or capture. ``self.kernels`` says which ran.
        graph_copies: CUDA graphs only: capture each bucket's copy of the staging buffer to the device and of
            the output back to pinned memory in its graph, so that a tick makes three calls into torch (two
            timing events and the replay) instead of seven. The ``h2d`` and ``d2h`` times are then inside
            ``forward_us`` (reported as NaN). Off by default until measured end to end; on the H200
            ``tools/gpu_wake.py`` measured 50-130 µs less host time a call at 50 Hz. Should the capture fail,
            the runner warns and captures the copies outside (``self.graph_copies`` says which ran).
        warm: what :meth:`warm` (the engine's pre-tick) runs on CUDA: ``"copy"`` (default: pack the early
            window and copy it to the device) or ``"replay"`` (the whole call on the early window, results
            discarded: every host step of the tick's call is then warm, for one more forward of GPU time a tick;
            measured on the H200: the call's queueing took 259 µs at the tick after a copy-only warm, 53 µs back
            to back), or ``"launch"``: pack the early window and launch the tick's graph then, gated by a
            doorbell (:mod:`poyo_rt.kernels.doorbell`: each graph begins with a kernel that waits for the host's
            ring); the tick packs its final window into the same staging buffer and rings, so the graph's
            queueing is off the tick. Captures the copies in the graphs (as ``graph_copies``) and needs Triton
            (the waiting kernel) and an x86-64 host (whose stores reach memory in program order: the window
            before the ring). A start-up check replays a graph without ringing and requires that it waited;
            if that or the capture fails, the runner warns and runs ``"copy"``. Should the tick's window need a
            bigger bucket than the pre-tick's, the early launch runs on the early window (its output
            overwritten) and the tick launches its own (counted as ``launch_missed``). :meth:`release` lets
            a launch that no tick took run (the engine calls it when its loop ends).
    """

    def __init__(self, model: POYO, *, capacity: int, n_outputs: int, device: str | torch.device = "cpu",
                 buckets: list[int] | None = None, cuda_graphs: bool = True, compile: bool | str = False,
                 kv_cache: bool = True, precision: str = "fp32", fused: bool | None = None,
                 kernels: str = "auto", graph_copies: bool = False, warm: str = "copy"):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device is cuda but no CUDA device is available; use device='cpu'")
        self.model = model.to(self.device).eval()
        self.capacity = capacity
        self.n_outputs = n_outputs
        self.is_cuda = self.device.type == "cuda"
        self._forward = static_forward
        self.buckets: list[int] = []
        fused = self.is_cuda if fused is None else fused
        check_options(is_cuda=self.is_cuda, compile=compile, precision=precision, fused=fused, kernels=kernels)
        if warm not in ("copy", "replay", "launch"):
            raise ValueError(f"warm must be 'copy', 'replay' or 'launch', got {warm!r}")
        if warm == "launch" and platform.machine().lower() not in ("x86_64", "amd64"):
            raise ValueError("warm='launch' relies on x86-64's store order (the staging buffer written before the "
                             f"doorbell rings, as the GPU sees them); this host is {platform.machine()}")
        if (graph_copies or warm != "copy") and not (self.is_cuda and cuda_graphs):
            raise ValueError("graph_copies and warm='replay'/'launch' are options of the CUDA graphs (device cuda, "
                             "cuda_graphs on)")
        if warm == "launch" and not (fused and triton_available()):
            raise ValueError("warm='launch' runs the fused forward's graphs behind a Triton doorbell kernel: needs "
                             "fused on and Triton (pip install triton)")
        self._graph_copies_asked = bool(graph_copies)
        self.graph_copies = bool(graph_copies) or warm == "launch"
        self.warm_mode = warm
        self._bell = None  # the doorbell of warm="launch" (poyo_rt.kernels.doorbell.Doorbell)
        self._pending: int | None = None  # bucket of the graph the pre-tick launched, not yet rung for
        self.launched_early = 0  #: ticks whose graph the pre-tick launched (warm="launch")
        self.launch_missed = 0  #: ... of which the tick needed another bucket, and launched its own
        self._kernels_asked = kernels
        self.kernels = resolve_kernels(kernels, is_cuda=self.is_cuda, fused=fused, compile=compile,
                                       precision=precision)
        self.precision = precision
        self.fused: FusedPOYO | None = None
        if fused:  # compiled: real-valued rotations (inductor generates no code for complex numbers)
            self.fused = FusedPOYO(self.model, n_output=n_outputs, complex_rotation=not compile)
            self._latent_grid = self.model.latent_tokens()[1]  # (N_lat,) s, window-relative
        if compile and not self.is_cuda:
            # one compiled graph per padding bucket: the token count changes every tick
            self._forward = torch.compile(static_forward, dynamic=False)
            self.buckets = list(buckets or default_buckets(capacity))
        if precision == "bf16":
            self._forward = bf16_forward if not compile else torch.compile(bf16_forward, dynamic=False)
        self.kv_cache: EncoderKVCache | None = None
        self._checked_latents: np.ndarray | None = None  # the latent_index array already checked against the cache
        if kv_cache and not compile and not self.is_cuda and precision == "fp32" and not fused:
            self.kv_cache = EncoderKVCache(self.model, capacity, self.model.latent_tokens()[0])
        self._graphs: dict[int, object] = {}
        self._device_inputs: dict[int, StaticInputs | torch.Tensor] = {}
        self._host_inputs: dict[int, StaticInputs | torch.Tensor] = {}
        if self.is_cuda:
            mode = compile if isinstance(compile, str) else "max-autotune-no-cudagraphs" if compile else None
            self._setup_cuda(buckets or default_buckets(capacity, growth=CUDA_BUCKET_GROWTH), cuda_graphs, mode)

    # --- CUDA ------------------------------------------------------------------------------
    def _setup_cuda(self, buckets: list[int], cuda_graphs: bool, compile_mode: str | None) -> None:
        if buckets[-1] < self.capacity:
            raise ValueError(f"largest bucket {buckets[-1]} is below the token capacity {self.capacity}")
        self.buckets = list(buckets)
        for b in self.buckets:
            if self.fused is not None:
                size = PackedLayout(b, self.n_outputs).size
                self._device_inputs[b] = torch.zeros(size, dtype=torch.float64, device=self.device)
                self._host_inputs[b] = torch.zeros(size, dtype=torch.float64, pin_memory=True)
            else:
                self._device_inputs[b] = allocate_static_inputs(self.model, n_input=b, n_output=self.n_outputs,
                                                                device=self.device)
                self._host_inputs[b] = allocate_static_inputs(self.model, n_input=b, n_output=self.n_outputs,
                                                              device="cpu", pin_memory=True)
        d_out = self.model.readout_spec.dim
        self._host_out = torch.empty((1, self.n_outputs, d_out), dtype=torch.float32, pin_memory=True)
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        try:
            self._capture(cuda_graphs, compile_mode)
            if self.warm_mode == "launch":
                self._check_doorbell()
        except Exception as err:
            if self.warm_mode == "launch":  # a GPU, driver or Triton where the doorbell does not work
                log.warning("launching the CUDA graphs ahead behind a doorbell failed (%s: %s); the pre-tick copies "
                            "instead (model.cuda_warm: copy)", type(err).__name__, err)
                self._release_quietly()
                self.warm_mode, self.graph_copies, self._bell = "copy", self._graph_copies_asked, None
                self._graphs.clear()
                self._setup_cuda(buckets, cuda_graphs, compile_mode)
                return
            if self.graph_copies:  # a torch that refuses pinned-memory copies in a capture: copy outside
                log.warning("capturing the CUDA graphs with the copies in them failed (%s: %s); capturing them "
                            "with the copies outside (model.graph_copies: false)", type(err).__name__, err)
                self.graph_copies = False
                self._graphs.clear()
                self._setup_cuda(buckets, cuda_graphs, compile_mode)
                return
            if not (self.kernels == "triton" and self._kernels_asked == "auto"):
                raise
            # "auto" chose Triton because it imports; it may still not build for this GPU or driver
            log.warning("the Triton forward failed to build or capture (%s: %s); running the fused forward's torch "
                        "operators instead (model.kernels: torch)", type(err).__name__, err)
            self.kernels = "torch"
            self._graphs.clear()
            self._capture(cuda_graphs, compile_mode)

    def _capture(self, cuda_graphs: bool, compile_mode: str | None) -> None:
        """The forward ``self.kernels`` names, warmed up and captured once per bucket (``cuda_graphs``)."""
        from poyo_rt.runtime.cudagraph import GraphedForward

        module, call = self.model, static_forward
        if self.fused is not None:
            module, call = self.fused, _call_fused
            if self.kernels == "triton":
                from poyo_rt.kernels import TritonPOYO

                module = TritonPOYO(self.fused)
            elif compile_mode:
                module = torch.compile(self.fused, fullgraph=True, dynamic=False, mode=compile_mode)
        self._cuda_module, self._cuda_call = module, call
        log.info("CUDA forward: %s, %s, %d padding buckets up to %d tokens",
                 "exact model" if self.fused is None else f"fused, {self.kernels} kernels"
                 + (f", compiled ({compile_mode})" if compile_mode and self.kernels == "torch" else ""),
                 "TF32 matmuls" if self.precision == "tf32" else "fp32", len(self.buckets), self.buckets[-1])
        if not cuda_graphs:  # eager (debugging): nothing to capture
            return
        if self.warm_mode == "launch" and self._bell is None:
            from poyo_rt.kernels.doorbell import Doorbell

            self._bell = Doorbell(self.device)
            self._side_stream = torch.cuda.Stream(device=self.device)  # times the ring (the main stream waits)
            self._ring_event = torch.cuda.Event(enable_timing=True)
        for b in self.buckets:
            t0 = time.perf_counter()
            graph_call = call
            if self.graph_copies:  # the copies in and out become nodes of the graph
                graph_call = functools.partial(_call_with_copies, call=call, host=self._host_inputs[b],
                                               host_out=self._host_out)
            if self._bell is not None:  # ... after the doorbell's kernel
                graph_call = functools.partial(_call_after_bell, call=graph_call, bell=self._bell)
            with matmul_tf32(self.precision == "tf32"):
                self._graphs[b] = GraphedForward(module, self._device_inputs[b], call=graph_call)
            log.info("bucket %d: CUDA graph captured in %.0f ms", b, (time.perf_counter() - t0) * 1e3)

    def _stage(self, arrays: dict[str, np.ndarray], n_tokens: int) -> int:
        """The tokenizer's arrays -> the pinned staging buffer of the smallest bucket that holds them."""
        bucket = next((b for b in self.buckets if b >= n_tokens), None)
        if bucket is None:
            raise ValueError(f"{n_tokens} input tokens exceed the largest bucket {self.buckets[-1]}")
        host = self._host_inputs[bucket]
        if self.fused is not None:
            self._pack(host.numpy(), arrays, n_tokens, bucket)
        else:
            for key in STATIC_KEYS:  # host numpy -> pinned staging (the tokenizer's arrays are plain memory)
                src = arrays[key][:, :bucket] if key in INPUT_KEYS else arrays[key]
                getattr(host, key).numpy()[...] = src
        return bucket

    def _run_cuda(self, arrays: dict[str, np.ndarray], n_tokens: int,
                  during: Callable[[], object] | None = None) -> ForwardResult:
        t0 = time.perf_counter_ns()
        bucket = self._stage(arrays, n_tokens)
        t1 = time.perf_counter_ns()
        host, dev = self._host_inputs[bucket], self._device_inputs[bucket]
        start, h2d_done, fwd_done, d2h_done = self._events
        if self._pending is not None:  # the pre-tick launched a graph: the window is in its staging buffer now
            start = self._ring_event
            start.record(self._side_stream)  # the GPU's time of the ring (the main stream is waiting)
            self._bell.ring()
            # the same bucket: d2h_done was recorded behind the early launch; another (the window grew): the early
            # call runs on its window, then the tick's own
            launch_now = self._pending != bucket
            self.launch_missed += launch_now
            self._pending = None
        else:
            start.record()
            launch_now = True
        if launch_now and self.graph_copies:  # one replay copies in, runs the forward and copies out
            self._graphs[bucket].replay()
            d2h_done.record()
            if self._bell is not None:  # (after the doorbell's kernel, released at once)
                self._bell.ring()
        elif launch_now:
            dev.copy_(host, non_blocking=True)
            h2d_done.record()
            if bucket in self._graphs:
                out = self._graphs[bucket].replay()
            else:
                with torch.inference_mode(), matmul_tf32(self.precision == "tf32"):
                    out = self._cuda_call(self._cuda_module, dev)
            fwd_done.record()
            self._host_out.copy_(out, non_blocking=True)
            d2h_done.record()
        t2 = time.perf_counter_ns()
        host_us = {"pack": (t1 - t0) / 1e3, "launch": (t2 - t1) / 1e3, **_overlap(during, t2)}
        t3 = time.perf_counter_ns()
        d2h_done.synchronize()
        host_us["sync"] = (time.perf_counter_ns() - t3) / 1e3
        if self.graph_copies:  # the copies are inside the graph's span: no times of their own
            h2d_us, forward_us, d2h_us = math.nan, start.elapsed_time(d2h_done) * 1e3, math.nan
        else:
            h2d_us, forward_us, d2h_us = (a.elapsed_time(b) * 1e3 for a, b in
                                          ((start, h2d_done), (h2d_done, fwd_done), (fwd_done, d2h_done)))
        return ForwardResult(values=self._host_out[0].numpy().copy(), n_input=bucket, h2d_us=h2d_us,
                             forward_us=forward_us, d2h_us=d2h_us, host_us=host_us)

    def _pack(self, packed: np.ndarray, arrays: dict[str, np.ndarray], n_tokens: int, bucket: int) -> None:
        """The tokenizer's arrays -> the fused forward's packed input, times relative to the window start."""
        latent_t = arrays["latent_timestamps"][0]
        start = latent_t[0] - self._latent_grid[0]
        if abs(latent_t[-1] - start - self._latent_grid[-1]) > 1e-6:
            raise ValueError("the tokenizer's latent times are not the model's latent grid: build the tokenizer "
                             "with the model's sequence_length, latent_step and num_latents_per_step")
        n = n_tokens
        if not arrays["input_mask"][0, :n].all():
            raise ValueError("the fused forward needs the real tokens compact in slots [0, n_tokens) (as the "
                             "incremental tokenizer keeps them); this input has masked slots among them: "
                             "use Runner(..., fused=False)")
        pack_window(packed, PackedLayout(bucket, self.n_outputs), arrays, self.fused.n_types, tokens=slice(0, n),
                    start=start)

    # --- CPU -------------------------------------------------------------------------------
    def _check_cached_inputs(self, arrays: dict[str, np.ndarray], n_tokens: int) -> None:
        cache = self.kv_cache
        latent_index = arrays["latent_index"]
        if latent_index is not self._checked_latents:  # once per tokenizer: its latent grid never changes
            if latent_index[0].shape != cache.latent_index.shape or not np.array_equal(latent_index[0],
                                                                                     cache.latent_index):
                raise ValueError("the tokenizer's latent_index is not the model's latent grid: build the tokenizer "
                                 "with the model's sequence_length, latent_step and num_latents_per_step")
            self._checked_latents = latent_index
        if not arrays["input_mask"][0, :n_tokens].all():
            raise ValueError("the kv-cache runner needs the real tokens compact in slots [0, n_tokens) (as the "
                             "incremental tokenizer keeps them); this input has masked slots among them: "
                             "use Runner(..., kv_cache=False)")

    def _run_cpu_cached(self, arrays: dict[str, np.ndarray], n_tokens: int) -> ForwardResult:
        cache = self.kv_cache
        self._check_cached_inputs(arrays, n_tokens)
        t0 = time.perf_counter_ns()
        cache.update(arrays["input_unit_index"][0], arrays["input_token_type"][0], arrays["input_timestamps"][0],
                     n_tokens)
        out = cache.forward(torch.from_numpy(arrays["latent_timestamps"]),
                            torch.from_numpy(arrays["output_session_index"]),
                            torch.from_numpy(arrays["output_timestamps"]))
        t1 = time.perf_counter_ns()
        values = out[0].numpy().astype(np.float32, copy=True)
        t2 = time.perf_counter_ns()
        return ForwardResult(values=values, n_input=n_tokens, h2d_us=0.0, forward_us=(t1 - t0) / 1e3,
                             d2h_us=(t2 - t1) / 1e3)

    def _run_cpu_fused(self, arrays: dict[str, np.ndarray], n_tokens: int) -> ForwardResult:
        n = min(-(-max(n_tokens, 1) // 8) * 8, arrays["input_mask"].shape[1])
        packed = np.empty(PackedLayout(n, self.n_outputs).size)
        self._pack(packed, arrays, n_tokens, n)
        t0 = time.perf_counter_ns()
        with torch.inference_mode():
            out = self.fused(torch.from_numpy(packed))
        t1 = time.perf_counter_ns()
        values = out.numpy().astype(np.float32, copy=True)
        t2 = time.perf_counter_ns()
        return ForwardResult(values=values, n_input=n, h2d_us=0.0, forward_us=(t1 - t0) / 1e3, d2h_us=(t2 - t1) / 1e3)

    def _run_cpu(self, arrays: dict[str, np.ndarray], n_tokens: int) -> ForwardResult:
        if self.kv_cache is not None:
            return self._run_cpu_cached(arrays, n_tokens)
        if self.fused is not None:
            return self._run_cpu_fused(arrays, n_tokens)
        n = min(-(-max(n_tokens, 1) // 8) * 8, arrays["input_mask"].shape[1])
        if self.buckets:  # compiled: pad up to the bucket so shapes repeat
            n = min(next((b for b in self.buckets if b >= n), self.buckets[-1]), arrays["input_mask"].shape[1])
        views = trimmed_views(arrays, n)
        t0 = time.perf_counter_ns()
        with torch.inference_mode():
            out = self._forward(self.model, StaticInputs(**views))
        t1 = time.perf_counter_ns()
        values = out[0].numpy().astype(np.float32, copy=True)
        t2 = time.perf_counter_ns()
        return ForwardResult(values=values, n_input=n, h2d_us=0.0, forward_us=(t1 - t0) / 1e3, d2h_us=(t2 - t1) / 1e3)

    def prepare(self, window: WindowTimes) -> None:
        """Between ticks: the part of the next tick's forward that its new spikes cannot change, for the
        next window's times (``IncrementalTokenizer.window_times_at``). CPU key/value cache only
        (:meth:`EncoderKVCache.prepare`: the encoder attention over the spikes that stay and the START/END
        tokens); elsewhere nothing."""
        if self.kv_cache is not None:
            self.kv_cache.prepare(window.latent_timestamps, window.start_s, window.end_s)

    def warm(self, arrays: dict[str, np.ndarray], n_tokens: int) -> None:
        """Shortly before a tick (the engine's pre-tick, :meth:`Engine._pre_tick`): run the tick's host-side
        work before the forward on the current window, so that the tick finds its code and data in the
        CPU's caches. Changes no result: on CUDA the window is packed into its bucket's pinned staging
        buffer and copied to the device, which the tick repeats with its own spikes (stream order keeps
        the two copies in turn), or with ``warm="replay"`` the whole call runs on it and its output is
        discarded; on the CPU the key/value cache computes the keys and values of the spikes in
        so far (real work: the tick's update then computes only those of later spikes), the fused path packs
        into a scratch vector, the exact forward has nothing to warm."""
        if self.is_cuda and self.warm_mode == "replay":  # every host step of the call, on the early window
            self._run_cuda(arrays, n_tokens)
        elif self.is_cuda and self._bell is not None:  # launch the tick's graph now; it waits for the tick's ring
            self.release()  # (a second pre-tick before a tick: the first launch runs on its window)
            bucket = self._stage(arrays, n_tokens)
            self._graphs[bucket].replay()
            self._events[3].record()
            self._pending = bucket
            self.launched_early += 1
        elif self.is_cuda:
            bucket = self._stage(arrays, n_tokens)
            self._device_inputs[bucket].copy_(self._host_inputs[bucket], non_blocking=True)
        elif self.kv_cache is not None:  # the keys and values of the spikes in so far: the tick's update adds the rest
            self._check_cached_inputs(arrays, n_tokens)
            self.kv_cache.update(arrays["input_unit_index"][0], arrays["input_token_type"][0],
                                 arrays["input_timestamps"][0], n_tokens)
        elif self.fused is not None:
            n = min(-(-max(n_tokens, 1) // 8) * 8, arrays["input_mask"].shape[1])
            self._pack(np.empty(PackedLayout(n, self.n_outputs).size), arrays, n_tokens, n)

    def release(self) -> None:
        """Let a graph that :meth:`warm` launched ahead (``warm="launch"``) and no tick took run, and wait for it
        (its output is discarded). The engine calls this when its loop ends; a no-op otherwise."""
        if self._pending is not None:
            self._pending = None
            self._bell.ring()
            self._events[3].synchronize()

    def _release_quietly(self) -> None:
        """:meth:`release`, and ring for every launch the doorbell has not answered, so nothing stays waiting
        (the doorbell's fallback path)."""
        bell = self._bell
        if bell is None:
            return
        self._pending = None
        for _ in range(len(self.buckets) + 1):
            bell.ring()
        torch.cuda.synchronize(self.device)

    def _check_doorbell(self) -> None:
        """Start-up check of ``warm="launch"``: a graph replayed without a ring must wait (its end event still
        pending 5 ms later), then finish within 0.5 s of the ring (a forward takes milliseconds; a kernel that
        cannot see the bell would spin until its timeout), with no timed-out wait; RuntimeError otherwise."""
        torch.cuda.synchronize(self.device)
        done = self._events[3]
        self._graphs[self.buckets[0]].replay()
        done.record()
        time.sleep(0.005)
        waited = not done.query()
        t0 = time.perf_counter()
        self._bell.ring()
        done.synchronize()
        took = time.perf_counter() - t0
        timeouts = self._bell.timeouts_seen()
        if not waited or took > 0.5 or timeouts:
            raise RuntimeError(f"the doorbell did not hold the graph until its ring (waited: {waited}, ran "
                               f"{took * 1e3:.0f} ms after the ring, timed-out waits: {timeouts})")

    def counters(self) -> dict[str, int]:
        """What the forward path did so far: the CPU key/value cache's counters (ticks, slots recomputed,
        preparations made and used); on CUDA with ``warm="launch"`` the launches ahead, those a tick had to
        replace (``launch_missed``) and the doorbell's timed-out waits; empty elsewhere."""
        if self._bell is not None:
            return {"launched_early": self.launched_early, "launch_missed": self.launch_missed,
                    "bell_timeouts": self._bell.timeouts_seen()}
        return dict(self.kv_cache.counters) if self.kv_cache is not None else {}

    def run(self, arrays: dict[str, np.ndarray], n_tokens: int,
            during: Callable[[], object] | None = None) -> ForwardResult:
        """Decode one tick from the tokenizer's arrays (``IncrementalTokenizer.arrays()``), whose
        real tokens are compact in slots ``[0, n_tokens)``. ``during``: CUDA only (refused on the CPU), called
        once after the call is queued and before waiting for it: host work that overlaps the GPU's (the
        engine's ``warm_during_forward``); its time is ``host_us["overlap"]``."""
        if during is not None and not self.is_cuda:
            raise ValueError("during= is a CUDA option: the CPU forward leaves no wait to use")
        if n_tokens > arrays["input_mask"].shape[1]:
            raise ValueError(f"n_tokens={n_tokens} exceeds the arrays' {arrays['input_mask'].shape[1]} slots")
        return self._run_cuda(arrays, n_tokens, during) if self.is_cuda else self._run_cpu(arrays, n_tokens)

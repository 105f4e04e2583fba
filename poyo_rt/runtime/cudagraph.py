"""Capture the fixed-shape POYO forward once as a CUDA graph, then replay it per tick.

Usage::

    inputs = allocate_static_inputs(model, n_input=2304, device="cuda")
    graphed = GraphedForward(model, inputs)      # warm-up + capture (once per padding bucket)
    inputs.input_timestamps.copy_(...)           # write the tick's tokens into the same buffers
    out = graphed.replay()                       # (B, N_out, D_out), a graph-owned tensor

or, for the real-time runner's fused forward (:mod:`poyo_rt.model.fused`, one packed input vector)::

    graphed = GraphedForward(fused, packed, call=lambda m, x: m(x))

The output tensor is overwritten by the next replay: copy it out (to pinned host
memory) before replaying again. On a machine without CUDA, construction raises a
clear ``RuntimeError``; callers fall back to eager :func:`static_forward`.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor, nn

from poyo_rt.model.static import StaticInputs, static_forward

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    """True when a CUDA device can be used by this torch build."""
    return torch.cuda.is_available()


class GraphedForward:
    """One CUDA graph of ``call(model, inputs)`` over fixed buffers.

    Args:
        model: an eval-mode module on the CUDA device (a POYO, or a :class:`~poyo_rt.model.fused.FusedPOYO`,
            possibly ``torch.compile``-d without CUDA graphs of its own). The graph reads its weights where
            they are at capture: moving the model afterwards (``.cpu()``, ``.to(...)``) leaves the graph
            reading freed memory, so capture again after a move.
        inputs: static buffers on the same device (:class:`StaticInputs` or one tensor); their storage is
            baked into the graph.
        call: the forward to capture; default :func:`static_forward`.
        warmup_iters: eager runs on a side stream before capture (lets cuBLAS/SDPA pick kernels and a
            compiled module compile).
    """

    def __init__(self, model: nn.Module, inputs: StaticInputs | Tensor,
                 call: Callable[[nn.Module, object], Tensor] = static_forward, warmup_iters: int = 3):
        if not cuda_available():
            raise RuntimeError("CUDA graphs need a CUDA device; none is available (use the eager CPU path)")
        device = inputs.device if isinstance(inputs, Tensor) else inputs.input_timestamps.device
        if device.type != "cuda":
            raise ValueError(f"inputs must live on a CUDA device, got {device}")
        if getattr(model, "training", False):
            raise ValueError("capture an eval-mode model (dropout would be frozen into the graph)")
        self.model = model
        self.inputs = inputs
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(warmup_iters):
                call(model, inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.output: Tensor = call(model, inputs)
        torch.cuda.synchronize(device)
        shape = tuple(inputs.shape)
        log.info("captured CUDA graph for input shape %s", shape)

    def replay(self) -> Tensor:
        """Run the captured forward on the buffers' current contents; returns the graph's output tensor."""
        self.graph.replay()
        return self.output

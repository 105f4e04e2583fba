"""The fixed-shape entry point: equals the plain forward, updates in place, is capture-safe."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from _poyo_ref import CONFIGS, make_pair, random_batch
from poyo_rt.model import allocate_static_inputs, static_forward
from poyo_rt.model.static import StaticInputs
from poyo_rt.runtime.cudagraph import GraphedForward, cuda_available

TOL = 1e-5


def _fill(buf: StaticInputs, batch: dict) -> None:
    """Write a (1, n) batch into a larger bucket; the rest stays masked padding."""
    n = batch["input_unit_index"].shape[1]
    for key in ("input_unit_index", "input_timestamps", "input_token_type", "input_mask"):
        getattr(buf, key).zero_()
        getattr(buf, key)[:, :n] = batch[key]
    buf.latent_timestamps.copy_(batch["latent_timestamps"])
    buf.output_session_index.copy_(batch["output_session_index"])
    buf.output_timestamps.copy_(batch["output_timestamps"])


@pytest.mark.parametrize("name", ["small", "poyo_1.3M"])
def test_static_forward_equals_forward_across_ticks(name):
    model, _ = make_pair(CONFIGS[name])
    buf = allocate_static_inputs(model, n_input=512, n_output=3)
    assert buf.shape == (1, 512, model.num_latents, 3)
    with torch.inference_mode():
        for seed in range(3):  # same buffers, new contents each "tick"
            batch = random_batch(model, batch=1, n_out=3, seed=seed, shift=100.0 * seed)
            _fill(buf, batch)
            out = static_forward(model, buf)
            ref = model(**batch)
            assert (out - ref).abs().max().item() <= TOL


SYNCING_OPS = {"nonzero", "_local_scalar_dense", "masked_select", "index_put_", "unique"}


def _syncing_ops(graph) -> list[str]:
    """Ops that need a tensor's values on the host (a sync, and a shape that varies with data):
    the listed ops, and indexing with a boolean mask."""
    found = []
    for node in graph.graph.nodes:
        name = str(node.target)
        if not name.startswith("aten."):
            continue
        if name.split(".")[1] in SYNCING_OPS:
            found.append(name)
        elif name.startswith("aten.index.") and any(
            getattr(getattr(i, "meta", {}).get("val"), "dtype", None) == torch.bool for i in node.args[1] if i is not None
        ):
            found.append(name + "[bool]")
    return found


def test_static_forward_traces_without_data_dependence():
    """Traced with fake tensors, a branch on tensor values raises and .item() / boolean indexing
    leave host-reading ops in the graph. The static forward has neither; negative controls do."""
    model, _ = make_pair(CONFIGS["small"])
    buf = allocate_static_inputs(model, n_input=64, n_output=2)
    names = list(buf.as_kwargs())
    trace = lambda fn: make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*buf.as_kwargs().values())

    def fn(*tensors):
        return static_forward(model, StaticInputs(**dict(zip(names, tensors))))

    graph = trace(fn)
    assert len(list(graph.graph.nodes)) > 50
    assert _syncing_ops(graph) == []

    def unpacking(*tensors):  # boolean indexing: data-dependent shape
        kw = dict(zip(names, tensors))
        return model(**kw, output_mask=kw["output_timestamps"] > 0, unpack_output=True)

    def scalar(*tensors):  # .item(): host read
        return fn(*tensors) * tensors[1].max().item()

    def branch(*tensors):  # Python branch on a value
        return fn(*tensors) if tensors[1].sum() > 0 else fn(*tensors) * 2

    assert _syncing_ops(trace(unpacking)) and _syncing_ops(trace(scalar))
    with pytest.raises(Exception, match="DataDependent|data-dependent"):
        trace(branch)


def test_allocate_validates():
    model, _ = make_pair(CONFIGS["small"])
    with pytest.raises(ValueError, match="n_input"):
        allocate_static_inputs(model, n_input=0)


@pytest.mark.skipif(cuda_available(), reason="checks the CPU fallback message")
def test_cuda_graph_needs_cuda_clear_error():
    model, _ = make_pair(CONFIGS["small"])
    with pytest.raises(RuntimeError, match="CUDA"):
        GraphedForward(model, allocate_static_inputs(model, n_input=64))

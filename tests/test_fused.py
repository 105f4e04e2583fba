"""FusedPOYO (the forward the CUDA graph captures) equals torch_brain's POYO and ours, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, make_pair, random_batch
from poyo_rt.bench.common import count_kernel_ops
from poyo_rt.model.fused import FusedPOYO, PackedLayout, pack_inputs, pack_window
from poyo_rt.model.static import StaticInputs, static_forward

TOL = 1e-5


def packed_window(fused: FusedPOYO, batch: dict, start: float, n_slots: int) -> torch.Tensor:
    """One window of ``batch`` (row 0) packed for ``fused``, times relative to ``start``; extra slots padded."""
    mask = batch["input_mask"][0].numpy()
    layout = fused.layout(n_slots)
    packed = np.full(layout.size, np.nan)  # every slot must be written by pack_window
    pack_window(packed, layout, batch, fused.n_types, tokens=mask, start=start)
    assert not np.isnan(packed).any()
    return torch.from_numpy(packed)


def torch_brain_out(theirs, batch: dict) -> torch.Tensor:
    kw = {k: v for k, v in batch.items() if k != "output_session_index"}
    with torch.inference_mode():
        return theirs(**kw, session_index=batch["output_session_index"][:, 0])[0]


@pytest.mark.parametrize("complex_rotation", [True, False], ids=["complex", "real"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_equals_torch_brain(name, complex_rotation):
    """Windows at absolute times up to an hour (the fused forward takes them window-relative), padding slots
    beyond the real tokens, several sessions and output times."""
    ours, theirs = make_pair(CONFIGS[name], n_sessions=3)
    fused = FusedPOYO(ours, n_output=4, complex_rotation=complex_rotation)
    for seed, shift in enumerate((0.0, 37.25, 3600.0)):
        batch = random_batch(ours, batch=1, n_out=4, seed=seed, shift=shift)
        n_real = int(batch["input_mask"][0].sum())
        with torch.inference_mode():
            out = fused(packed_window(fused, batch, start=shift, n_slots=n_real + 8 * seed))
            exact = ours(**batch)[0]
        assert out.shape == (4, 2) and out.dtype == torch.float32
        assert (out - torch_brain_out(theirs, batch)).abs().max().item() <= TOL, (name, shift)
        assert (out - exact).abs().max().item() <= TOL


def test_fused_padding_is_ignored():
    """Whatever padding holds (another window's tokens), the output depends on the real tokens only."""
    ours, _ = make_pair(CONFIGS["poyo_1.3M"])
    fused = FusedPOYO(ours, n_output=2)
    assert not fused.training  # an inference path (a CUDA graph refuses a training-mode module)
    batch = random_batch(ours, batch=1, n_out=2, seed=7)
    n_real = int(batch["input_mask"][0].sum())
    packed = packed_window(fused, batch, start=0.0, n_slots=n_real + 64)
    rows, times, mask, _, _ = fused.layout(n_real + 64).views(packed)
    with torch.inference_mode():
        clean = fused(packed)
        rows[n_real:] = 5.0
        times[n_real:] = torch.linspace(-3, 3, 64, dtype=torch.float64)
        dirty = fused(packed)
    assert torch.equal(clean, dirty)
    assert (mask[n_real:] == 0).all() and (mask[:n_real] == 1).all()


def test_fused_compiles_to_the_same_values():
    """torch.compile (inductor, CPU here; the GPU run uses the same graph) of the real-rotation form."""
    ours, _ = make_pair(CONFIGS["small"])
    fused = FusedPOYO(ours, n_output=2, complex_rotation=False)
    batch = random_batch(ours, batch=1, n_out=2, seed=3, shift=12.0)
    packed = packed_window(fused, batch, start=12.0, n_slots=int(batch["input_mask"][0].sum()))
    compiled = torch.compile(fused, fullgraph=True, dynamic=False)
    with torch.inference_mode():
        assert (compiled(packed) - fused(packed)).abs().max().item() <= TOL


def test_fused_launches_fewer_kernels():
    """The point of the fusion: fewer computing operators a tick than the exact forward (each is about one
    GPU kernel; views excluded), with the float64 trigonometry only for the input and output times."""
    ours, _ = make_pair(CONFIGS["poyo_1.3M"], n_units=100)
    fused = FusedPOYO(ours, n_output=1)
    batch = random_batch(ours, batch=1, n_out=1, seed=1, max_spikes=2000)
    packed = packed_window(fused, batch, start=0.0, n_slots=int(batch["input_mask"][0].sum()))
    inputs = StaticInputs(**batch)
    with torch.inference_mode():
        n_exact = sum(count_kernel_ops(lambda: static_forward(ours, inputs)).values())
        ops = count_kernel_ops(lambda: fused(packed))
    assert sum(ops.values()) <= 0.8 * n_exact, (ops, n_exact)
    # float64 trigonometry for the input times and the output times only; latent rotations are constant tables
    assert ops.get("cos", 0) == ops.get("sin", 0) == 2 and "polar" not in ops, ops  # (polar on a GPU)


def test_fused_rejects_what_it_cannot_fold():
    ours, _ = make_pair(CONFIGS["small"])
    with pytest.raises(ValueError, match="eval"):
        FusedPOYO(ours.train(), n_output=1)
    ours.eval()
    with pytest.raises(ValueError, match="n_output"):
        FusedPOYO(ours, n_output=0)
    with pytest.raises(RuntimeError, match="encoder=False"):  # built for the CPU cache's tail only
        FusedPOYO(ours, n_output=2, encoder=False)(torch.zeros(3 * 16 + 2 * 2, dtype=torch.float64))
    fused = FusedPOYO(ours, n_output=2)
    with pytest.raises(ValueError, match="does not fit"):
        fused(torch.zeros(3 * 16 + 2 * 2 + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="input slots"):
        pack_inputs(np.zeros(PackedLayout(4, 2).size), PackedLayout(4, 2), rows=np.zeros(5), times=np.zeros(5),
                    out_times=np.zeros(2), out_rows=np.ones(2))

"""GPU checks: CUDA-graph capture of the fixed-shape forward, against eager. Skipped without CUDA;
run on the device machine with ``tools/gpu_check.sh``."""

from __future__ import annotations

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
            cpu_ref = model.cpu()(**batch)
            model.cuda()
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
    cpu = Runner(model, capacity=cap, n_outputs=2, device="cpu").run(arrays, n)
    gpu_model, _ = make_pair(CONFIGS["poyo_1.3M"])
    res = Runner(gpu_model, capacity=cap, n_outputs=2, device="cuda", buckets=[256, 512, 1024]).run(arrays, n)
    assert res.n_input >= n and res.forward_us > 0
    np.testing.assert_allclose(res.values, cpu.values, atol=1e-4)

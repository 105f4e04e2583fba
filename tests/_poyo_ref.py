"""Shared helpers for the model tests: random POYO pairs (ours + torch_brain's) and random batches."""

from __future__ import annotations

import numpy as np
import torch

from poyo_rt.model import POYO
from poyo_rt.registry import MODALITY_REGISTRY

SPEC = MODALITY_REGISTRY["cursor_velocity_2d"]

CONFIGS = {
    "small": dict(dim=32, depth=1, dim_head=16, cross_heads=1, self_heads=2, num_latents_per_step=4),
    "cross2_head24": dict(dim=48, depth=2, dim_head=24, cross_heads=2, self_heads=3, num_latents_per_step=3),
    "depth0": dict(dim=32, depth=0, dim_head=16, cross_heads=1, self_heads=2, num_latents_per_step=4),
    "depth3_head8": dict(dim=40, depth=3, dim_head=8, cross_heads=3, self_heads=5, num_latents_per_step=2),
    "poyo_1.3M": dict(dim=64, depth=6, dim_head=64, cross_heads=2, self_heads=8, num_latents_per_step=16),
}


def make_pair(cfg: dict, *, n_units: int = 20, n_sessions: int = 2, sequence_length: float = 1.0,
              latent_step: float = 0.125, seed: int = 0):
    """(ours, torch_brain's) POYO with identical random weights, both in eval mode; torch_brain's is
    None where torch_brain is not installed (the GPU machine), so tests that need it fail loudly there."""
    try:
        from torch_brain.models import POYO as TBPOYO
    except ImportError:
        TBPOYO = None

    torch.manual_seed(seed)
    ours = POYO(sequence_length=sequence_length, readout_spec=SPEC, latent_step=latent_step, **cfg)
    ours.unit_emb.initialize_vocab([f"unit{i}" for i in range(n_units)])
    ours.session_emb.initialize_vocab([f"sess{i}" for i in range(n_sessions)])
    # Randomise everything (LayerNorms and biases too), so parity is not helped by defaults.
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    if TBPOYO is None:
        return ours.eval(), None
    theirs = TBPOYO(sequence_length=sequence_length, latent_step=latent_step, dim_out=SPEC.dim, **cfg)
    theirs.load_state_dict(ours.state_dict())
    return ours.eval(), theirs.eval()


def random_batch(model: POYO, *, batch: int = 3, max_spikes: int = 200, n_out: int = 5, seed: int = 0,
                 shift: float = 0.0) -> dict:
    """A padded batch of random windows in the torch_brain tensor layout (times float64)."""
    rng = np.random.default_rng(seed)
    n_units = len(model.unit_emb.vocab) - 1
    n_sessions = len(model.session_emb.vocab) - 1
    T = model.sequence_length
    n_spk = rng.integers(max_spikes // 4, max_spikes, size=batch)
    n_in = 2 * n_units + int(n_spk.max())
    n_in += -n_in % 8
    unit = np.zeros((batch, n_in), np.int64)
    ts = np.zeros((batch, n_in), np.float64)
    typ = np.zeros((batch, n_in), np.int64)
    mask = np.zeros((batch, n_in), bool)
    for b in range(batch):
        k = 2 * n_units + n_spk[b]
        unit[b, : 2 * n_units] = np.repeat(np.arange(1, n_units + 1), 2)
        typ[b, : 2 * n_units] = np.tile([1, 2], n_units)
        ts[b, : 2 * n_units] = np.tile([0.0, T], n_units)
        unit[b, 2 * n_units : k] = rng.integers(1, n_units + 1, n_spk[b])
        ts[b, 2 * n_units : k] = np.sort(rng.uniform(0, T, n_spk[b]))
        mask[b, :k] = True
        # padding slots hold garbage that must be ignored
        unit[b, k:] = rng.integers(0, n_units + 1, n_in - k)
        ts[b, k:] = rng.uniform(-5, 5, n_in - k)
    lat_idx, lat_ts = model.latent_tokens()
    out_ts = rng.uniform(0, T, (batch, n_out))
    sess = np.repeat(rng.integers(1, n_sessions + 1, batch)[:, None], n_out, axis=1)
    t = torch.from_numpy
    return dict(
        input_unit_index=t(unit), input_timestamps=t(ts + shift), input_token_type=t(typ), input_mask=t(mask),
        latent_index=t(np.tile(lat_idx, (batch, 1))), latent_timestamps=t(np.tile(lat_ts, (batch, 1)) + shift),
        output_session_index=t(sess), output_timestamps=t(out_ts + shift),
    )


def tb_kwargs(batch: dict) -> dict:
    """Our forward kwargs -> torch_brain 0.2.1's (session_index is per sample there)."""
    kw = {k: v for k, v in batch.items() if k != "output_session_index"}
    kw["session_index"] = batch["output_session_index"][:, 0]
    return kw

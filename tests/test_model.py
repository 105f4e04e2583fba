"""POYO parity against torch_brain 0.2.1 (the independent reference) and model invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, SPEC, make_pair, random_batch, tb_kwargs
from poyo_rt.model import POYO, collate
from poyo_rt.model.rotary import rotary_embedding

TOL = 1e-5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_ours_to_torch_brain(name):
    ours, theirs = make_pair(CONFIGS[name], seed=1)
    batch = random_batch(ours, batch=3, seed=2)
    with torch.no_grad():
        a = ours(**batch)
        b = theirs(**tb_kwargs(batch))
    assert a.shape == (3, 5, SPEC.dim)
    assert (a - b).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["small", "cross2_head24", "depth0"])
def test_parity_torch_brain_to_ours(name):
    """Weights born in torch_brain, copied into a fresh poyo_rt model by state dict."""
    from torch_brain.models import POYO as TBPOYO

    torch.manual_seed(5)
    theirs = TBPOYO(sequence_length=1.0, latent_step=0.125, dim_out=2, **CONFIGS[name])
    theirs.unit_emb.initialize_vocab([f"u{i}" for i in range(12)])
    theirs.session_emb.initialize_vocab(["s0"])
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = POYO(sequence_length=1.0, readout_spec=SPEC, latent_step=0.125, **CONFIGS[name])
    ours.load_state_dict(theirs.state_dict())  # lazy vocab embeddings materialise from the file
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        mine = ours.state_dict()[key]
        if isinstance(value, torch.Tensor):
            assert mine.shape == value.shape and torch.equal(mine, value), key
        else:
            assert mine == value, key
    ours.eval(), theirs.eval()
    batch = random_batch(ours, batch=2, seed=3)
    with torch.no_grad():
        assert (ours(**batch) - theirs(**tb_kwargs(batch))).abs().max().item() <= TOL


def test_state_dict_keys_and_vocab_layout():
    ours, theirs = make_pair(CONFIGS["cross2_head24"])
    sd, ref = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(ref)
    assert all(sd[k].shape == ref[k].shape for k in sd if isinstance(sd[k], torch.Tensor))
    assert list(sd["unit_emb.vocab"].items())[0] == ("NA", 0)
    assert list(sd["session_emb.vocab"].items())[0] == ("NA", 0)


def test_rotary_embedding_is_float64_exact():
    """Rotary angles from float64 times: compare to an independent numpy float64 computation."""
    ours, _ = make_pair(CONFIGS["small"])
    omega = ours.rotary_emb.omega.numpy().astype(np.float64)
    t = np.array([0.0, 1e-4, 0.5, 123.456789, 1e4])
    emb = rotary_embedding(torch.from_numpy(t), ours.rotary_emb.omega).numpy()
    angles = np.repeat(t[:, None] * omega[None, :], 2, axis=1)
    np.testing.assert_allclose(emb, np.concatenate([np.cos(angles), np.sin(angles)], axis=1), rtol=0, atol=1e-12)
    assert emb.dtype == np.float64
    # half the head channels rotate, the rest have zero frequency
    assert (omega[: len(omega) // 2] > 0).all() and (omega[len(omega) // 2 :] == 0).all()


def test_time_shift_invariance():
    """Rotary attention depends on time differences only: shifting every time changes nothing."""
    ours, _ = make_pair(CONFIGS["cross2_head24"])
    with torch.no_grad():
        a = ours(**random_batch(ours, seed=4))
        b = ours(**random_batch(ours, seed=4, shift=1234.5678))
    assert (a - b).abs().max().item() <= TOL


def test_input_permutation_invariance():
    ours, _ = make_pair(CONFIGS["depth3_head8"])
    batch = random_batch(ours, batch=2, seed=6)
    perm = torch.randperm(batch["input_unit_index"].shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = dict(batch)
    for key in ("input_unit_index", "input_timestamps", "input_token_type", "input_mask"):
        shuffled[key] = batch[key][:, perm]
    with torch.no_grad():
        assert (ours(**batch) - ours(**shuffled)).abs().max().item() <= TOL


def test_padding_has_no_effect():
    """Extra masked slots full of garbage (any unit, type, time) leave the output unchanged."""
    ours, _ = make_pair(CONFIGS["small"])
    batch = random_batch(ours, batch=1, seed=7)
    n = int(batch["input_mask"].sum())
    tight = {k: (v[:, :n] if k.startswith("input_") else v) for k, v in batch.items()}
    pad = 40
    g = torch.Generator().manual_seed(1)
    padded = dict(tight)
    padded["input_unit_index"] = torch.cat([tight["input_unit_index"], torch.randint(0, 20, (1, pad), generator=g)], 1)
    padded["input_timestamps"] = torch.cat([tight["input_timestamps"], torch.rand(1, pad, generator=g, dtype=torch.float64) * 9], 1)
    padded["input_token_type"] = torch.cat([tight["input_token_type"], torch.randint(0, 3, (1, pad), generator=g)], 1)
    padded["input_mask"] = torch.cat([tight["input_mask"], torch.zeros(1, pad, dtype=torch.bool)], 1)
    with torch.no_grad():
        assert (ours(**tight) - ours(**padded)).abs().max().item() <= TOL


def test_unpack_output_requires_mask_and_unpacks():
    ours, _ = make_pair(CONFIGS["small"])
    batch = random_batch(ours, batch=2, n_out=4)
    with torch.no_grad(), pytest.raises(ValueError, match="output_mask"):
        ours(**batch, unpack_output=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        full = ours(**batch)
        parts = ours(**batch, output_mask=mask, unpack_output=True)
    assert [p.shape[0] for p in parts] == [2, 4]
    assert torch.equal(parts[0], full[0, :2])


def test_lazy_vocab_is_a_clear_error():
    model = POYO(sequence_length=1.0, readout_spec=SPEC, latent_step=0.125, **CONFIGS["small"])
    batch = dict(input_unit_index=torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="initialize_vocab"):
        model(**batch, input_timestamps=None, input_token_type=None, latent_index=None, latent_timestamps=None,
              output_session_index=None, output_timestamps=None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sequence_length=1, latent_step=0.125), "sequence_length must be a float"),
        (dict(sequence_length=1.0, latent_step=0.0), "latent_step must be greater than 0"),
        (dict(sequence_length=1.0, latent_step=0.125, depth=-1), "depth"),
        (dict(sequence_length=1.0, latent_step=0.125, dim=0), "dim"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        POYO(readout_spec=SPEC, **kwargs)


def _temporal_session(rng, unit_ids, T=1.0, n_spikes=150, n_out=7):
    from torch_brain.data import ArrayDict, Data, IrregularTimeSeries

    spikes = IrregularTimeSeries(
        timestamps=np.sort(rng.uniform(0, T, n_spikes)),
        unit_index=rng.integers(0, len(unit_ids), n_spikes),
        domain="auto",
    )
    cursor = IrregularTimeSeries(
        timestamps=np.sort(rng.uniform(0, T, n_out)), vel=rng.normal(size=(n_out, 2)), domain="auto"
    )
    return Data(spikes=spikes, units=ArrayDict(id=np.array(unit_ids)), session=Data(id="sess1"),
                cursor=cursor, domain=spikes.domain)


def test_tokenize_matches_torch_brain_and_forward():
    """Our tokenize + collate equals torch_brain's tokenize + collate on the same windows,
    and decoding the collated batch equals torch_brain's forward."""
    from torch_brain.batching import collate as tb_collate

    ours, theirs = make_pair(CONFIGS["small"], n_units=20, n_sessions=2)
    rng = np.random.default_rng(0)
    # a session whose units are a shuffled subset of the vocabulary: exercises local->global mapping
    unit_ids = [f"unit{i}" for i in rng.permutation(20)[:12]]
    ours.session_emb.extend_vocab(["sess1"], exist_ok=True)
    theirs.session_emb.extend_vocab(["sess1"], exist_ok=True)
    theirs.session_emb.weight.data.copy_(ours.session_emb.weight.data)
    windows = [_temporal_session(rng, unit_ids, n_spikes=n) for n in (60, 150)]

    mine = collate([ours.tokenize(w) for w in windows])
    ref = tb_collate([theirs.tokenize(w) for w in windows])
    inputs = mine["model_inputs"]
    for key in ("input_unit_index", "input_timestamps", "input_token_type", "input_mask", "latent_index",
                "latent_timestamps"):
        assert torch.equal(inputs[key], ref[key]), key
    assert inputs["input_timestamps"].dtype == torch.float64
    assert (inputs["output_session_index"][inputs["output_mask"]] == ours.session_emb.tokenizer("sess1")).all()
    np.testing.assert_allclose(
        mine["target_values"][0, :7].numpy(), windows[0].cursor.vel.astype(np.float32)
    )
    with torch.no_grad():
        a = ours(**inputs)
        b = theirs(**{k: v for k, v in ref.items()}, output_timestamps=inputs["output_timestamps"])
    valid = inputs["output_mask"]  # padded query slots carry session "NA" in ours, the real one in theirs
    assert (a[valid] - b[valid]).abs().max().item() <= TOL


def test_tokenize_readout_config_normalises_and_weights():
    ours, _ = make_pair(CONFIGS["small"])
    rng = np.random.default_rng(1)
    data = _temporal_session(rng, ["unit1", "unit2"], n_out=5)
    ours.session_emb.extend_vocab(["sess1"], exist_ok=True)
    data.config = {"readout": {"readout_id": "cursor_velocity_2d", "normalize_mean": [1.0, 2.0],
                               "normalize_std": [2.0, 4.0]}}
    out = ours.tokenize(data)
    expected = (data.cursor.vel - np.array([1.0, 2.0])) / np.array([2.0, 4.0])
    np.testing.assert_allclose(out["target_values"].obj, expected.astype(np.float32), rtol=1e-6)
    data.config = {"readout": {"readout_id": "cursor_velocity_2d", "bogus": 1}}
    with pytest.raises(ValueError, match="bogus"):
        ours.tokenize(data)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-6), (torch.bfloat16, 2e-2)])
def test_prepared_rotation_equals_torch_brain_rotate(dtype, tol):
    """The complex-multiply rotation the model applies equals torch_brain's rotate / invert
    (on the strided (B, h, N, H) views attention uses, and in the real form for other dtypes)."""
    from torch_brain.nn import RotaryTimeEmbedding as TBRotary

    from poyo_rt.model.rotary import RotaryTimeEmbedding, apply_rotation

    ours, ref = RotaryTimeEmbedding(32, 16, 1e-4, 2.0627), TBRotary(32, 16, 1e-4, 2.0627)
    t = torch.rand(2, 300, dtype=torch.float64) * 500
    x = torch.randn(2, 300, 4, 32).transpose(1, 2).to(dtype)  # (B, h, N, H), not contiguous
    emb = ref(t)
    rot = ours.rotation(t)
    for mine, theirs in ((apply_rotation(x, rot, 1), ref.rotate(x, emb, 1)),
                         (apply_rotation(x, rot.inverse(), 1), ref.rotate(x, ref.invert(emb), 1))):
        assert mine.dtype == theirs.dtype == dtype
        assert (mine.double() - theirs.double()).abs().max().item() <= tol * max(1.0, theirs.abs().max().item())


def test_cis_on_the_cpu_equals_polar_bit_for_bit():
    """rotary.cis computes cos and sin vectorised on the CPU instead of torch.polar (scalar there); rounded to
    complex64 they must be the same values, over POYO's frequencies and 0-60 s of times (the origin moves
    once a minute): 200,000 times x 16 frequencies = 3.2 million angles."""
    from poyo_rt.model.rotary import RotaryTimeEmbedding, cis, rotary_angles

    omega = RotaryTimeEmbedding(64, 32, 1e-4, 2.0627).omega[:16]
    angles = rotary_angles(torch.rand(200_000, dtype=torch.float64) * 60, omega)
    polar = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    assert torch.equal(cis(angles), polar)

"""Checkpoint round trips with torch_brain, safe loading, and the vocabulary API."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from _poyo_ref import CONFIGS, SPEC, make_pair, random_batch, tb_kwargs
from poyo_rt.errors import CheckpointError
from poyo_rt.model import POYO, InfiniteVocabEmbedding, read_checkpoint
from poyo_rt.registry import MODALITY_REGISTRY

TOL = 1e-5


def _lightning_ckpt(model, hparams: dict) -> dict:
    """What Lightning + torch_brain's training recipe writes: prefixed state dict + hydra model config."""
    return {
        "epoch": 3,
        "global_step": 1200,
        "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": {"_target_": "torch_brain.models.POYO", **hparams}},
    }


def test_ours_to_file_to_torch_brain(tmp_path):
    from torch_brain.models import POYO as TBPOYO

    ours, _ = make_pair(CONFIGS["cross2_head24"], seed=11)
    path = ours.save_pretrained(tmp_path / "ours.ckpt", note="round trip")
    theirs = TBPOYO.load_pretrained(path).eval()
    batch = random_batch(ours, seed=12)
    with torch.no_grad():
        assert (ours(**batch) - theirs(**tb_kwargs(batch))).abs().max().item() <= TOL
    # and back into poyo_rt from the same file
    again = POYO.load_pretrained(path, readout_spec=SPEC).eval()
    with torch.no_grad():
        assert torch.equal(again(**batch), ours(**batch))
    ckpt = read_checkpoint(path)
    assert ckpt["hyper_parameters"]["poyo_rt"]["readout"] == "cursor_velocity_2d"
    assert ckpt["hyper_parameters"]["poyo_rt"]["note"] == "round trip"


def test_torch_brain_lightning_checkpoint_to_ours(tmp_path):
    from torch_brain.models import POYO as TBPOYO

    hparams = dict(sequence_length=1.0, latent_step=0.125, **CONFIGS["depth3_head8"])
    torch.manual_seed(3)
    theirs = TBPOYO(dim_out=2, **hparams)
    theirs.unit_emb.initialize_vocab([f"unit{i}" for i in range(20)])
    theirs.session_emb.initialize_vocab(["sess0", "sess1"])
    path = tmp_path / "tb.ckpt"
    torch.save(_lightning_ckpt(theirs, hparams), path)
    ours = POYO.load_pretrained(path, readout_spec=SPEC).eval()
    theirs.eval()
    batch = random_batch(ours, seed=13)
    with torch.no_grad():
        assert (ours(**batch) - theirs(**tb_kwargs(batch))).abs().max().item() <= TOL
    assert ours.unit_emb.vocab == theirs.unit_emb.vocab


def test_pickled_code_payload_is_refused(tmp_path):
    ours, _ = make_pair(CONFIGS["small"])
    path = tmp_path / "evil.ckpt"
    ckpt = _lightning_ckpt(ours, ours.hparams)
    ckpt["callbacks"] = {"hook": os.system}  # a function reference: unpickling it would import code
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="refused.*posix.system"):
        POYO.load_pretrained(path, readout_spec=SPEC)


@pytest.mark.parametrize(
    "content, match",
    [(b"not a checkpoint at all", "not a readable"), (None, "no such checkpoint")],
)
def test_unreadable_files_are_clear_errors(tmp_path, content, match):
    path = tmp_path / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        POYO.load_pretrained(path, readout_spec=SPEC)


def test_checkpoint_without_hparams_is_clear_error(tmp_path):
    path = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="hyper_parameters"):
        POYO.load_pretrained(path, readout_spec=SPEC)


def test_skip_readout_starts_a_new_readout(tmp_path):
    ours, _ = make_pair(CONFIGS["small"], seed=21)
    path = ours.save_pretrained(tmp_path / "m.ckpt")
    speed = MODALITY_REGISTRY["running_speed"]  # 1-D
    with pytest.raises(CheckpointError, match="skip_readout"):
        POYO.load_pretrained(path, readout_spec=speed)
    new = POYO.load_pretrained(path, readout_spec=speed, skip_readout=True)
    assert new.readout.weight.shape == (1, ours.dim)
    for key, value in ours.state_dict().items():
        if not key.startswith("readout.") and isinstance(value, torch.Tensor):
            assert torch.equal(new.state_dict()[key], value), key


def test_vocabulary_remapping_on_load():
    """A checkpoint listing the same units in another order loads by word, not by row."""
    ours, _ = make_pair(CONFIGS["small"], n_units=5)
    sd = ours.state_dict()
    other = POYO(sequence_length=1.0, readout_spec=SPEC, latent_step=0.125, **CONFIGS["small"])
    order = ["unit3", "unit0", "unit4", "unit1", "unit2"]
    other.unit_emb.initialize_vocab(order)
    other.session_emb.initialize_vocab(["sess1", "sess0"])
    other.load_state_dict(sd)
    for word in order:
        assert torch.equal(other.unit_emb.weight[other.unit_emb.tokenizer(word)],
                           ours.unit_emb.weight[ours.unit_emb.tokenizer(word)])
    # same decoded values once the indices are mapped through each model's tokenizer
    batch = random_batch(ours, batch=1, seed=5)
    remap = torch.tensor([0] + [other.unit_emb.tokenizer(ours.unit_emb.detokenizer(i)) for i in range(1, 6)])
    smap = torch.tensor([0] + [other.session_emb.tokenizer(ours.session_emb.detokenizer(i)) for i in range(1, 3)])
    mapped = dict(batch, input_unit_index=remap[batch["input_unit_index"]],
                  output_session_index=smap[batch["output_session_index"]])
    with torch.no_grad():
        assert (ours.eval()(**batch) - other.eval()(**mapped)).abs().max().item() <= TOL


def test_vocabulary_mismatch_is_clear_error():
    ours, _ = make_pair(CONFIGS["small"], n_units=3)
    other = POYO(sequence_length=1.0, readout_spec=SPEC, latent_step=0.125, **CONFIGS["small"])
    other.unit_emb.initialize_vocab(["unit0", "unit1", "unitX"])
    other.session_emb.initialize_vocab(["sess0", "sess1"])
    with pytest.raises(ValueError, match="unitX"):
        other.load_state_dict(ours.state_dict())


def test_vocab_api_matches_torch_brain():
    from torch_brain.nn import InfiniteVocabEmbedding as TBVocab

    torch.manual_seed(0)
    mine, ref = InfiniteVocabEmbedding(8), TBVocab(8)
    mine.initialize_vocab(["a", "b", "c"])
    ref.load_state_dict(mine.state_dict())
    mine.extend_vocab(["d", "e"])
    ref.extend_vocab(["d", "e"])
    assert mine.vocab == ref.vocab
    assert torch.equal(mine.weight[:4], ref.weight[:4]) and mine.weight.shape == ref.weight.shape
    assert mine.tokenizer(["e", "a"]) == ref.tokenizer(["e", "a"]) == [5, 1]
    assert mine.detokenizer(2) == ref.detokenizer(2) == "b"
    mine.weight.data[4:] = ref.weight.data[4:]
    sub, ref_sub = mine.subset_vocab(["e", "b"], inplace=False), ref.subset_vocab(["e", "b"], inplace=False)
    assert sub.vocab == ref_sub.vocab == collections.OrderedDict([("NA", 0), ("e", 1), ("b", 2)])
    assert torch.equal(sub.weight, ref_sub.weight)
    assert torch.all(mine.weight[0] == 0)
    with pytest.raises(ValueError, match="already contains"):
        mine.extend_vocab(["a"])
    mine.extend_vocab(["a", "z"], exist_ok=True)
    assert mine.tokenizer("z") == 6
    with pytest.raises(ValueError, match="does not contain"):
        mine.subset_vocab(["nope"])
    with pytest.raises(ValueError, match="duplicate"):
        InfiniteVocabEmbedding(4).initialize_vocab(["x", "x"])
    with pytest.raises(ValueError, match="reserved"):
        InfiniteVocabEmbedding(4).initialize_vocab(["NA"])
    with pytest.raises(KeyError, match="'q'"):
        mine.tokenizer("q")

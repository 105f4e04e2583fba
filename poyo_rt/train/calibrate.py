"""Calibrate a trained POYO to a new session: embeddings for its units and for the session, the rest kept.

POYO knows a unit only by its learned embedding, and a session by the embedding its output queries carry
(Azabou et al. 2023, "unit identification"). A model trained on earlier sessions can therefore decode a new
session, whose units it has never seen, once each new unit and the session have an embedding. Those few
thousand numbers are learned here from a few minutes of the new session's spikes and behaviour, by the same
loop as ``poyo-rt train`` (:func:`~poyo_rt.train.trainer.train`), starting from the trained model:

* ``trainable="new"`` (the default): only the rows of the new units and new sessions train. Every other
  weight, and every embedding row the checkpoint already had, stays bit for bit as loaded (their gradients are
  masked and they get no weight decay), so the calibrated checkpoint still decodes the earlier sessions exactly
  as before, and the calibration cannot overfit a few minutes of data with the whole model.
* ``trainable="all"``: every weight trains, starting from the checkpoint (fine-tuning; the earlier sessions'
  decoding may change).

The behaviour normalisation stays the checkpoint's: the readout was trained to produce those z-units.

    start = warm_start("base.ckpt", [new_session])
    result = train([new_session], calibration_config(start, steps=600, lr=1e-2), out_path="cal.ckpt", start=start)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from poyo_rt.model.poyo import POYO
from poyo_rt.replay.session import Session
from poyo_rt.train.data import Normalization
from poyo_rt.train.evaluate import load_decoder
from poyo_rt.train.trainer import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["TRAINABLE", "WarmStart", "warm_start", "calibration_config", "new_words"]

#: What :func:`warm_start` can leave trainable.
TRAINABLE = ("new", "all")
#: TrainConfig fields that describe the model; a calibration takes them from the checkpoint.
ARCHITECTURE = {"window_s": "sequence_length", "latent_step_s": "latent_step", "num_latents_per_step": None,
                "dim": None, "depth": None, "dim_head": None, "cross_heads": None, "self_heads": None,
                "ffn_dropout": None, "lin_dropout": None, "atn_dropout": None, "emb_init_scale": None}


def new_words(vocab: Sequence[str], words: Sequence[str]) -> list[str]:
    """``words`` not in ``vocab``, in their first-seen order, without repeats."""
    known = set(vocab)
    return [w for w in dict.fromkeys(words) if w not in known]


def row_mask(embedding: nn.Module, words: Sequence[str]) -> Tensor:
    """(V, 1) float mask of an :class:`InfiniteVocabEmbedding`'s rows: 1 for ``words``, 0 elsewhere."""
    mask = torch.zeros(len(embedding.vocab), 1, dtype=embedding.weight.dtype)
    mask[embedding.tokenizer(list(words))] = 1.0
    return mask


@dataclass
class WarmStart:
    """A trained model with vocabularies extended for new sessions: what :func:`train` continues from.

    Attributes:
        model: the POYO, its unit and session vocabularies covering every session to train on.
        norm: the behaviour normalisation its readout was trained with (kept as it is).
        readout: the registry name of the decoded modality.
        trainable: ``"new"`` or ``"all"`` (module docstring).
        new_units / new_sessions: the words added to the vocabularies (rows initialised randomly).
        checkpoint: where the model was read from. base: that checkpoint's ``poyo_rt`` metadata.
    """

    model: POYO
    norm: Normalization
    readout: str
    trainable: str
    new_units: list[str]
    new_sessions: list[str]
    checkpoint: str
    base: dict = field(default_factory=dict)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups, for the model as it is now (call after moving it to its device).

        ``"new"``: the unit and session embedding tables only, without weight decay, each gradient multiplied
        by a mask of the new rows, so Adam's moments and updates of every other row stay exactly zero; all
        other weights are frozen (``requires_grad=False``). ``"all"``: every weight, with ``weight_decay``.
        """
        model = self.model
        if self.trainable == "all":
            for p in model.parameters():
                p.requires_grad_(True)
            return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
        for p in model.parameters():
            p.requires_grad_(False)
        tables = []
        for embedding, words in ((model.unit_emb, self.new_units), (model.session_emb, self.new_sessions)):
            if not words:
                continue
            weight = embedding.weight
            mask = row_mask(embedding, words).to(weight.device)
            weight.requires_grad_(True)
            weight.register_hook(lambda grad, mask=mask: grad * mask)
            tables.append(weight)
        return [{"params": tables, "weight_decay": 0.0}]

    def n_trainable(self) -> int:
        """Numbers that train (embedding rows count their width)."""
        if self.trainable == "all":
            return sum(p.numel() for p in self.model.parameters())
        return (len(self.new_units) + len(self.new_sessions)) * self.model.dim

    def check(self, sessions: Sequence[Session], config: TrainConfig) -> None:
        """``config`` and ``sessions`` must fit the model (``ValueError`` naming the mismatch)."""
        hp = self.model.hparams
        for name, hparam in ARCHITECTURE.items():
            want = hp[hparam or name]
            if getattr(config, name) != want:
                raise ValueError(f"TrainConfig.{name} is {getattr(config, name)!r} but the checkpoint's model has "
                                 f"{want!r}: build the config with calibration_config()")
        if self.model.readout_spec.dim != config.spec.dim:
            raise ValueError(f"readout {config.readout!r} has {config.spec.dim} channels, the checkpoint's "
                             f"{self.model.readout_spec.dim}")
        missing = new_words(self.model.unit_emb.vocab, [u for s in sessions for u in s.unit_ids])
        missing += new_words(self.model.session_emb.vocab, [s.session_id for s in sessions])
        if missing:
            raise ValueError(f"{len(missing)} unit/session id(s) are not in the model's vocabularies "
                             f"(e.g. {missing[:3]}): make the WarmStart with warm_start() for these sessions")

    def describe(self) -> str:
        what = ("the new units' and sessions' embeddings only, every other weight frozen"
                if self.trainable == "new" else "every weight, starting from the checkpoint")
        return (f"calibrating {self.checkpoint}: {len(self.new_units)} new units, new sessions "
                f"{self.new_sessions}; training {what} ({self.n_trainable():,} numbers)")

    def extra(self) -> dict[str, Any]:
        """Stored in the checkpoint's ``poyo_rt`` metadata."""
        record = {
            "calibration": {
                "base_checkpoint": self.checkpoint, "trainable": self.trainable,
                "new_units": len(self.new_units), "new_sessions": list(self.new_sessions),
                "base_sessions": self.base.get("sessions"), "base_code_version": self.base.get("code_version"),
            }
        }
        if len(self.new_sessions) == 1:
            record["default_session"] = self.new_sessions[0]  # what `poyo-rt run` decodes when none is named
        return record


def warm_start(checkpoint: str | Path, sessions: Sequence[Session], *, trainable: str = "new",
               readout: str | None = None) -> WarmStart:
    """Load ``checkpoint`` and add the sessions' unknown unit ids and session ids to its vocabularies.

    Each session must be new to the model (a session id it already knows is an error: rename the session),
    and its behaviour must have the readout's channel count. Units the model already knows keep their
    embeddings (and, with ``trainable="new"``, do not train).
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if not sessions:
        raise ValueError("calibration needs at least one session")
    model, norm, meta = load_decoder(checkpoint, readout=readout)
    readout = readout or meta.get("readout") or "hand_velocity_2d"  # as load_decoder resolved it
    known = [s.session_id for s in sessions if s.session_id in model.session_emb.vocab]
    if known:
        raise ValueError(f"session id(s) {known} are already in the checkpoint's vocabulary: a calibration adds a new "
                         "session; give it another id")
    for s in sessions:
        if s.behavior.shape[1] != model.readout_spec.dim:
            raise ValueError(f"session {s.session_id!r} has {s.behavior.shape[1]} behaviour channels "
                             f"{s.behavior_labels}; the checkpoint's readout has {model.readout_spec.dim}")
    units = new_words(model.unit_emb.vocab, [u for s in sessions for u in s.unit_ids])
    new_sessions = new_words(model.session_emb.vocab, [s.session_id for s in sessions])
    if units:
        model.unit_emb.extend_vocab(units)
    model.session_emb.extend_vocab(new_sessions)
    return WarmStart(model=model, norm=norm, readout=readout, trainable=trainable, new_units=units,
                     new_sessions=new_sessions, checkpoint=str(checkpoint), base=meta)


def calibration_config(start: WarmStart, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for calibrating ``start``: the model's own architecture (dropout rates included)
    and readout, then ``overrides`` (optimisation, loss, split ...), else TrainConfig's defaults. Nothing else
    is taken from the base run: its step count or time budget would not fit a calibration. An architecture
    field or the readout among ``overrides`` is refused."""
    fixed = sorted(set(overrides) & (set(ARCHITECTURE) | {"readout"}))
    if fixed:
        raise ValueError(f"{fixed} come from the checkpoint's model and cannot be changed by a calibration")
    hp = start.model.hparams
    arch = {name: hp[hparam or name] for name, hparam in ARCHITECTURE.items()}
    return TrainConfig(**{**arch, "readout": start.readout, **overrides})

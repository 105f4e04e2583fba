"""POYO (Azabou et al. 2023, "A Unified, Scalable Framework for Neural Population Decoding").

Interface and state dict as torch_brain's POYO: constructor, ``forward`` and ``tokenize``
as in ``pytorch-brain`` 0.1.0 (``readout_spec``, ``output_session_index``),
``load_pretrained`` as torch_brain 0.1.2 added it, and the state-dict keys and shapes of
both ``pytorch-brain`` 0.1.0 and ``torch-brain`` 0.2.1, so checkpoints move both ways.

Einsum legend: B batch, N_in input tokens, N_lat latents, N_out output queries,
dim model width, D_out readout channels. Times are seconds (float64).

    inputs  = unit_emb(unit) + token_type_emb(type)        (B, N_in, dim)
    latents = latent_emb(index)                            (B, N_lat, dim)
    latents += enc_atn(latents <- inputs, mask); += enc_ffn     (rotary, values rotated)
    depth x: latents += self_atn(latents); += ffn          (rotary, values rotated)
    queries = session_emb(session)                         (B, N_out, dim)
    queries += dec_atn(queries <- latents); += dec_ffn     (rotary, values not rotated)
    output  = readout(queries)                             (B, N_out, D_out)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from poyo_rt.model.attention import RotaryCrossAttention, RotarySelfAttention
from poyo_rt.model.feedforward import FeedForward
from poyo_rt.model.rotary import Rotation, RotaryTimeEmbedding
from poyo_rt.model.tokens import (
    create_linspace_latent_tokens,
    create_start_end_unit_tokens,
    pad8,
    track_mask8,
)
from poyo_rt.model.vocab import InfiniteVocabEmbedding
from poyo_rt.registry import MODALITY_REGISTRY, ModalitySpec

log = logging.getLogger(__name__)

#: Constructor arguments saved as ``hyper_parameters["model"]`` in checkpoints (all but readout_spec).
HPARAM_NAMES = (
    "sequence_length",
    "latent_step",
    "num_latents_per_step",
    "dim",
    "depth",
    "dim_head",
    "cross_heads",
    "self_heads",
    "ffn_dropout",
    "lin_dropout",
    "atn_dropout",
    "emb_init_scale",
    "t_min",
    "t_max",
)


class POYO(nn.Module):
    """POYO encoder-processor-decoder over spike tokens.

    Args:
        sequence_length: window length, seconds (float).
        readout_spec: the :class:`~poyo_rt.registry.ModalitySpec` decoded (sets ``D_out``).
        latent_step: spacing of the latent time grid, seconds (float).
        num_latents_per_step: learned latents repeated at every step.
        dim: model width. depth: number of latent self-attention layers.
        dim_head: attention head width (also the rotary width; half its channels rotate).
        cross_heads / self_heads: heads of the encoder/decoder cross-attention / processor.
        ffn_dropout, lin_dropout, atn_dropout: dropout rates (training only).
        emb_init_scale: std of the embeddings' initialisation.
        t_min, t_max: shortest / longest rotary period, seconds.
    """

    def __init__(
        self,
        *,
        sequence_length: float,
        readout_spec: ModalitySpec,
        latent_step: float,
        num_latents_per_step: int = 64,
        dim: int = 512,
        depth: int = 2,
        dim_head: int = 64,
        cross_heads: int = 1,
        self_heads: int = 8,
        ffn_dropout: float = 0.2,
        lin_dropout: float = 0.4,
        atn_dropout: float = 0.0,
        emb_init_scale: float = 0.02,
        t_min: float = 1e-4,
        t_max: float = 2.0627,
    ):
        super().__init__()
        self._validate_params(sequence_length, latent_step)
        if not isinstance(readout_spec, ModalitySpec):
            raise TypeError(f"readout_spec must be a ModalitySpec, got {type(readout_spec).__name__}")
        for name, value in (("num_latents_per_step", num_latents_per_step), ("dim", dim), ("dim_head", dim_head),
                            ("cross_heads", cross_heads), ("self_heads", self_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")

        self.sequence_length = sequence_length
        self.latent_step = latent_step
        self.num_latents_per_step = num_latents_per_step
        self.readout_spec = readout_spec
        self.hparams: dict[str, Any] = dict(
            sequence_length=sequence_length, latent_step=latent_step, num_latents_per_step=num_latents_per_step,
            dim=dim, depth=depth, dim_head=dim_head, cross_heads=cross_heads, self_heads=self_heads,
            ffn_dropout=ffn_dropout, lin_dropout=lin_dropout, atn_dropout=atn_dropout,
            emb_init_scale=emb_init_scale, t_min=t_min, t_max=t_max,
        )

        # embeddings
        self.unit_emb = InfiniteVocabEmbedding(dim, init_scale=emb_init_scale)
        self.session_emb = InfiniteVocabEmbedding(dim, init_scale=emb_init_scale)
        self.token_type_emb = nn.Embedding(4, dim)
        self.latent_emb = nn.Embedding(num_latents_per_step, dim)
        nn.init.normal_(self.token_type_emb.weight, std=emb_init_scale)
        nn.init.normal_(self.latent_emb.weight, std=emb_init_scale)
        self.rotary_emb = RotaryTimeEmbedding(head_dim=dim_head, rotate_dim=dim_head // 2, t_min=t_min, t_max=t_max)
        self.dropout = nn.Dropout(p=lin_dropout)

        # encoder: latents <- input tokens
        self.enc_atn = RotaryCrossAttention(
            dim=dim, heads=cross_heads, dropout=atn_dropout, dim_head=dim_head, rotate_value=True
        )
        self.enc_ffn = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim=dim, dropout=ffn_dropout))

        # processor: latent self-attention
        self.proc_layers = nn.ModuleList(
            nn.Sequential(
                RotarySelfAttention(dim=dim, heads=self_heads, dropout=atn_dropout, dim_head=dim_head, rotate_value=True),
                nn.Sequential(nn.LayerNorm(dim), FeedForward(dim=dim, dropout=ffn_dropout)),
            )
            for _ in range(depth)
        )

        # decoder: output queries <- latents
        self.dec_atn = RotaryCrossAttention(
            dim=dim, heads=cross_heads, dropout=atn_dropout, dim_head=dim_head, rotate_value=False
        )
        self.dec_ffn = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim=dim, dropout=ffn_dropout))

        self.readout = nn.Linear(dim, readout_spec.dim)
        self.dim = dim

    # --- forward -----------------------------------------------------------------------
    def forward(
        self,
        *,
        input_unit_index: Tensor,
        input_timestamps: Tensor,
        input_token_type: Tensor,
        input_mask: Tensor | None = None,
        latent_index: Tensor,
        latent_timestamps: Tensor,
        output_session_index: Tensor,
        output_timestamps: Tensor,
        output_mask: Tensor | None = None,
        unpack_output: bool = False,
    ) -> Tensor | list[Tensor]:
        """Decode a batch of padded token sets.

        Args:
            input_unit_index: (B, N_in) int64, rows of ``unit_emb``.
            input_timestamps: (B, N_in) seconds (float64 recommended; angles are float64 anyway).
            input_token_type: (B, N_in) int64, 0 spike / 1 start / 2 end.
            input_mask: (B, N_in) bool, True = real token. None = all real.
            latent_index: (B, N_lat) int64; latent_timestamps: (B, N_lat) seconds.
            output_session_index: (B, N_out) int64, rows of ``session_emb``.
            output_timestamps: (B, N_out) seconds.
            output_mask: (B, N_out) bool; required when ``unpack_output``.
            unpack_output: return a list of (N_out_valid_b, D_out) instead of (B, N_out, D_out).
        """
        if self.unit_emb.is_lazy():
            raise ValueError("Unit vocabulary has not been initialized, please use "
                             "`model.unit_emb.initialize_vocab(unit_ids)`")
        if self.session_emb.is_lazy():
            raise ValueError("Session vocabulary has not been initialized, please use "
                             "`model.session_emb.initialize_vocab(session_ids)`")

        inputs = self.unit_emb(input_unit_index) + self.token_type_emb(input_token_type)  # (B, N_in, dim)
        latents = self.latent_emb(latent_index)  # (B, N_lat, dim)
        queries = self.session_emb(output_session_index)  # (B, N_out, dim)

        # rotations: angles in float64 from the float64 times, cos/sin rounded once (complex64)
        input_pos = self.rotary_emb.rotation(input_timestamps)  # (B, N_in, H/2)
        latent_pos = self.rotary_emb.rotation(latent_timestamps)  # (B, N_lat, H/2)
        output_pos = self.rotary_emb.rotation(output_timestamps)  # (B, N_out, H/2)

        latents = latents + self.enc_atn(latents, inputs, latent_pos, input_pos, input_mask)
        output = self.process_and_decode(latents, latent_pos, queries, output_pos)  # (B, N_out, D_out)

        if unpack_output:
            if output_mask is None:
                raise ValueError("output_mask is required when unpack_output=True")
            return [output[b][output_mask[b]] for b in range(output.size(0))]
        return output

    def process_and_decode(self, latents: Tensor, latent_pos: Rotation, queries: Tensor, output_pos: Rotation) -> Tensor:
        """Everything after the encoder cross-attention's residual add (the real-time paths run the same
        computation folded: :meth:`poyo_rt.model.fused.FusedPOYO.process_and_decode`).

        Args:
            latents: (B, N_lat, dim), the latents after ``latents + enc_atn(...)``.
            latent_pos / output_pos: rotations of the latent / output times.
            queries: (B, N_out, dim), the output queries' session embeddings.
        Returns:
            (B, N_out, D_out).
        """
        latents = latents + self.enc_ffn(latents)
        for self_attn, self_ff in self.proc_layers:
            latents = latents + self.dropout(self_attn(latents, latent_pos))
            latents = latents + self.dropout(self_ff(latents))
        queries = queries + self.dec_atn(queries, latents, output_pos, latent_pos)
        queries = queries + self.dec_ffn(queries)
        return self.readout(queries)

    # --- tokenizer (CPU, numpy) --------------------------------------------------------
    def tokenize(self, data: Any) -> dict:
        """Tokenize one window of a session for this model (CPU only; use as the last transform).

        ``data`` is a torch_brain/temporaldata-like object already sliced to the window
        ``[0, sequence_length)`` with times relative to the window start: ``spikes.timestamps``
        (seconds), ``spikes.unit_index`` (into ``units.id``), ``units.id``, ``session.id``, and the
        readout's ``timestamp_key`` / ``value_key`` (optionally overridden, normalised and
        weighted by ``data.config["readout"]`` as in torch_brain).

        Returns the torch_brain 0.1.x dict: ``model_inputs`` (ragged arrays wrapped by
        :func:`pad8` for :func:`poyo_rt.model.tokens.collate`), ``target_values``,
        ``target_weights``, ``session_id``, ``absolute_start``, ``eval_mask``.
        """
        start, end = 0.0, self.sequence_length
        unit_ids = [str(u) for u in _as_str_list(data.units.id)]
        spike_unit_index = np.asarray(data.spikes.unit_index, dtype=np.int64)
        spike_timestamps = np.asarray(data.spikes.timestamps, dtype=np.float64)

        se_type, se_unit, se_time = create_start_end_unit_tokens(unit_ids, start, end)
        token_type = np.concatenate([se_type, np.zeros_like(spike_unit_index)])
        local_unit = np.concatenate([se_unit, spike_unit_index])
        timestamps = np.concatenate([se_time, spike_timestamps])
        local_to_global = np.asarray(self.unit_emb.tokenizer(unit_ids), dtype=np.int64)
        unit_index = local_to_global[local_unit]

        latent_index, latent_timestamps = create_linspace_latent_tokens(
            start, end, step=self.latent_step, num_latents_per_step=self.num_latents_per_step
        )

        out_ts, out_values, out_weights, eval_mask = prepare_for_readout(data, self.readout_spec)
        session_id = _as_str_list([data.session.id])[0]
        session_index = np.full(len(out_ts), self.session_emb.tokenizer(session_id), dtype=np.int64)

        return {
            "model_inputs": {
                "input_unit_index": pad8(unit_index),
                "input_timestamps": pad8(timestamps),
                "input_token_type": pad8(token_type),
                "input_mask": track_mask8(unit_index),
                "latent_index": latent_index,
                "latent_timestamps": latent_timestamps,
                "output_session_index": pad8(session_index),
                "output_timestamps": pad8(out_ts),
                "output_mask": track_mask8(session_index),
            },
            "target_values": pad8(out_values),
            "target_weights": pad8(out_weights),
            "session_id": session_id,
            "absolute_start": float(getattr(data, "absolute_start", 0.0)),
            "eval_mask": pad8(eval_mask),
        }

    # --- latents of a fixed-length window --------------------------------------------
    @property
    def num_latents(self) -> int:
        """Latent tokens per window: steps x ``num_latents_per_step``."""
        return len(np.arange(0, self.sequence_length, self.latent_step)) * self.num_latents_per_step

    def latent_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """``(latent_index (N_lat,), latent_timestamps (N_lat,) s)`` of a window starting at 0."""
        return create_linspace_latent_tokens(0.0, self.sequence_length, self.latent_step, self.num_latents_per_step)

    # --- checkpoints -------------------------------------------------------------------
    @classmethod
    def load_pretrained(cls, checkpoint_path: str | Path, readout_spec: ModalitySpec, skip_readout: bool = False) -> "POYO":
        """Build a POYO from a Lightning-style checkpoint (``state_dict`` with ``model.`` prefix,
        ``hyper_parameters["model"]``), loaded with ``weights_only=True``.

        ``skip_readout=True`` drops the checkpoint's readout and keeps a freshly initialised
        one sized for ``readout_spec`` (e.g. to fine-tune on another behaviour).
        """
        from poyo_rt.model.checkpoint import load_pretrained

        return load_pretrained(cls, checkpoint_path, readout_spec, skip_readout=skip_readout)

    def save_pretrained(self, checkpoint_path: str | Path, **extra: Any) -> Path:
        """Write a checkpoint torch_brain's ``POYO.load_pretrained`` accepts (see :mod:`poyo_rt.model.checkpoint`)."""
        from poyo_rt.model.checkpoint import save_checkpoint

        return save_checkpoint(self, checkpoint_path, **extra)

    def _validate_params(self, sequence_length: float, latent_step: float) -> None:
        if not isinstance(sequence_length, float):
            raise ValueError(f"sequence_length must be a float, got {sequence_length!r}")
        if not sequence_length > 0:
            raise ValueError(f"sequence_length must be greater than 0, got {sequence_length}")
        if not isinstance(latent_step, float):
            raise ValueError(f"latent_step must be a float, got {latent_step!r}")
        if not latent_step > 0:
            raise ValueError(f"latent_step must be greater than 0, got {latent_step}")
        if abs(sequence_length % latent_step) > 1e-10:
            log.warning("sequence_length (%s) is not a multiple of latent_step (%s). This is allowed.",
                        sequence_length, latent_step)


# --- readout preparation (pure) ------------------------------------------------------------
_READOUT_KEYS = {"readout_id", "weights", "normalize_mean", "normalize_std", "timestamp_key", "value_key",
                 "metrics", "eval_interval"}


def _as_str_list(values: Any) -> list[str]:
    out = []
    for v in np.asarray(values).reshape(-1).tolist():
        out.append(v.decode() if isinstance(v, bytes) else str(v))
    return out


def get_nested(data: Any, key: str) -> Any:
    """``data.a.b`` for ``key="a.b"``; a clear ``KeyError`` names the missing part."""
    if hasattr(data, "get_nested_attribute"):
        return data.get_nested_attribute(key)
    obj = data
    for part in key.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise KeyError(f"data has no attribute {key!r} (missing {part!r})")
    return obj


def _in_intervals(timestamps: np.ndarray, interval: Any) -> np.ndarray:
    starts = np.asarray(interval.start, dtype=np.float64)
    ends = np.asarray(interval.end, dtype=np.float64)
    inside = np.zeros(len(timestamps), dtype=bool)
    for s, e in zip(starts, ends):
        inside |= (timestamps >= s) & (timestamps < e)
    return inside


def prepare_for_readout(data: Any, readout_spec: ModalitySpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps (N,) s, values (N, D) float32, weights (N,) float32 and eval mask (N,) bool of the readout.

    Honors ``data.config["readout"]`` as torch_brain does (keys override, z-scoring by
    ``normalize_mean`` / ``normalize_std``, interval ``weights``, ``eval_interval``); without a
    config, the spec's keys are used with unit weights.
    """
    config = {}
    if getattr(data, "config", None) is not None and "readout" in data.config:
        config = dict(data.config["readout"])
        unknown = set(config) - _READOUT_KEYS
        if unknown:
            raise ValueError(f"readout config has unknown keys {sorted(unknown)}; allowed: {sorted(_READOUT_KEYS)}")
        if "readout_id" in config and config["readout_id"] not in MODALITY_REGISTRY:
            raise ValueError(f"readout {config['readout_id']!r} is not a registered modality")
    timestamps = np.asarray(get_nested(data, config.get("timestamp_key", readout_spec.timestamp_key)), dtype=np.float64)
    values = np.asarray(get_nested(data, config.get("value_key", readout_spec.value_key)))
    if "normalize_mean" in config:
        values = values - np.asarray(config["normalize_mean"])
    if "normalize_std" in config:
        values = values / np.asarray(config["normalize_std"])
    if values.dtype == np.float64:
        values = values.astype(np.float32)
    weights = np.ones(len(timestamps), dtype=np.float32)
    for interval_key, weight in (config.get("weights") or {}).items():
        weights[_in_intervals(timestamps, get_nested(data, interval_key))] *= weight
    eval_mask = np.ones(len(timestamps), dtype=bool)
    if config.get("eval_interval") is not None:
        eval_mask = _in_intervals(timestamps, get_nested(data, config["eval_interval"]))
    return timestamps, values, weights, eval_mask

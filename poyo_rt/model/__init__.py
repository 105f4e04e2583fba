"""The POYO model, exact against torch_brain's, plus its fixed-shape inference entry point."""

from poyo_rt.model.checkpoint import read_checkpoint, save_checkpoint
from poyo_rt.model.poyo import POYO
from poyo_rt.model.static import StaticInputs, allocate_static_inputs, static_forward
from poyo_rt.model.tokens import collate, create_linspace_latent_tokens, create_start_end_unit_tokens, pad8, track_mask8
from poyo_rt.model.vocab import InfiniteVocabEmbedding

__all__ = [
    "POYO",
    "InfiniteVocabEmbedding",
    "StaticInputs",
    "allocate_static_inputs",
    "static_forward",
    "collate",
    "pad8",
    "track_mask8",
    "create_linspace_latent_tokens",
    "create_start_end_unit_tokens",
    "read_checkpoint",
    "save_checkpoint",
]

"""Readout modalities: what a POYO readout decodes, where its data lives, how it is scored.

Mirrors ``torch_brain.registry`` (same names, same registration order, hence the same
numeric ids), so configs and checkpoints that name a modality mean the same thing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from poyo_rt.losses import CrossEntropyLoss, MSELoss

__all__ = [
    "DataType",
    "ModalitySpec",
    "register_modality",
    "get_modality_by_id",
    "MODALITY_REGISTRY",
]


class DataType(Enum):
    """Kind of values a modality holds."""

    CONTINUOUS = 0
    BINARY = 1
    MULTINOMIAL = 2
    MULTILABEL = 3


@dataclass
class ModalitySpec:
    """Specification of one readout modality.

    Attributes:
        id: unique numeric id, assigned at registration (1, 2, ...).
        dim: number of output channels (e.g. 2 for a 2-D velocity).
        type: the :class:`DataType` of the values.
        timestamp_key: dotted path of the timestamps in a session object (``"cursor.timestamps"``).
        value_key: dotted path of the values (``"cursor.vel"``).
        loss_fn: callable ``loss(input (N, dim), target, weights (N,) | None) -> scalar``.
    """

    id: int
    dim: int
    type: DataType
    timestamp_key: str
    value_key: str
    loss_fn: Callable

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"ModalitySpec.dim must be a positive int, got {self.dim!r}")
        if not isinstance(self.type, DataType):
            raise TypeError(f"ModalitySpec.type must be a DataType, got {self.type!r}")


MODALITY_REGISTRY: dict[str, ModalitySpec] = {}
_ID_TO_MODALITY: dict[int, str] = {}


def register_modality(name: str, **kwargs: Any) -> int:
    """Register a modality under ``name`` and return its new numeric id.

    ``kwargs`` are the :class:`ModalitySpec` fields except ``id``.
    Raises ``ValueError`` if ``name`` is already registered.
    """
    if name in MODALITY_REGISTRY:
        raise ValueError(f"Modality {name} already exists in registry")
    next_id = len(MODALITY_REGISTRY) + 1
    MODALITY_REGISTRY[name] = ModalitySpec(**kwargs, id=next_id)
    _ID_TO_MODALITY[next_id] = name
    return next_id


def get_modality_by_id(modality_id: int) -> str:
    """Name of the modality registered with ``modality_id`` (as torch_brain returns it).

    Raises ``KeyError`` when no modality has that id.
    """
    if modality_id not in _ID_TO_MODALITY:
        raise KeyError(f"No modality found with ID {modality_id}")
    return _ID_TO_MODALITY[modality_id]


def _continuous(dim: int, ts: str, val: str) -> dict:
    return dict(dim=dim, type=DataType.CONTINUOUS, timestamp_key=ts, value_key=val, loss_fn=MSELoss())


def _multinomial(dim: int, ts: str, val: str) -> dict:
    return dict(dim=dim, type=DataType.MULTINOMIAL, timestamp_key=ts, value_key=val, loss_fn=CrossEntropyLoss())


# Same order as torch_brain, so ids agree.
register_modality("cursor_velocity_2d", **_continuous(2, "cursor.timestamps", "cursor.vel"))
register_modality("cursor_position_2d", **_continuous(2, "cursor.timestamps", "cursor.pos"))
register_modality("arm_velocity_2d", **_continuous(2, "behavior.timestamps", "behavior.hand_vel"))
register_modality("drifting_gratings_orientation", **_multinomial(8, "drifting_gratings.timestamps", "drifting_gratings.orientation_id"))
register_modality("drifting_gratings_temporal_frequency", **_multinomial(5, "drifting_gratings.timestamps", "drifting_gratings.temporal_frequency_id"))
register_modality("natural_movie_one_frame", **_multinomial(900, "natural_movie_one.timestamps", "natural_movie_one.frame"))
register_modality("natural_movie_two_frame", **_multinomial(900, "natural_movie_two.timestamps", "natural_movie_two.frame"))
register_modality("natural_movie_three_frame", **_multinomial(3600, "natural_movie_three.timestamps", "natural_movie_three.frame"))
register_modality("locally_sparse_noise_frame", **_multinomial(8000, "locally_sparse_noise.timestamps", "locally_sparse_noise.frame"))
register_modality("static_gratings_orientation", **_multinomial(6, "static_gratings.timestamps", "static_gratings.orientation_id"))
register_modality("static_gratings_spatial_frequency", **_multinomial(5, "static_gratings.timestamps", "static_gratings.spatial_frequency_id"))
register_modality("static_gratings_phase", **_multinomial(5, "static_gratings.timestamps", "static_gratings.phase_id"))
register_modality("natural_scenes", **_multinomial(119, "natural_scenes.timestamps", "natural_scenes.frame"))
register_modality("gabor_orientation", **_multinomial(4, "gabors.timestamps", "gabors.gabors_orientation"))
register_modality("gabor_pos_2d", **_continuous(2, "gabors.timestamps", "gabors.pos_2d"))
register_modality("running_speed", **_continuous(1, "running.timestamps", "running.running_speed"))
register_modality("gaze_pos_2d", **_continuous(2, "gaze.timestamps", "gaze.pos_2d"))
register_modality("pupil_location", **_continuous(2, "pupil.timestamps", "pupil.location"))
register_modality("pupil_size_2d", **_continuous(2, "pupil.timestamps", "pupil.size_2d"))
# poyo-rt's own: hand velocity of the kind recorded in the bundled/real reaching data.
register_modality("hand_velocity_2d", **_continuous(2, "hand.timestamps", "hand.vel"))

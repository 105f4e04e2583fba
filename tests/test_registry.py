"""The modality registry: torch_brain's names and ids, and its errors."""

import pytest

from poyo_rt.registry import MODALITY_REGISTRY, DataType, ModalitySpec, get_modality_by_id, register_modality


def test_velocity_modalities_registered_like_torch_brain():
    # ids follow torch_brain's registration order (cursor_velocity_2d is 1 there too)
    for name, ident, ts, val in [
        ("cursor_velocity_2d", 1, "cursor.timestamps", "cursor.vel"),
        ("cursor_position_2d", 2, "cursor.timestamps", "cursor.pos"),
        ("arm_velocity_2d", 3, "behavior.timestamps", "behavior.hand_vel"),
    ]:
        spec = MODALITY_REGISTRY[name]
        assert (spec.id, spec.dim, spec.type, spec.timestamp_key, spec.value_key) == (ident, 2, DataType.CONTINUOUS, ts, val)
        assert get_modality_by_id(ident) == name
    assert MODALITY_REGISTRY["hand_velocity_2d"].dim == 2


def test_register_and_errors():
    name = "test_only_modality_xyz"
    ident = register_modality(name, dim=3, type=DataType.CONTINUOUS, timestamp_key="a.timestamps",
                              value_key="a.values", loss_fn=lambda *a: 0)
    assert get_modality_by_id(ident) == name and MODALITY_REGISTRY[name].id == ident
    with pytest.raises(ValueError, match="already exists"):
        register_modality(name, dim=3, type=DataType.CONTINUOUS, timestamp_key="a", value_key="b", loss_fn=None)
    with pytest.raises(KeyError, match="No modality"):
        get_modality_by_id(10_000)
    with pytest.raises(ValueError, match="dim"):
        ModalitySpec(id=0, dim=0, type=DataType.CONTINUOUS, timestamp_key="a", value_key="b", loss_fn=None)


def test_mse_loss_weights():
    import torch

    loss = MODALITY_REGISTRY["cursor_velocity_2d"].loss_fn
    x, y = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.zeros(2, 2)
    assert loss(x, y).item() == pytest.approx(0.5)
    assert loss(x, y, torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weights"):
        loss(x, y, torch.ones(3))

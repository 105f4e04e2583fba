"""Checkpoints in the Lightning-style layout torch_brain reads and writes.

File layout (a dict saved with ``torch.save``)::

    {
      "state_dict": {"model.<key>": tensor | OrderedDict vocab, ...},
      "hyper_parameters": {"model": {<POYO constructor args except readout_spec>},
                           "poyo_rt": {"readout": <modality name>, ...extra}},
      "poyo_rt_version": "x.y.z",
    }

Loading always uses ``torch.load(..., weights_only=True)``: a file that needs arbitrary
code to unpickle (a class, a function, a lambda) is refused with :class:`CheckpointError`,
never executed. torch_brain 0.2.1's ``POYO.load_pretrained`` reads what
:func:`save_checkpoint` writes (it infers ``dim_out`` from ``readout.weight``).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from poyo_rt.errors import CheckpointError
from poyo_rt.registry import MODALITY_REGISTRY, ModalitySpec

if TYPE_CHECKING:
    from poyo_rt.model.poyo import POYO

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``), with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "GLOBAL" not in text:  # the unpickler choked on bytes, not on a class or function
            raise CheckpointError(path, "not a readable torch checkpoint (corrupt or not a torch.save file)") from None
        detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
        raise CheckpointError(
            path,
            "refused: the file holds pickled code (a class or function reference), which poyo-rt never "
            f"unpickles ({detail}). Re-save the checkpoint with plain state_dict/hyper_parameters dicts, "
            "or load it once with weights_only=False yourself if you trust its origin.",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(path, f"not a readable torch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(path, "not a Lightning-style checkpoint: expected a dict with a 'state_dict' key")
    hparams = ckpt.get("hyper_parameters", {})
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise CheckpointError(path, "missing hyper_parameters['model'] (the POYO constructor arguments)")
    return ckpt


def model_state_dict(ckpt: dict) -> dict[str, Any]:
    """The model's state dict, ``model.`` prefix stripped (keys without it are kept as they are)."""
    return {k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items()}


def load_pretrained(
    cls: type["POYO"], checkpoint_path: str | Path, readout_spec: ModalitySpec, skip_readout: bool = False
) -> "POYO":
    """See :meth:`POYO.load_pretrained`."""
    from poyo_rt.model.poyo import HPARAM_NAMES

    ckpt = read_checkpoint(checkpoint_path)
    kwargs = dict(ckpt["hyper_parameters"]["model"])
    kwargs.pop("_target_", None)
    for ignored in ("dim_out", "readout_spec"):  # torch-brain 0.2.1 infers dim_out; the spec is ours to give
        kwargs.pop(ignored, None)
    unknown = sorted(set(kwargs) - set(HPARAM_NAMES))
    if unknown:
        raise CheckpointError(checkpoint_path, f"hyper_parameters['model'] has unknown POYO arguments {unknown}")
    for name in ("sequence_length", "latent_step"):
        if isinstance(kwargs.get(name), int):
            kwargs[name] = float(kwargs[name])

    state_dict = model_state_dict(ckpt)
    if skip_readout:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("readout.")}
    elif "readout.weight" in state_dict and state_dict["readout.weight"].shape[0] != readout_spec.dim:
        raise CheckpointError(
            checkpoint_path,
            f"readout has {state_dict['readout.weight'].shape[0]} outputs but readout_spec.dim is "
            f"{readout_spec.dim}; pass skip_readout=True to start a new readout",
        )
    model = cls(**kwargs, readout_spec=readout_spec)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(checkpoint_path, f"weights do not fit the model: {err}") from None
    if skip_readout:
        missing = [k for k in missing if not k.startswith("readout.")]
    if missing:
        log.warning("Missing keys when loading pretrained POYO: %s", missing)
    if unexpected:
        log.warning("Unexpected keys when loading pretrained POYO: %s", unexpected)
    return model


def readout_name(spec: ModalitySpec) -> str | None:
    """Registry name of ``spec`` (None if it was never registered)."""
    for name, registered in MODALITY_REGISTRY.items():
        if registered is spec or registered == spec:
            return name
    return None


def save_checkpoint(model: "POYO", path: str | Path, **extra: Any) -> Path:
    """Write ``model`` as a Lightning-style checkpoint; ``extra`` (plain data only: numbers,
    strings, lists, dicts, tensors) goes under ``hyper_parameters["poyo_rt"]``."""
    from poyo_rt import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    meta = {"readout": readout_name(model.readout_spec), "readout_dim": model.readout_spec.dim, **extra}
    ckpt = {
        "state_dict": state,
        "hyper_parameters": {"model": dict(model.hparams), "poyo_rt": meta},
        "poyo_rt_version": __version__,
    }
    torch.save(ckpt, path)
    return path

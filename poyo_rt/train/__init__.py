"""Training and offline evaluation of POYO decoders.

    from poyo_rt.train import TrainConfig, train, evaluate_causal, load_decoder
    result = train([generate_session(seed=0)], TrainConfig(steps=300), out_path="model.ckpt")
    model, norm, meta = load_decoder("model.ckpt")
    scores = evaluate_causal(model, session, norm=norm)      # {"r2": [...], "r2_mean": ..., ...}

The command line is ``poyo-rt train`` / ``poyo-rt evaluate`` (:mod:`poyo_rt.train.command`).
"""

from poyo_rt.train.data import Normalization, denormalize, fit_normalization, normalize
from poyo_rt.train.evaluate import evaluate_causal, evaluate_offline, load_decoder, r2_score
from poyo_rt.train.trainer import TrainConfig, TrainResult, build_model, lr_at, train, weighted_mse

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "build_model",
    "lr_at",
    "weighted_mse",
    "evaluate_causal",
    "evaluate_offline",
    "load_decoder",
    "r2_score",
    "Normalization",
    "fit_normalization",
    "normalize",
    "denormalize",
]

"""Fit POYO on recorded (or synthetic) sessions.

One process per device. Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the same code runs as
DistributedDataParallel: :func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU), every
rank draws its own shard of each epoch's shuffled windows, gradients are averaged, and only rank 0 validates,
logs progress and writes files.

Per session the time axis is cut as ``[start, t_val)`` training, ``[t_val, t_split)`` validation (the last
``val_fraction`` of the part before the split) and ``[t_split, end]`` held out (the last ``1 - split``).
The behaviour is z-scored with the mean/std of the training ranges (pooled over sessions).

Each step: ``batch_size`` windows of ``window_s`` -> :meth:`POYO.tokenize` (unit dropout; spike positions
redrawn inside their bins every epoch for binned sources) -> :func:`~poyo_rt.model.tokens.collate` ->
forward -> weighted MSE (:func:`weighted_mse`) -> backward -> gradient clipping -> AdamW with linear
warm-up and cosine decay (:func:`lr_at`).

``poyo-rt calibrate`` runs the same loop from a trained model (``train(..., start=WarmStart)``,
:mod:`poyo_rt.train.calibrate`): its vocabularies extended, its normalisation kept, only some weights trained.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from poyo_rt.model.poyo import POYO
from poyo_rt.model.tokens import collate
from poyo_rt.registry import MODALITY_REGISTRY, DataType, ModalitySpec
from poyo_rt.replay.session import Session
from poyo_rt.train.data import Normalization, WindowSampler, WindowSource, fit_normalization
from poyo_rt.train.evaluate import MODEL_INPUT_KEYS, evaluate_causal, evaluate_offline
from poyo_rt.version import code_version

if TYPE_CHECKING:
    from poyo_rt.train.calibrate import WarmStart

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "lr_at", "weighted_mse", "build_model", "split_times", "train",
           "init_distributed", "code_version"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint as ``train_config``).

    Model: ``window_s`` (= POYO ``sequence_length``, s), ``latent_step_s`` (s), ``num_latents_per_step``,
    ``dim``, ``depth``, ``dim_head``, ``cross_heads``, ``self_heads``, dropout rates, ``emb_init_scale`` (std of the
    initial unit/session/latent embeddings); ``readout`` (registry name).
    Optimisation: ``steps``, ``batch_size`` (windows per step and rank), ``lr`` (peak), ``weight_decay``,
    ``warmup_steps``, ``min_lr_ratio`` (final lr / peak), ``grad_clip`` (max global grad norm; 0 = off).
    Loss: ``loss_targets`` ``"all"`` (every behaviour sample in the window, as torch_brain) or ``"end"`` (one
    query at the window end, windows ending at behaviour samples: what the causal decoder does);
    ``end_weight`` (``"all"`` only): loss weight at the window end relative to its start, linear in between.
    Augmentation: ``unit_dropout``; ``redraw_spikes`` (binned sources: new positions inside bins each epoch).
    Data: ``split`` (fraction of each session before the held-out part; 1 = no held-out part),
    ``val_fraction`` (of the part before the split; 0 = no validation, the last step is kept).
    Run: ``seed``, ``log_every`` / ``val_every`` (steps), ``val_tick_hz`` (validation query rate, Hz; None = every
    behaviour sample), ``eval_batch_size``; ``time_budget_s``: wall-clock budget of the training loop, seconds
    (None = none): the schedule's progress is ``max(step / steps, elapsed / time_budget_s)``, so a run on a slower
    or busier machine still warms up, decays fully and stops on time (fewer steps; the log says so).
    """

    window_s: float = 1.0
    latent_step_s: float = 0.125
    num_latents_per_step: int = 16
    dim: int = 64
    depth: int = 4
    dim_head: int = 32
    cross_heads: int = 1
    self_heads: int = 4
    ffn_dropout: float = 0.2
    lin_dropout: float = 0.4
    atn_dropout: float = 0.0
    emb_init_scale: float = 0.02
    readout: str = "hand_velocity_2d"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    loss_targets: str = "all"
    end_weight: float = 1.0
    unit_dropout: bool = True
    redraw_spikes: bool = True
    split: float = 0.8
    val_fraction: float = 0.1
    seed: int = 0
    log_every: int = 50
    val_every: int = 200
    val_tick_hz: float | None = 20.0
    eval_batch_size: int = 64
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        positive_int = ("num_latents_per_step", "dim", "dim_head", "cross_heads", "self_heads", "steps",
                        "batch_size", "log_every", "val_every", "eval_batch_size")
        for name in positive_int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        for name in ("depth", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        for name in ("window_s", "latent_step_s", "lr", "end_weight", "emb_init_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig.{name} must be a finite number > 0, got {value!r}")
        for name in ("ffn_dropout", "lin_dropout", "atn_dropout", "min_lr_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"TrainConfig.{name} must be in [0, 1], got {value!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0):
            raise ValueError(f"TrainConfig.grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")
        if self.latent_step_s > self.window_s:
            raise ValueError(f"TrainConfig.latent_step_s ({self.latent_step_s}) must be <= window_s ({self.window_s})")
        if self.loss_targets not in ("all", "end"):
            raise ValueError(f"TrainConfig.loss_targets must be 'all' or 'end', got {self.loss_targets!r}")
        if self.readout not in MODALITY_REGISTRY:
            raise ValueError(f"TrainConfig.readout {self.readout!r} is not a registered modality")
        if MODALITY_REGISTRY[self.readout].type is not DataType.CONTINUOUS:
            raise ValueError(f"TrainConfig.readout {self.readout!r} is not continuous; only regression is trained here")
        if not 0 < self.split <= 1:
            raise ValueError(f"TrainConfig.split must be in (0, 1], got {self.split!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"TrainConfig.time_budget_s must be > 0 or None, got {self.time_budget_s!r}")
        if self.val_tick_hz is not None and not self.val_tick_hz > 0:
            raise ValueError(f"TrainConfig.val_tick_hz must be > 0 or None, got {self.val_tick_hz!r}")

    @property
    def spec(self) -> ModalitySpec:
        return MODALITY_REGISTRY[self.readout]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; files are written by rank 0 only)."""

    model: POYO
    norm: Normalization
    losses: list[float]
    best_step: int
    val_r2: float | None
    heldout: dict[str, Any] = field(default_factory=dict)  # session id -> {"causal": {...}, "offline": {...}}
    heldout_r2_mean: float | None = None
    checkpoint: Path | None = None
    wall_s: float = 0.0


# --- pure pieces --------------------------------------------------------------------------------
def lr_at(step: float, *, base_lr: float, warmup_steps: float, total_steps: float, min_lr_ratio: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based; may be fractional): linear warm-up from ``base_lr / warmup_steps`` to
    ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * min(step + 1, warmup_steps) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def weighted_mse(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``sum_bn w_bn * mean_d (pred - target)^2 / sum_bn w_bn``: pred, target (B, N, D), weights (B, N)
    (padding has weight 0)."""
    err = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    return (err * weights).sum() / weights.sum().clamp_min(1e-12)


def split_times(session: Session, split: float, val_fraction: float) -> tuple[float, float, float, float]:
    """``(start, t_val, t_split, end)`` seconds: training ``[start, t_val)``, validation ``[t_val, t_split)``,
    held out ``[t_split, end]`` (with ``split == 1``, ``t_split == end``; with ``val_fraction == 0``,
    ``t_val == t_split``)."""
    start, end = session.start_s, session.end_s
    t_split = start + split * (end - start) if split < 1 else end
    t_val = start + (1 - val_fraction) * (t_split - start)
    return start, t_val, t_split, end


def build_model(config: TrainConfig, unit_ids: Sequence[str], session_ids: Sequence[str]) -> POYO:
    """A fresh POYO for ``config`` with its unit and session vocabularies (in the given order)."""
    model = POYO(
        sequence_length=float(config.window_s), readout_spec=config.spec, latent_step=float(config.latent_step_s),
        num_latents_per_step=config.num_latents_per_step, dim=config.dim, depth=config.depth,
        dim_head=config.dim_head, cross_heads=config.cross_heads, self_heads=config.self_heads,
        ffn_dropout=config.ffn_dropout, lin_dropout=config.lin_dropout, atn_dropout=config.atn_dropout,
        emb_init_scale=config.emb_init_scale,
    )
    model.unit_emb.initialize_vocab(list(unit_ids))
    model.session_emb.initialize_vocab(list(session_ids))
    return model


# --- distributed ------------------------------------------------------------------------------------
def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``. Joins the process group when ``WORLD_SIZE > 1`` is set (torchrun):
    backend NCCL for CUDA (device ``cuda:LOCAL_RANK``), gloo otherwise."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, torch.device(device)
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev, backend = torch.device(device), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), dev


def _agree_max(value: float, world: int) -> float:
    """``value`` maximised over ranks (so every rank takes the same time-budget decisions)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, arrays dropped: checkpoint extras are plain data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _scores(result: dict) -> dict:
    return {"r2": result["r2"], "r2_mean": result["r2_mean"], "labels": result["labels"],
            "n_queries": result["n_queries"], "mode": result["mode"]}


# --- the loop -------------------------------------------------------------------------------------------
def train(
    sessions: Sequence[Session], config: TrainConfig, *, out_path: str | Path | None = None,
    device: str = "cpu", sources: Sequence[str] | None = None, offline_eval: bool = True,
    start: WarmStart | None = None,
) -> TrainResult:
    """Train a POYO on ``sessions`` (see the module docstring for the split), keep the best validation step,
    score it on the held-out parts and write ``out_path`` (rank 0).

    Args:
        sessions: one or more sessions with the readout's behaviour (same channel count).
        config: the run's :class:`TrainConfig`.
        out_path: checkpoint written at each validation improvement and at the end (None = none).
        device: ``"cpu"``, ``"cuda"`` (``cuda:LOCAL_RANK`` under torchrun) or ``"cuda:N"``.
        sources: how each session was obtained (file path / generator call), stored in the checkpoint.
        offline_eval: also score the held-out part offline (overlapping windows) at the end.
        start: continue from a trained model instead of a fresh one (:func:`poyo_rt.train.calibrate.warm_start`):
            its vocabularies, behaviour normalisation and trainable weights are used, and what it records is
            stored in the checkpoint.
    """
    if not sessions:
        raise ValueError("train needs at least one session")
    ids = [s.session_id for s in sessions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"session ids must be unique, got {ids}")
    spec = config.spec
    for s in sessions:
        if s.behavior.shape[1] != spec.dim:
            raise ValueError(f"session {s.session_id!r} has {s.behavior.shape[1]} behaviour channels "
                             f"{s.behavior_labels}; readout {config.readout!r} needs {spec.dim}")
    t_begin = time.monotonic()
    rank, world, dev = init_distributed(device)
    is_main = rank == 0
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, rank, 1])

    cuts = [split_times(s, config.split, config.val_fraction) for s in sessions]
    train_beh = [s.behavior[(s.behavior_times_s >= a) & (s.behavior_times_s < tv)] for s, (a, tv, _, _) in
                 zip(sessions, cuts)]
    if start is None:
        norm = fit_normalization(train_beh)
        unit_ids = list(dict.fromkeys(u for s in sessions for u in s.unit_ids))
        model = build_model(config, unit_ids, ids).to(dev)
    else:
        start.check(sessions, config)
        norm, unit_ids, model = start.norm, list(start.model.unit_emb.vocab)[1:], start.model.to(dev)
    window_sources = [WindowSource(s, a, tv, norm, spec) for s, (a, tv, _, _) in zip(sessions, cuts)]
    params = start.param_groups(config.weight_decay) if start is not None else [{"params": list(model.parameters())}]
    n_params = sum(p.numel() for p in model.parameters())
    if is_main:
        log.info("POYO %d parameters (dim %d, depth %d, %d latents/step), %d units, %d sessions, %d rank(s) on %s",
                 n_params, config.dim, config.depth, config.num_latents_per_step, len(unit_ids), len(ids), world, dev)
        if start is not None:
            log.info(start.describe())
        for s, (a, tv, ts, e) in zip(sessions, cuts):
            log.info("%s: train [%.1f, %.1f) s, validation [%.1f, %.1f) s, held out [%.1f, %.1f] s",
                     s.session_id, a, tv, tv, ts, ts, e)
    net: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    redraw_rng = np.random.default_rng([config.seed, 2])  # same on every rank: ranks see the same spikes

    def on_epoch(epoch: int) -> None:
        if config.redraw_spikes and epoch > 0:
            done = [src.redraw_spikes(redraw_rng) for src in window_sources]
            if epoch == 1 and is_main and any(done):
                log.info("spike positions redrawn inside their bins every epoch (%d of %d sessions binned)",
                         sum(done), len(done))

    sampler = WindowSampler(window_sources, window_s=config.window_s, batch_size=config.batch_size,
                            seed=config.seed, end_aligned=config.loss_targets == "end", rank=rank,
                            world_size=world, on_epoch=on_epoch)
    batches = iter(sampler)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    val_sessions = [(s, tv, ts) for s, (_, tv, ts, _) in zip(sessions, cuts) if ts - tv > config.window_s]
    do_val = config.val_fraction > 0 and bool(val_sessions)
    if config.val_fraction > 0 and not val_sessions and is_main:
        log.warning("validation ranges are shorter than one window; keeping the last step")

    extra_base = dict(
        behavior_norm=norm.to_dict(), behavior_labels=list(sessions[0].behavior_labels), sessions=ids,
        sources=list(sources) if sources else ids, train_config=config.to_dict(), seed=config.seed,
        code_version=code_version(), world_size=world,
        ranges_s={s.session_id: {"train": [a, tv], "validation": [tv, ts], "heldout": [ts, e]}
                  for s, (a, tv, ts, e) in zip(sessions, cuts)},
        **(start.extra() if start is not None else {}),
    )
    out_path = Path(out_path) if out_path is not None else None

    def save(step: int, val_r2: float | None, heldout: dict | None = None, heldout_mean: float | None = None) -> None:
        if out_path is None or not is_main:
            return
        extra = dict(extra_base, step=step, val_r2=val_r2, heldout_r2=heldout or {}, heldout_r2_mean=heldout_mean)
        model.save_pretrained(out_path, **_plain(extra))

    def validate() -> float:
        scores = [evaluate_causal(model, s, norm=norm, tick_hz=config.val_tick_hz, t_start_s=tv, t_end_s=ts,
                                  batch_size=config.eval_batch_size, device=dev)["r2_mean"]
                  for s, tv, ts in val_sessions]
        return float(np.mean(scores))

    losses: list[float] = []
    best_val, best_step, best_state = -math.inf, -1, None
    end_query = config.loss_targets == "end"
    net.train()
    t_loop = time.monotonic()
    window_loss, window_n = 0.0, 0
    total_steps = config.steps
    for step in range(config.steps):
        # schedule position in steps: the step count, or the elapsed share of the time budget if further along
        position = float(step)
        if config.time_budget_s is not None:
            elapsed_share = _agree_max((time.monotonic() - t_loop) / config.time_budget_s, world)
            if elapsed_share >= 1.0:
                if is_main:
                    log.warning("time budget of %.1f min reached after %d of %d steps: stopping",
                                config.time_budget_s / 60, step, config.steps)
                total_steps = step
                break
            position = max(position, elapsed_share * config.steps)
        lr = lr_at(position, base_lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.steps,
                   min_lr_ratio=config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        items = next(batches)
        samples = [window_sources[i].sample(model, t0, window_s=config.window_s, rng=rng,
                                            dropout=config.unit_dropout, end_query=end_query,
                                            end_weight=config.end_weight) for i, t0 in items]
        batch = collate(samples)
        inputs = {k: batch["model_inputs"][k].to(dev, non_blocking=True) for k in MODEL_INPUT_KEYS}
        target = batch["target_values"].to(dev)  # (B, N_out, D) z units
        weights = batch["target_weights"].to(dev) * inputs["output_mask"]  # (B, N_out)
        pred = net(**inputs)  # (B, N_out, D)
        loss = weighted_mse(pred, target, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], config.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step} (lr {lr:.3g}); lower --lr")
        losses.append(value)
        window_loss, window_n = window_loss + value, window_n + 1
        done = step + 1
        if is_main and (done % config.log_every == 0 or done == config.steps):
            elapsed = time.monotonic() - t_loop
            rate = done / elapsed
            eta = (config.steps - done) / rate
            if config.time_budget_s is not None:
                eta = min(eta, config.time_budget_s - elapsed)
            log.info("step %d/%d  loss %.4f  lr %.2e  %.2f steps/s  epoch %d  ETA %s", done, config.steps,
                     window_loss / window_n, lr, rate, sampler.epoch, _format_eta(eta))
            window_loss, window_n = 0.0, 0
        if do_val and (done % config.val_every == 0 or done == config.steps):
            if is_main:
                t_val = time.monotonic()
                val = validate()
                improved = val > best_val
                if improved:
                    best_val, best_step = val, done
                    best_state = copy.deepcopy(model.state_dict())
                    save(done, best_val)
                log.info("validation at step %d: causal R² %.4f%s (%.1f s)", done, val,
                         "  (best, saved)" if improved else f"  (best {best_val:.4f} at step {best_step})",
                         time.monotonic() - t_val)
            net.train()

    if do_val and total_steps < config.steps and total_steps % config.val_every != 0 and is_main:
        val = validate()  # the stopped run's last weights get their chance too
        log.info("validation at step %d (last): causal R² %.4f", total_steps, val)
        if val > best_val:
            best_val, best_step, best_state = val, total_steps, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_step = total_steps
    if world > 1 and do_val:  # rank 0 chose the best step: every rank returns the same weights
        import torch.distributed as dist

        for tensor in model.state_dict().values():
            if isinstance(tensor, Tensor):
                dist.broadcast(tensor, src=0)
        info = [best_step, best_val]
        dist.broadcast_object_list(info, src=0)
        best_step, best_val = int(info[0]), float(info[1])
    model.eval()
    heldout: dict[str, Any] = {}
    heldout_mean = None
    if is_main and config.split < 1:
        means = []
        for s, (_, _, ts, e) in zip(sessions, cuts):
            if e - ts < 2 * config.window_s:
                log.warning("%s: held-out part %.1f s is too short to score", s.session_id, e - ts)
                continue
            causal = evaluate_causal(model, s, norm=norm, t_start_s=ts, batch_size=config.eval_batch_size, device=dev)
            heldout[s.session_id] = {"causal": _scores(causal)}
            msg = f"causal R² {causal['r2_mean']:.4f} (" + ", ".join(
                f"{lab} {r:.4f}" for lab, r in zip(causal["labels"], causal["r2"])) + ")"
            if offline_eval:
                offline = evaluate_offline(model, s, norm=norm, t_start_s=ts, batch_size=config.eval_batch_size,
                                           device=dev)
                heldout[s.session_id]["offline"] = _scores(offline)
                msg += f", offline R² {offline['r2_mean']:.4f}"
            means.append(causal["r2_mean"])
            log.info("held out %s [%.1f, %.1f] s: %s", s.session_id, ts, e, msg)
        heldout_mean = float(np.mean(means)) if means else None
    wall = time.monotonic() - t_begin
    save(best_step, best_val if math.isfinite(best_val) else None, heldout, heldout_mean)
    if is_main and out_path is not None:
        log.info("wrote %s (step %d, %.1f min)", out_path, best_step, wall / 60)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(model=model, norm=norm, losses=losses, best_step=best_step,
                       val_r2=best_val if math.isfinite(best_val) else None, heldout=heldout,
                       heldout_r2_mean=heldout_mean, checkpoint=out_path if is_main else None, wall_s=wall)

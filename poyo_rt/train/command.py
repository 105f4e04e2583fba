"""``poyo-rt train``, ``poyo-rt calibrate`` and ``poyo-rt evaluate``: argument parsing and the handlers.

``poyo_rt.cli`` calls :func:`add_parser` with its subparsers; the handlers return an exit code and raise
:class:`~poyo_rt.errors.ConfigError` for bad arguments (exit code 2 there).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from poyo_rt.cli import HelpFormatter
from poyo_rt.errors import ConfigError
from poyo_rt.registry import MODALITY_REGISTRY, DataType

log = logging.getLogger(__name__)

__all__ = ["add_parser", "cmd_train", "cmd_calibrate", "cmd_evaluate", "load_sessions"]

SYNTHETIC = "synthetic"


# --- sessions ------------------------------------------------------------------------------------
def _add_session_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("session sources")
    g.add_argument("--spike-seed", type=int, default=0, metavar="N",
                   help="binned files (MAT/NPZ): seed of the uniform spike placement inside bins")
    g.add_argument("--synthetic-seed", type=int, default=0, metavar="N",
                   help="seed of a 'synthetic' session (poyo_rt.replay.generate_session); it sets the neurons' "
                        "tuning AND the movements")
    g.add_argument("--synthetic-duration", type=float, default=300.0, metavar="S",
                   help="length of a synthetic session, seconds")
    g.add_argument("--synthetic-units", type=int, default=64, metavar="U",
                   help="units of a synthetic session")
    g.add_argument("-O", "--reader-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for the files' reader, applied to every file (repeatable; VALUE parsed as JSON "
                        "when it can be): e.g. an XDF's streams -O spike_stream=PeerSpikes -O behavior_stream="
                        "PeerBehavior, an NWB's -O behavior_path=behavior/hand_vel, a MAT's -O behavior_key="
                        "cursorVel (the readers' options: poyo_rt.replay.readers)")


def _is_synthetic(spec: str) -> bool:
    return spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":")


def load_sessions(specs: list[str], args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """Sessions named on the command line: file paths, ``synthetic`` or ``synthetic:SEED``.

    Returns ``(sessions, sources)``, ``sources`` plain data saying how each was made (stored in checkpoints).
    """
    from poyo_rt.replay import generate_session, read_session
    from poyo_rt.replay.readers import detect_format, parse_reader_options

    try:
        reader_options = parse_reader_options(args.reader_option)
    except ValueError as err:
        raise ConfigError("--reader-option", str(err)) from None
    if reader_options and all(map(_is_synthetic, specs)):
        raise ConfigError("--reader-option", "applies to session files; every SESSION here is synthetic")
    sessions, sources = [], []
    for spec in specs:
        if _is_synthetic(spec):
            seed_text = spec.partition(":")[2]
            try:
                seed = int(seed_text) if seed_text else args.synthetic_seed
            except ValueError:
                raise ConfigError("SESSION", f"{spec!r}: expected 'synthetic' or 'synthetic:SEED' (an int)") from None
            kwargs = dict(n_units=args.synthetic_units, duration_s=args.synthetic_duration, seed=seed)
            try:
                sessions.append(generate_session(**kwargs))
            except ValueError as err:
                raise ConfigError("--synthetic-*", str(err)) from None
            sources.append({"generator": "poyo_rt.replay.generate_session", **kwargs})
            continue
        path = Path(spec)
        if not path.exists():
            raise ConfigError("SESSION", f"{spec!r}: no such file (or use 'synthetic' / 'synthetic:SEED')")
        try:
            options = dict(reader_options)
            if detect_format(path) in ("mat", "npz"):
                options.setdefault("seed", args.spike_seed)
            sessions.append(read_session(path, **options))
        except ValueError as err:
            raise ConfigError("SESSION", f"{spec!r}: {err}") from None
        except TypeError as err:  # an option this file's reader does not take
            raise ConfigError("--reader-option", f"{spec!r}: {err}") from None
        sources.append({"path": str(path), **options})
    return sessions, sources


def _setup_torch(device: str, threads: int | None) -> str:
    import torch

    if threads is not None:
        if threads < 1:
            raise ConfigError("--threads", f"must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device", f"{device} was asked for, but no CUDA device is available to this torch build")
    return device


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")
        log.info("wrote %s", path)


# --- train ------------------------------------------------------------------------------------------
def _add_run_args(p: argparse.ArgumentParser, d: Any) -> None:
    """The argument groups ``train`` and ``calibrate`` share: optimisation, loss and augmentation, data split,
    validation and run (defaults from the TrainConfig ``d``)."""
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    o.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per step (per process)")
    o.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    o.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    o.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up steps")
    o.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="final lr / peak lr (cosine decay)")
    o.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm; 0 = off")
    o.add_argument("--time-budget-min", type=float, default=None, metavar="MIN",
                   help="wall-clock budget of the training loop, minutes: the lr schedule follows the larger of "
                        "step and time progress and training stops when the budget is spent")

    lo = p.add_argument_group("loss and augmentation")
    lo.add_argument("--loss-targets", choices=["all", "end"], default=d.loss_targets,
                    help="'all': every behaviour sample in the window (torch_brain); 'end': one query at the "
                         "window end, windows ending at behaviour samples (the causal decoder's task)")
    lo.add_argument("--end-weight", type=float, default=d.end_weight,
                    help="with --loss-targets all: loss weight at the window end relative to its start (linear "
                         "ramp, mean 1); 1 = uniform")
    lo.add_argument("--no-unit-dropout", dest="unit_dropout", action="store_false",
                    help="keep every unit in every window (default: drop a random subset per window)")
    lo.add_argument("--no-redraw-spikes", dest="redraw_spikes", action="store_false",
                    help="binned files: keep the spike positions as read (default: redraw inside bins each epoch)")

    r = p.add_argument_group("data split, validation, run")
    r.add_argument("--split", type=float, default=d.split,
                   help="fraction of each session used for training + validation; the rest is held out "
                        "(1 = none held out)")
    r.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="last fraction of the pre-split part used for validation (0 = none; keep the last step)")
    r.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps")
    r.add_argument("--val-tick-hz", type=float, default=d.val_tick_hz,
                   help="validation query rate, Hz (0 = every behaviour sample)")
    r.add_argument("--log-every", type=int, default=d.log_every, help="progress line every N steps")
    r.add_argument("--seed", type=int, default=d.seed, help="seed of weights, window order and augmentation")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's choice)")
    r.add_argument("--no-offline-eval", dest="offline_eval", action="store_false",
                   help="score the held-out part causally only (skip the overlapping-window score)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from poyo_rt.train.trainer import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="fit a POYO decoder on recorded or synthetic sessions and write a checkpoint",
        description="Fit POYO on one or more sessions: random windows of --window seconds from the first --split "
        "of each session (the last --val-fraction of that part validates; the best validation step is kept), "
        "behaviour z-scored with the training part's mean/std, weighted MSE, AdamW with linear warm-up and "
        "cosine decay, unit dropout, spike positions redrawn inside their bins every epoch for binned files. "
        "At the end the held-out part (the last 1 - --split) is scored causally, as the real-time engine decodes, "
        "and offline. The checkpoint loads with POYO.load_pretrained (poyo-rt and torch_brain 0.2.1) and carries "
        "the normalisation, labels, config, seed, R² and code version under hyper_parameters['poyo_rt']. "
        "Under torchrun (WORLD_SIZE > 1) it runs as DistributedDataParallel; only rank 0 writes.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session files (MAT/NPZ/NWB/XDF/temporaldata HDF5), 'synthetic' or 'synthetic:SEED'")
    p.add_argument("-o", "--out", default="poyo.ckpt", help="checkpoint to write")
    p.add_argument("--json", metavar="PATH", help="also write a JSON summary (config, losses, R²)")
    _add_session_args(p)

    m = p.add_argument_group("model (POYO)")
    m.add_argument("--window", type=float, default=d.window_s, metavar="S", help="window = sequence_length, seconds")
    m.add_argument("--latent-step", type=float, default=d.latent_step_s, metavar="S", help="latent grid step, seconds")
    m.add_argument("--latents-per-step", type=int, default=d.num_latents_per_step, help="latents per step")
    m.add_argument("--dim", type=int, default=d.dim, help="model width")
    m.add_argument("--depth", type=int, default=d.depth, help="latent self-attention layers")
    m.add_argument("--dim-head", type=int, default=d.dim_head, help="attention head width")
    m.add_argument("--cross-heads", type=int, default=d.cross_heads, help="encoder/decoder cross-attention heads")
    m.add_argument("--self-heads", type=int, default=d.self_heads, help="processor self-attention heads")
    m.add_argument("--ffn-dropout", type=float, default=d.ffn_dropout, help="feed-forward dropout")
    m.add_argument("--lin-dropout", type=float, default=d.lin_dropout, help="processor residual dropout")
    m.add_argument("--atn-dropout", type=float, default=d.atn_dropout, help="attention dropout")
    m.add_argument("--readout", default=d.readout,
                   choices=[n for n, s in MODALITY_REGISTRY.items() if s.type is DataType.CONTINUOUS],
                   metavar="NAME", help="registered continuous modality decoded")
    _add_run_args(p, d)
    p.set_defaults(func=cmd_train)


def _run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields of :func:`_add_run_args`'s arguments."""
    return dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
        loss_targets=args.loss_targets, end_weight=args.end_weight, unit_dropout=args.unit_dropout,
        redraw_spikes=args.redraw_spikes, split=args.split, val_fraction=args.val_fraction, seed=args.seed,
        log_every=args.log_every, val_every=args.val_every, val_tick_hz=args.val_tick_hz or None,
        time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60.0,
    )


def _as_config_error(err: ValueError) -> ConfigError:
    """``"TrainConfig.lr must be ..."`` -> a ConfigError naming the command-line flag."""
    text = str(err)
    name = text.split(" ", 1)[0].removeprefix("TrainConfig.")
    flag = {"window_s": "--window", "latent_step_s": "--latent-step", "num_latents_per_step": "--latents-per-step",
            "time_budget_s": "--time-budget-min"}.get(name, "--" + name.replace("_", "-"))
    return ConfigError(flag, text)


def _train_config(args: argparse.Namespace) -> Any:
    from poyo_rt.train.trainer import TrainConfig

    fields = dict(
        window_s=args.window, latent_step_s=args.latent_step, num_latents_per_step=args.latents_per_step,
        dim=args.dim, depth=args.depth, dim_head=args.dim_head, cross_heads=args.cross_heads,
        self_heads=args.self_heads, ffn_dropout=args.ffn_dropout, lin_dropout=args.lin_dropout,
        atn_dropout=args.atn_dropout, readout=args.readout, **_run_fields(args),
    )
    try:
        return TrainConfig(**fields)
    except ValueError as err:
        raise _as_config_error(err) from None


def _report(result: Any, config: Any, sources: list[Any], json_path: str | None, **extra: Any) -> None:
    """Print the held-out score and write the ``--json`` summary (rank 0 only: the one with a checkpoint)."""
    if result.checkpoint is None:
        return
    summary = {
        "checkpoint": str(result.checkpoint), "best_step": result.best_step, "val_r2": result.val_r2,
        "heldout": result.heldout, "heldout_r2_mean": result.heldout_r2_mean, "wall_s": result.wall_s,
        "final_loss": float(np.mean(result.losses[-10:])) if result.losses else None,
        "config": config.to_dict(), "sources": sources, **extra,
    }
    if result.heldout_r2_mean is not None:
        print(f"held-out causal R² {result.heldout_r2_mean:.4f}; wrote {result.checkpoint}", flush=True)
    else:
        print(f"wrote {result.checkpoint}", flush=True)
    _write_json(json_path, {**summary, "losses": result.losses})


def cmd_train(args: argparse.Namespace) -> int:
    """Handler of ``poyo-rt train``: returns 0 when a checkpoint was written."""
    from poyo_rt.train.trainer import train

    config = _train_config(args)
    device = _setup_torch(args.device, args.threads)
    sessions, sources = load_sessions(args.sessions, args)
    try:
        result = train(sessions, config, out_path=args.out, device=device, sources=sources,
                       offline_eval=args.offline_eval)
    except ValueError as err:
        raise ConfigError("train", str(err)) from None
    _report(result, config, sources, args.json)
    return 0


# --- calibrate ------------------------------------------------------------------------------------------
#: ``poyo-rt calibrate``'s defaults where they differ from ``train``'s (tools/calibrate_m1.sh, docs/training.md).
CALIBRATE_DEFAULTS = dict(steps=600, lr=1e-2, warmup_steps=50, val_every=100, log_every=50)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    from poyo_rt.train.calibrate import TRAINABLE
    from poyo_rt.train.trainer import TrainConfig

    p = sub.add_parser(
        "calibrate",
        help="adapt a trained checkpoint to a new session: learn its units' and its own embeddings",
        description="Calibrate CHECKPOINT to new SESSION(s), whose units it may never have seen: each unknown unit "
        "id and the new session id get an embedding row, learned from the session's first --split (the same "
        "windows, loss, augmentation, validation and held-out scoring as 'poyo-rt train'). With --trainable new "
        "(the default) nothing else trains: every weight and embedding the checkpoint had stays exactly as it was, "
        "so the earlier sessions still decode as before and a few minutes of data suffice. --trainable all "
        "fine-tunes every weight from the checkpoint. The model's architecture, readout and behaviour "
        "normalisation are the checkpoint's. The written checkpoint decodes the new session by default "
        "(poyo-rt run picks it when model.session_id is null).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", help="trained checkpoint (poyo-rt train or torch_brain Lightning-style)")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="the new session(s): files (MAT/NPZ/NWB/XDF/temporaldata HDF5), 'synthetic' or "
                        "'synthetic:SEED'")
    p.add_argument("-o", "--out", default="calibrated.ckpt", help="checkpoint to write")
    p.add_argument("--json", metavar="PATH", help="also write a JSON summary (config, losses, R²)")
    p.add_argument("--trainable", choices=TRAINABLE, default="new",
                   help="new: only the new units' and sessions' embeddings train; all: every weight (fine-tuning)")
    p.add_argument("--session-id", default=None, metavar="NAME",
                   help="decode the (single) session under this id, e.g. when its file's id is one the "
                        "checkpoint already knows")
    _add_session_args(p)
    _add_run_args(p, TrainConfig())
    p.set_defaults(func=cmd_calibrate, **CALIBRATE_DEFAULTS)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``poyo-rt calibrate``: returns 0 when a checkpoint was written."""
    import dataclasses

    from poyo_rt.train.calibrate import calibration_config, warm_start
    from poyo_rt.train.trainer import train

    device = _setup_torch(args.device, args.threads)
    sessions, sources = load_sessions(args.sessions, args)
    if args.session_id is not None:
        if len(sessions) != 1:
            raise ConfigError("--session-id", f"names one session; {len(sessions)} were given")
        sessions = [dataclasses.replace(sessions[0], session_id=args.session_id)]
    try:
        start = warm_start(args.checkpoint, sessions, trainable=args.trainable)
    except ValueError as err:
        hint = " (--session-id NAME gives it another)" if "already in the checkpoint" in str(err) else ""
        raise ConfigError("SESSION", f"{err}{hint}") from None
    try:
        config = calibration_config(start, **_run_fields(args))
    except ValueError as err:
        raise _as_config_error(err) from None
    try:
        result = train(sessions, config, out_path=args.out, device=device, sources=sources,
                       offline_eval=args.offline_eval, start=start)
    except ValueError as err:
        raise ConfigError("calibrate", str(err)) from None
    _report(result, config, sources, args.json, calibration=start.extra()["calibration"])
    return 0


# --- evaluate ------------------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a session, causally (as the engine decodes) and offline",
        description="Score CHECKPOINT on SESSION in behaviour units. Causal: a window ending at every behaviour "
        "sample (or every 1/--tick-hz s), one query at its end, only earlier spikes used. Offline: overlapping "
        "windows (stride window/2), all behaviour samples queried and averaged. R² = 1 - SS_res/SS_tot per channel "
        "and the channels' mean. --split F scores only the last 1 - F of the session (earlier spikes serve as "
        "history), i.e. the held-out part of a 'poyo-rt train --split F' run.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint (poyo-rt train or torch_brain Lightning-style)")
    p.add_argument("session", metavar="SESSION", help="session file, 'synthetic' or 'synthetic:SEED'")
    p.add_argument("--split", type=float, default=None, metavar="F",
                   help="score only times after start + F * duration (0 < F < 1; None: the whole session)")
    p.add_argument("--tick-hz", type=float, default=None,
                   help="causal queries every 1/tick_hz s (targets interpolated) instead of at behaviour samples")
    p.add_argument("--no-offline", dest="offline", action="store_false", help="skip the offline score")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON")
    _add_session_args(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``poyo-rt evaluate``: prints R² per channel and mean; returns 0."""
    from poyo_rt.train.evaluate import evaluate_causal, evaluate_offline, load_decoder

    if args.split is not None and not 0 < args.split < 1:
        raise ConfigError("--split", f"must be in (0, 1), got {args.split}")
    if args.tick_hz is not None and not (math.isfinite(args.tick_hz) and args.tick_hz > 0):
        raise ConfigError("--tick-hz", f"must be > 0, got {args.tick_hz}")
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be >= 1, got {args.batch_size}")
    device = _setup_torch(args.device, args.threads)
    model, norm, meta = load_decoder(args.checkpoint, device=device)
    (session,), (source,) = load_sessions([args.session], args)
    if session.session_id not in model.session_emb.vocab:
        known = [w for w in model.session_emb.vocab if w != "NA"]
        raise ConfigError("SESSION", f"session id {session.session_id!r} is not in the checkpoint's sessions {known}")
    unknown = [u for u in session.unit_ids if u not in model.unit_emb.vocab]
    if unknown:
        raise ConfigError("SESSION", f"{len(unknown)} unit ids are not in the checkpoint's vocabulary "
                          f"(e.g. {unknown[:3]}); 'poyo-rt calibrate' learns new units' embeddings")
    t_start = None if args.split is None else session.start_s + args.split * session.duration_s
    out: dict[str, Any] = {"checkpoint": str(args.checkpoint), "source": source, "split": args.split}
    causal = evaluate_causal(model, session, norm=norm, tick_hz=args.tick_hz, t_start_s=t_start,
                             batch_size=args.batch_size, device=device)
    results = [causal]
    if args.offline:
        results.append(evaluate_offline(model, session, norm=norm, t_start_s=t_start, batch_size=args.batch_size,
                                        device=device))
    for res in results:
        chans = ", ".join(f"{lab} {r:.4f}" for lab, r in zip(res["labels"], res["r2"]))
        print(f"{res['mode']:8s} R² mean {res['r2_mean']:.4f} ({chans}) over {res['n_queries']} queries", flush=True)
        out[res["mode"]] = {k: res[k] for k in ("r2", "r2_mean", "labels", "n_queries")}
    _write_json(args.json, out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train``, ``calibrate`` and ``evaluate`` on ``poyo-rt``'s subparsers."""
    _add_train(subparsers)
    _add_calibrate(subparsers)
    _add_evaluate(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m poyo_rt.train.command train ...``), the same as ``poyo-rt train ...``."""
    import sys

    from poyo_rt.errors import PoyoRtError

    parser = argparse.ArgumentParser(prog="poyo-rt", description="Train, calibrate and evaluate POYO decoders.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_parser(sub)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    except PoyoRtError as err:
        log.error("%s", err)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    raise SystemExit(main())

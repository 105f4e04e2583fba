"""Offline scoring of a POYO decoder on a recorded session.

Two ways to score, both in behaviour units (predictions de-normalised with the checkpoint's mean/std):

- **causal** (:func:`evaluate_causal`), as the real-time engine decodes: for every query time ``t`` a window
  ``[t - window_s, t)`` holding only spikes before ``t``, one output query at its end (window-relative
  ``window_s``). Query times are the behaviour samples (default) or a tick grid (``tick_hz``, the behaviour
  linearly interpolated there).
- **offline** (:func:`evaluate_offline`), as POYO is usually reported: overlapping windows (stride
  ``window_s / 2``), a query at every behaviour sample inside each window, the predictions of a sample
  averaged over the windows that contain it.

``R² = 1 - SS_res / SS_tot`` per channel (:func:`r2_score`), and its mean over channels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from poyo_rt.model.checkpoint import read_checkpoint
from poyo_rt.model.poyo import POYO
from poyo_rt.model.tokens import collate
from poyo_rt.registry import MODALITY_REGISTRY
from poyo_rt.replay.session import Session
from poyo_rt.train.data import Normalization, denormalize, readout_names

log = logging.getLogger(__name__)

__all__ = ["r2_score", "evaluate_causal", "evaluate_offline", "load_decoder", "MODEL_INPUT_KEYS"]

MODEL_INPUT_KEYS = (
    "input_unit_index", "input_timestamps", "input_token_type", "input_mask", "latent_index", "latent_timestamps",
    "output_session_index", "output_timestamps", "output_mask",
)


def r2_score(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per channel: ``1 - sum((y - p)^2) / sum((y - mean(y))^2)``.

    ``target``, ``pred``: (M, D). Returns (D,) float64; NaN for a channel whose target is constant.
    """
    y = np.asarray(target, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"target and pred must both be (M, D), got {y.shape} and {p.shape}")
    if y.shape[0] < 2:
        raise ValueError(f"R² needs at least 2 samples, got {y.shape[0]}")
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def _unwrap(model: Any) -> POYO:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _window_sample(model: POYO, session: Session, t0_s: float, query_rel_s: np.ndarray) -> dict:
    """Tokenize the window ``[t0_s, t0_s + window_s)`` of ``session`` with output queries at ``query_rel_s``."""
    window_s = model.sequence_length
    times_rel, units = session.window(t0_s + window_s, window_s)
    name, value = readout_names(model.readout_spec)
    beh = SimpleNamespace(timestamps=np.asarray(query_rel_s, dtype=np.float64))
    setattr(beh, value, np.zeros((len(query_rel_s), model.readout_spec.dim), dtype=np.float32))
    view = SimpleNamespace(
        spikes=SimpleNamespace(timestamps=times_rel, unit_index=units),
        units=SimpleNamespace(id=np.asarray(session.unit_ids, dtype=str)),
        session=SimpleNamespace(id=session.session_id),
        absolute_start=t0_s, start=0.0, end=window_s, config=None,
    )
    setattr(view, name, beh)
    return model.tokenize(view)


@torch.no_grad()
def _predict(model: Any, samples: list[dict], device: torch.device | str) -> list[np.ndarray]:
    """Model outputs (z units) of tokenized samples: one (n_queries_b, D) array per sample."""
    batch = collate(samples)["model_inputs"]
    inputs = {k: batch[k].to(device) for k in MODEL_INPUT_KEYS}
    out = model(**inputs)  # (B, N_out, D)
    mask = inputs["output_mask"]
    return [out[b][mask[b]].float().cpu().numpy() for b in range(out.shape[0])]


def _query_range(session: Session, window_s: float, t_start_s: float | None, t_end_s: float | None
                 ) -> tuple[float, float]:
    lo = session.start_s + window_s if t_start_s is None else max(float(t_start_s), session.start_s + window_s)
    hi = session.end_s if t_end_s is None else float(t_end_s)
    if not hi > lo:
        raise ValueError(f"no query time in [{lo}, {hi}] s: the session ({session.start_s:.3f}..{session.end_s:.3f} s) "
                         f"must be longer than the window ({window_s} s) and t_start_s < t_end_s")
    return lo, hi


def _result(mode: str, labels: list[str], times: np.ndarray, target: np.ndarray, pred: np.ndarray,
            **extra: Any) -> dict:
    r2 = r2_score(target, pred)
    finite = r2[np.isfinite(r2)]
    return {
        "mode": mode,
        "r2": [float(x) for x in r2],
        "r2_mean": float(finite.mean()) if finite.size else float("nan"),
        "labels": list(labels),
        "n_queries": int(len(times)),
        "times_s": times,
        "target": target,
        "pred": pred,
        **extra,
    }


def evaluate_causal(
    model: Any, session: Session, *, norm: Normalization, tick_hz: float | None = None,
    t_start_s: float | None = None, t_end_s: float | None = None, batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict:
    """Score ``model`` causally on ``session``: one query at the end of a window ending at each query time.

    Args:
        model: a :class:`POYO` (or a DDP wrapper of one); evaluated in eval mode, its mode restored after.
        session: the session; spikes before ``t_start_s`` serve as history only.
        norm: the checkpoint's behaviour normalisation (model outputs are z units).
        tick_hz: None = query at every behaviour sample; else query every ``1 / tick_hz`` s from the first
            allowed time, targets interpolated linearly there.
        t_start_s, t_end_s: score only query times in ``[t_start_s, t_end_s]`` (seconds; default the whole session
            after its first full window).
        batch_size: windows per forward pass.
        device: default the model's device.

    Returns:
        ``{"mode": "causal", "r2": [D], "r2_mean", "labels", "n_queries", "times_s" (n,), "target" (n, D),
        "pred" (n, D), "tick_hz"}``, R² in behaviour units.
    """
    net = _unwrap(model)
    window_s = net.sequence_length
    lo, hi = _query_range(session, window_s, t_start_s, t_end_s)
    bt = session.behavior_times_s
    if tick_hz is None:
        sel = (bt >= lo) & (bt <= hi)
        times, target = bt[sel], session.behavior[sel].astype(np.float64)
    else:
        if not tick_hz > 0:
            raise ValueError(f"tick_hz must be > 0, got {tick_hz}")
        times = lo + np.arange(int(np.floor((hi - lo) * tick_hz + 1e-9)) + 1) / float(tick_hz)
        times = times[(times >= bt[0]) & (times <= bt[-1])]
        target = np.stack([np.interp(times, bt, session.behavior[:, d]) for d in range(session.behavior.shape[1])],
                          axis=1)
    if len(times) < 2:
        raise ValueError(f"causal evaluation needs >= 2 query times in [{lo}, {hi}] s, got {len(times)}")
    device = device or next(net.parameters()).device
    was_training = model.training
    model.eval()
    try:
        preds = []
        query = np.array([window_s])
        for i in range(0, len(times), batch_size):
            samples = [_window_sample(net, session, float(t) - window_s, query) for t in times[i : i + batch_size]]
            preds.extend(p[0] for p in _predict(model, samples, device))
    finally:
        model.train(was_training)
    pred = denormalize(np.stack(preds), norm).astype(np.float64)
    return _result("causal", session.behavior_labels, times, target, pred, tick_hz=tick_hz)


def evaluate_offline(
    model: Any, session: Session, *, norm: Normalization, stride_s: float | None = None,
    t_start_s: float | None = None, t_end_s: float | None = None, batch_size: int = 32,
    device: torch.device | str | None = None,
) -> dict:
    """Score ``model`` offline: overlapping windows, every behaviour sample queried in each window holding it.

    Windows ``[t0, t0 + window_s)`` start every ``stride_s`` (default ``window_s / 2``) from ``t_start_s``
    (default the session start), plus one ending just after the last sample; samples in ``[t_start_s, t_end_s)``
    covered by at least one window are scored with the mean of their predictions. Returns the dict of
    :func:`evaluate_causal` with ``mode="offline"``.
    """
    net = _unwrap(model)
    window_s = net.sequence_length
    stride_s = window_s / 2 if stride_s is None else float(stride_s)
    if not stride_s > 0:
        raise ValueError(f"stride_s must be > 0, got {stride_s}")
    lo = session.start_s if t_start_s is None else float(t_start_s)
    hi = float(np.nextafter(session.end_s, np.inf)) if t_end_s is None else float(t_end_s)
    bt = session.behavior_times_s
    scored = np.flatnonzero((bt >= lo) & (bt < hi))
    if scored.size < 2:
        raise ValueError(f"offline evaluation needs >= 2 behaviour samples in [{lo}, {hi}) s, got {scored.size}")
    starts = lo + np.arange(int(np.floor(max(hi - lo - window_s, 0.0) / stride_s + 1e-9)) + 1) * stride_s
    last = float(np.nextafter(bt[scored[-1]], np.inf)) - window_s  # one more window flush with the last sample
    if last > starts[-1]:
        starts = np.append(starts, last)
    total = np.zeros((len(bt), session.behavior.shape[1]))
    count = np.zeros(len(bt), dtype=np.int64)
    device = device or next(net.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(starts), batch_size):
            samples, rows = [], []
            for t0 in starts[i : i + batch_size]:
                j0, j1 = np.searchsorted(bt, [t0, min(t0 + window_s, hi)], side="left")
                if j1 > j0:
                    samples.append(_window_sample(net, session, float(t0), bt[j0:j1] - t0))
                    rows.append(np.arange(j0, j1))
            if samples:
                for idx, p in zip(rows, _predict(model, samples, device)):
                    total[idx] += p
                    count[idx] += 1
    finally:
        model.train(was_training)
    covered = scored[count[scored] > 0]
    pred = denormalize(total[covered] / count[covered, None], norm).astype(np.float64)
    return _result("offline", session.behavior_labels, bt[covered], session.behavior[covered].astype(np.float64),
                   pred, stride_s=stride_s)


def load_decoder(path: str | Path, device: torch.device | str = "cpu", *, readout: str | None = None
                 ) -> tuple[POYO, Normalization, dict]:
    """Load a checkpoint for decoding: ``(model in eval mode, behaviour normalisation, poyo_rt metadata)``.

    The readout is ``readout`` when given, else ``hyper_parameters["poyo_rt"]["readout"]`` (default
    ``hand_velocity_2d`` for a checkpoint without one, e.g. torch_brain's); without a stored normalisation the
    identity is used.
    """
    ckpt = read_checkpoint(path)
    meta = dict(ckpt["hyper_parameters"].get("poyo_rt") or {})
    readout = readout or meta.get("readout") or "hand_velocity_2d"
    if readout not in MODALITY_REGISTRY:
        raise ValueError(f"{path}: checkpoint readout {readout!r} is not a registered modality")
    spec = MODALITY_REGISTRY[readout]
    model = POYO.load_pretrained(path, readout_spec=spec).to(device).eval()
    norm_dict = meta.get("behavior_norm")
    norm = Normalization.from_dict(norm_dict) if norm_dict else Normalization.identity(spec.dim)
    return model, norm, meta

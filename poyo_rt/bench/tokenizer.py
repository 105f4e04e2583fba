"""Tokenizer benchmark: the incremental tokenizer's cost per tick against re-tokenizing every window.

Ticks at 50 Hz over 100 units of Poisson spikes, for windows of 0.5, 1, 2 and 4 s, in two sweeps:

* **fixed rate** (default 2,000 spikes/s): a window holds ``rate x window`` spikes while the spikes
  arriving and leaving per tick stay the same, so the incremental cost must stay flat;
* **2,000 spikes a window**: the rate is ``2000 / window`` (the issue's target: p99 <= 50 µs).

Timed per tick, same process, same spikes, the paths taking turns in blocks of 100 ticks (the first 2 ticks
of a block, which start with the previous path's data in the caches, are run but not timed; inside the
engine every tick starts after a forward, so `poyo-rt bench e2e` reports the in-loop cost too):

* ``poyo_rt incremental``: :meth:`IncrementalTokenizer.update` (the buffer's consume included);
* ``torch_brain tokenize`` (the baseline, where torch_brain is installed): slice the window, call
  torch_brain's ``POYO.tokenize`` and its ``collate`` into padded batch-1 arrays, as a decoder built
  directly on torch_brain would each tick;
* ``naive numpy``: the same re-tokenization with poyo_rt's batch functions into preallocated arrays
  (no torch_brain), the floor of any re-tokenizing approach.

Every tick the token count of the incremental arrays is checked against the re-tokenized window.
"""

from __future__ import annotations

import gc
import logging
import time
from types import SimpleNamespace
from typing import Callable

import numpy as np

from poyo_rt.bench.common import Timing, poisson_spikes, with_ratios
from poyo_rt.model.tokens import create_linspace_latent_tokens, create_start_end_unit_tokens
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer, round_up8

log = logging.getLogger(__name__)

TICK_HZ = 50.0
LATENT_STEP_S = 0.125
LATENTS_PER_STEP = 16
WINDOWS_S = (0.5, 1.0, 2.0, 4.0)
BLOCK = 100  # ticks a path runs in a row before the next path takes the same ticks
REWARM = 2  # ticks at the start of each block not timed (their caches still hold the previous path's data)
T0 = 73_412.0  # an LSL clock a day into uptime


def _torch_brain_tokenizer(n_units: int, window_s: float):
    """``(tokenize, collate)`` of a small torch_brain POYO with ``n_units`` units, or None without torch_brain."""
    try:
        from torch_brain.batching.collate import collate
        from torch_brain.models import POYO as TBPOYO
    except ImportError:
        return None
    model = TBPOYO(sequence_length=window_s, latent_step=LATENT_STEP_S, num_latents_per_step=LATENTS_PER_STEP,
                   dim_out=2, dim=32, depth=0, dim_head=16, cross_heads=1, self_heads=1)
    model.unit_emb.initialize_vocab([f"unit{i}" for i in range(n_units)])
    model.session_emb.initialize_vocab(["session0"])
    return model.tokenize, collate


def _naive_tick(times, units, vocab, ws, t_end, window_s, out) -> int:
    """Offline tokenization of the whole window into padded arrays with numpy (no torch_brain)."""
    lo = np.searchsorted(times, ws, side="left")
    hi = np.searchsorted(times, t_end, side="left")
    se_type, se_unit, se_ts = create_start_end_unit_tokens(out["unit_ids"], 0.0, window_s)
    n = se_ts.shape[0] + hi - lo
    out["unit"][0, :n] = vocab[np.concatenate([se_unit, units[lo:hi]])]
    out["type"][0, :n] = np.concatenate([se_type, np.zeros(hi - lo, dtype=np.int64)])
    out["ts"][0, :n] = np.concatenate([se_ts, times[lo:hi] - ws])
    out["mask"][0, :n] = True
    out["mask"][0, n:] = False
    out["lat_idx"][0], out["lat_ts"][0] = create_linspace_latent_tokens(0.0, window_s, LATENT_STEP_S, LATENTS_PER_STEP)
    return n


def run_window(window_s: float, rate_hz: float, *, n_units: int = 100, ticks: int = 1000, burn_in: int = 100,
               seed: int = 0) -> dict:
    """Time ``ticks`` ticks of one window length (after ``burn_in`` untimed ones)."""
    rng = np.random.default_rng(seed)
    total = burn_in + ticks
    times, units = poisson_spikes(rng, rate_hz, window_s + total / TICK_HZ + 1.0, n_units, t0=T0)
    max_spikes = int(rate_hz * window_s * 1.5) + 256
    vocab = np.arange(1, n_units + 1, dtype=np.int64)  # torch_brain's vocab: "NA" at 0, unit i at i + 1
    tok = IncrementalTokenizer(window_s=window_s, latent_step_s=LATENT_STEP_S, num_latents_per_step=LATENTS_PER_STEP,
                               unit_vocab_index=vocab, session_vocab_index=1, max_spikes=max_spikes)
    buf = SpikeBuffer(capacity=max(4 * max_spikes, 1 << 14), n_units=n_units)
    n_in = round_up8(2 * n_units + max_spikes)
    naive_out = {"unit": np.zeros((1, n_in), np.int64), "type": np.zeros((1, n_in), np.int64),
                 "ts": np.zeros((1, n_in), np.float64), "mask": np.zeros((1, n_in), bool),
                 "lat_idx": np.zeros_like(tok.latent_index), "lat_ts": np.zeros_like(tok.latent_timestamps),
                 "unit_ids": list(range(n_units))}
    tb = _torch_brain_tokenizer(n_units, window_s)
    unit_names = np.array([f"unit{i}" for i in range(n_units)])

    labels = (["torch_brain tokenize"] if tb else []) + ["naive numpy", "poyo_rt incremental"]
    samples = {label: np.empty(ticks) for label in labels}
    n_spikes = np.empty(ticks)
    state = {}

    def incremental() -> int:
        info = tok.update(state["t_end"], buf)
        state["info"] = info
        return info.n_input_tokens

    def naive() -> int:
        return _naive_tick(times, units, vocab, state["ws"], state["t_end"], window_s, naive_out)

    def torch_brain() -> int:
        tokenize, collate = tb
        lo, hi = np.searchsorted(times, (state["ws"], state["t_end"]), side="left")
        window = SimpleNamespace(units=SimpleNamespace(id=unit_names), session=SimpleNamespace(id="session0"),
                                 spikes=SimpleNamespace(timestamps=times[lo:hi] - state["ws"], unit_index=units[lo:hi]))
        batch = collate([tokenize(window)])
        return int(batch["input_mask"].sum())

    fns: dict[str, Callable[[], int]] = {"torch_brain tokenize": torch_brain, "naive numpy": naive,
                                         "poyo_rt incremental": incremental}
    t_ends = T0 + window_s + np.arange(total) / TICK_HZ
    counts = {label: np.empty(total, dtype=np.int64) for label in labels}
    sent = 0
    gc_was = gc.isenabled()
    gc.disable()  # the engine's own loop is timed with the collector on: see `poyo-rt bench e2e`
    try:
        # blocks of BLOCK ticks, each path in turn: drifting load hits all paths alike, while each path
        # runs warm (as the tokenizer does in the engine, tick after tick) instead of after another's work
        for b0 in range(0, total, BLOCK):
            for label in labels:
                fn = fns[label]
                for k in range(b0, min(b0 + BLOCK, total)):
                    state["t_end"], state["ws"] = t_ends[k], t_ends[k] - window_s
                    if label == "poyo_rt incremental":  # spikes reach the buffer just before the tick
                        upto = int(np.searchsorted(times, t_ends[k] + 0.005, side="left"))
                        if upto > sent:
                            buf.append(times[sent:upto], units[sent:upto])
                            sent = upto
                    a = time.perf_counter_ns()
                    counts[label][k] = fn()
                    took = (time.perf_counter_ns() - a) / 1e3
                    if k >= burn_in:
                        samples[label][k - burn_in] = took if k - b0 >= REWARM else np.nan
                        if label == "poyo_rt incremental":
                            n_spikes[k - burn_in] = state["info"].n_spikes
    finally:
        if gc_was:
            gc.enable()
    for label in labels[:-1]:
        bad = np.flatnonzero(counts[label] != counts["poyo_rt incremental"])
        if bad.size:
            raise RuntimeError(f"token counts differ at tick {bad[0]}: {label} {counts[label][bad[0]]}, "
                               f"incremental {counts['poyo_rt incremental'][bad[0]]}")
    timings = [Timing(label, samples[label][np.isfinite(samples[label])]) for label in labels]
    return {"window_s": window_s, "rate_hz": rate_hz, "mean_spikes_per_window": float(n_spikes.mean()),
            "token_overflow": tok.counters["token_overflow"], "timings": with_ratios(timings),
            "baseline": labels[0]}


def run_tokenizer_bench(*, n_units: int = 100, ticks: int = 1000, burn_in: int = 100, rate_hz: float = 2000.0,
                        spikes_per_window: int = 2000, windows_s: tuple[float, ...] = WINDOWS_S, seed: int = 0,
                        progress: Callable[[str], None] = log.info) -> dict:
    """Both sweeps (see the module docstring); returns ``{"fixed_rate": [...], "fixed_count": [...]}``."""
    out = {"fixed_rate": [], "fixed_count": []}
    for w in windows_s:
        out["fixed_rate"].append(run_window(w, rate_hz, n_units=n_units, ticks=ticks, burn_in=burn_in, seed=seed))
        progress(f"tokenizer: {w:g} s window at {rate_hz:g} spikes/s done")
        out["fixed_count"].append(run_window(w, spikes_per_window / w, n_units=n_units, ticks=ticks, burn_in=burn_in,
                                             seed=seed))
        progress(f"tokenizer: {w:g} s window with {spikes_per_window} spikes done")
    return out


def format_tokenizer_table(results: dict) -> str:
    """Two aligned tables (fixed rate, fixed count): µs per tick by window and path, ratios vs the baseline."""
    lines = []
    titles = {"fixed_rate": "fixed population rate", "fixed_count": "fixed spikes per window"}
    for key, rows in results.items():
        if not rows:
            continue
        lines.append(f"{titles[key]} (spikes a window shown); µs per tick")
        lines.append(f"{'window s':>8} {'spikes':>7} {'path':<22} {'median':>8} {'p99':>8} {'p99.9':>8} "
                     f"{'x baseline (p50)':>17} {'x (p99)':>8}")
        for r in rows:
            for t in r["timings"]:
                lines.append(f"{r['window_s']:>8g} {r['mean_spikes_per_window']:>7.0f} {t['name']:<22} "
                             f"{t['median_us']:>8.1f} {t['p99_us']:>8.1f} {t['p999_us']:>8.1f} "
                             f"{t['ratio_median_vs_baseline']:>17.2f} {t['ratio_p99_vs_baseline']:>8.2f}")
        inc = [next(t for t in r["timings"] if t["name"] == "poyo_rt incremental") for r in rows]
        lines.append(f"incremental p99 from {rows[0]['window_s']:g} s to {rows[-1]['window_s']:g} s: "
                     f"{inc[0]['p99_us']:.1f} -> {inc[-1]['p99_us']:.1f} µs (x{inc[-1]['p99_us'] / inc[0]['p99_us']:.2f})")
        lines.append("")
    return "\n".join(lines).rstrip()

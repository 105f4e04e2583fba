"""Benchmark: incremental tokenizer cost per tick vs window length, against naive re-tokenization.

Two sweeps over window lengths 0.5, 1, 2, 4 s (ticks at 50 Hz, 100 units, Poisson spikes):
  - fixed population rate (default 2,000 spikes/s): window holds rate * window spikes, and the
    spikes arriving/expiring per tick stay fixed -> the incremental cost must stay flat;
  - 2,000 spikes per window: the rate is 2000 / window.
Timed region: ``IncrementalTokenizer.update`` (buffer consume included; the LSL pull's append is
not). Baseline, same process and data: full offline tokenization of the window per tick with the
batch functions of ``poyo_rt.model.tokens`` (as ``POYO.tokenize`` does), padded into arrays.

    python tools/bench_tokenizer.py [--ticks 3000] [--burn-in 300] [--units 100]
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from poyo_rt.model.tokens import create_linspace_latent_tokens, create_start_end_unit_tokens
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer, round_up8

TICK_HZ = 50.0
LATENT_STEP_S = 0.125
LATENTS_PER_STEP = 8
T0 = 73_412.0


def poisson_stream(rng: np.random.Generator, rate_hz: float, duration_s: float, n_units: int):
    n = rng.poisson(rate_hz * duration_s)
    times = T0 + np.sort(rng.uniform(0.0, duration_s, n))
    return times, rng.integers(0, n_units, n)


def naive_tick(times, units, vocab, unit_ids, ws, t_end, window_s, out) -> int:
    """Offline tokenization of the whole window into padded arrays (the baseline)."""
    lo = np.searchsorted(times, ws, side="left")
    hi = np.searchsorted(times, t_end, side="left")
    se_type, se_unit, se_ts = create_start_end_unit_tokens(unit_ids, 0.0, window_s)
    token_type = np.concatenate([se_type, np.zeros(hi - lo, dtype=np.int64)])
    unit = vocab[np.concatenate([se_unit, units[lo:hi]])]
    ts = np.concatenate([se_ts, times[lo:hi] - ws])
    lat_idx, lat_ts = create_linspace_latent_tokens(0.0, window_s, LATENT_STEP_S, LATENTS_PER_STEP)
    n = ts.shape[0]
    out["unit"][0, :n] = unit
    out["type"][0, :n] = token_type
    out["ts"][0, :n] = ts
    out["mask"][0, :n] = True
    out["mask"][0, n:] = False
    out["lat_idx"][0] = lat_idx
    out["lat_ts"][0] = lat_ts
    return n


def run(window_s: float, rate_hz: float, n_units: int, n_ticks: int, burn_in: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    total = burn_in + n_ticks
    duration = window_s + total / TICK_HZ + 1.0
    times, units = poisson_stream(rng, rate_hz, duration, n_units)
    vocab = rng.permutation(10 * n_units)[:n_units].astype(np.int64)
    max_spikes = int(rate_hz * window_s * 1.5) + 256
    tok = IncrementalTokenizer(
        window_s=window_s, latent_step_s=LATENT_STEP_S, num_latents_per_step=LATENTS_PER_STEP,
        unit_vocab_index=vocab, session_vocab_index=0, max_spikes=max_spikes,
    )
    buf = SpikeBuffer(capacity=max(4 * max_spikes, 1 << 14), n_units=n_units)
    n_in = round_up8(2 * n_units + max_spikes)
    naive_out = {
        "unit": np.zeros((1, n_in), np.int64), "type": np.zeros((1, n_in), np.int64),
        "ts": np.zeros((1, n_in), np.float64), "mask": np.zeros((1, n_in), bool),
        "lat_idx": np.zeros_like(tok.latent_index), "lat_ts": np.zeros_like(tok.latent_timestamps),
    }
    unit_ids = list(range(n_units))
    inc_ns = np.empty(n_ticks, dtype=np.int64)
    naive_ns = np.empty(n_ticks, dtype=np.int64)
    n_spikes = np.empty(n_ticks, dtype=np.int64)
    sent = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k in range(total):
            t_end = T0 + window_s + k / TICK_HZ
            upto = int(np.searchsorted(times, t_end + 0.005, side="left"))  # pull slightly ahead
            if upto > sent:
                buf.append(times[sent:upto], units[sent:upto])
                sent = upto
            a = time.perf_counter_ns()
            info = tok.update(t_end, buf)
            b = time.perf_counter_ns()
            ws = info.window_start_s
            n_naive = naive_tick(times, units, vocab, unit_ids, ws, t_end, window_s, naive_out)
            c = time.perf_counter_ns()
            if n_naive != info.n_input_tokens:
                raise RuntimeError(f"token count mismatch at tick {k}: {n_naive} != {info.n_input_tokens}")
            if k >= burn_in:
                inc_ns[k - burn_in] = b - a
                naive_ns[k - burn_in] = c - b
                n_spikes[k - burn_in] = info.n_spikes
    finally:
        if gc_was:
            gc.enable()
    return {
        "window_s": window_s,
        "spikes": float(np.mean(n_spikes)),
        "inc_med": np.median(inc_ns) / 1e3, "inc_p99": np.percentile(inc_ns, 99) / 1e3,
        "naive_med": np.median(naive_ns) / 1e3, "naive_p99": np.percentile(naive_ns, 99) / 1e3,
        "overflow": tok.counters["token_overflow"],
    }


def report(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    cols = ("window_s", "spikes/win", "inc med us", "inc p99 us", "med/0.5s", "p99/0.5s",
            "naive med", "naive p99", "naive/inc med")
    print(" ".join(f"{c:>10}" for c in cols))
    base_med, base_p99 = rows[0]["inc_med"], rows[0]["inc_p99"]
    for r in rows:
        vals = (r["window_s"], r["spikes"], r["inc_med"], r["inc_p99"], r["inc_med"] / base_med,
                r["inc_p99"] / base_p99, r["naive_med"], r["naive_p99"], r["naive_med"] / r["inc_med"])
        print(" ".join(f"{v:>10.1f}" if i not in (4, 5) else f"{v:>10.2f}" for i, v in enumerate(vals)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=3000)
    ap.add_argument("--burn-in", type=int, default=300)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--rate-hz", type=float, default=2000.0, help="population rate of the fixed-rate sweep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    windows = (0.5, 1.0, 2.0, 4.0)
    print(f"ticks={args.ticks} burn_in={args.burn_in} units={args.units} tick_hz={TICK_HZ:g} "
          f"latents={LATENTS_PER_STEP}/{LATENT_STEP_S:g}s")
    report(f"fixed population rate {args.rate_hz:g} spikes/s",
           [run(w, args.rate_hz, args.units, args.ticks, args.burn_in, args.seed) for w in windows])
    report("2,000 spikes per window",
           [run(w, 2000.0 / w, args.units, args.ticks, args.burn_in, args.seed) for w in windows])


if __name__ == "__main__":
    main()

"""IncrementalTokenizer equals offline tokenization of the same window, tick after tick.

Offline reference: spikes with ``window_start <= t < t_end``, times ``t - window_start``, START/END
tokens from :func:`poyo_rt.model.tokens.create_start_end_unit_tokens` and latents from
``create_linspace_latent_tokens`` on ``[0, window_s)``, as torch_brain's ``POYO.tokenize`` does.
Tokens are compared as multisets of (vocab unit, type, window-relative time).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from poyo_rt.model.tokens import create_linspace_latent_tokens, create_start_end_unit_tokens
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer, TickTokens, bucket_for, output_offsets

TOL_S = 1e-9
T0 = 73_412.123_456  # an LSL clock a day into uptime
FS = 30_000.0  # spike times on a 30 kHz sample grid: equal timestamps happen


# ---------------------------------------------------------------- simulation
def simulate(rng: np.random.Generator, duration_s: float, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson population at 5-40 Hz with bursts (x4) and silent periods; sorted absolute times."""
    rates = rng.uniform(5.0, 40.0, n_units)
    bursts = [(5.0, 5.3), (21.0, 21.2), (40.0, 40.5), (55.0, 55.1)]
    silences = [(12.0, 13.5), (30.0, 30.4), (47.0, 50.0)]
    gain_max = 4.0
    times, units = [], []
    for u in range(n_units):
        n = rng.poisson(rates[u] * gain_max * duration_s)
        t = rng.uniform(0.0, duration_s, n)
        gain = np.ones(n)
        for a, b in bursts:
            gain[(t >= a) & (t < b)] = gain_max
        for a, b in silences:
            gain[(t >= a) & (t < b)] = 0.0
        t = t[rng.uniform(0.0, gain_max, n) < gain]
        times.append(T0 + np.round(t * FS) / FS)
        units.append(np.full(t.shape[0], u, dtype=np.int64))
    t_all = np.concatenate(times)
    u_all = np.concatenate(units)
    order = np.argsort(t_all, kind="stable")
    return t_all[order], u_all[order]


def max_window_count(times: np.ndarray, window_s: float) -> int:
    return int(np.max(np.searchsorted(times, times + window_s, side="left") - np.arange(times.shape[0])))


# ---------------------------------------------------------------- reference
def offline_tokens(
    times: np.ndarray, units: np.ndarray, vocab: np.ndarray, ws: float, t_end: float, window_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocab unit, type, window-relative time) of offline tokenization, sorted."""
    lo = np.searchsorted(times, ws, side="left")
    hi = np.searchsorted(times, t_end, side="left")
    mapped = np.flatnonzero(vocab >= 0)
    se_type, se_local, se_ts = create_start_end_unit_tokens(list(mapped), 0.0, window_s)
    unit = np.concatenate([vocab[mapped][se_local], vocab[units[lo:hi]]])
    ttype = np.concatenate([se_type, np.zeros(hi - lo, dtype=np.int64)])
    ts = np.concatenate([se_ts, times[lo:hi] - ws])
    return _sorted(unit, ttype, ts)


def _sorted(unit: np.ndarray, ttype: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((ts, ttype, unit))
    return unit[order], ttype[order], ts[order]


def incremental_tokens(tok: IncrementalTokenizer, info: TickTokens):
    """Masked-in tokens as (vocab unit, type, window-relative time), sorted."""
    mask = tok.input_mask[0]
    n = info.n_input_tokens
    assert mask[:n].all() and not mask[n:].any(), "live tokens must be compact in [0, n_input_tokens)"
    shift = info.window_start_s - info.origin_s
    ts = tok.input_timestamps[0, mask] - shift
    return _sorted(tok.input_unit_index[0, mask], tok.input_token_type[0, mask], ts)


def assert_same_tokens(got, want) -> None:
    assert got[0].shape == want[0].shape
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], rtol=0, atol=TOL_S)


def assert_latents_outputs(tok, info: TickTokens, window_s: float, step: float, n_lat: int) -> None:
    shift = info.window_start_s - info.origin_s
    lat_idx, lat_ts = create_linspace_latent_tokens(0.0, window_s, step, n_lat)
    np.testing.assert_array_equal(tok.latent_index[0], lat_idx)
    np.testing.assert_allclose(tok.latent_timestamps[0] - shift, lat_ts, rtol=0, atol=TOL_S)
    np.testing.assert_allclose(tok.output_timestamps[0] - shift, tok._output_offsets, rtol=0, atol=TOL_S)


# ---------------------------------------------------------------- the streaming drive
def drive(
    tok: IncrementalTokenizer,
    buf: SpikeBuffer,
    times: np.ndarray,
    units: np.ndarray,
    tick_ends: np.ndarray,
    rng: np.random.Generator,
    scribble: bool = False,
):
    """Deliver spikes in random chunks (some beyond t_end stay pending) and tick; yield per tick."""
    sent = 0
    n_total = times.shape[0]
    for t_end in tick_ends:
        upto = np.searchsorted(times, t_end + rng.uniform(0.0, 0.03), side="left")
        while sent < upto:  # a few LSL pulls of random size
            k = min(upto - sent, int(rng.integers(1, 200)))
            assert buf.append(times[sent : sent + k], units[sent : sent + k].astype(np.int32)) == k
            sent += k
        info = tok.update(float(t_end), buf)
        yield info
        if scribble:  # padding slots must never be read back
            n = info.n_input_tokens
            tok.input_timestamps[0, n:] = np.nan
            tok.input_unit_index[0, n:] = -7
            tok.input_token_type[0, n:] = 9
    assert sent <= n_total


@pytest.mark.parametrize(
    ("window_s", "step", "scribble"), [(1.0, 0.125, True), (0.5, 0.125, False), (2.0, 0.25, False)]
)
def test_equals_offline_every_tick(window_s: float, step: float, scribble: bool):
    rng = np.random.default_rng(int(window_s * 1000))
    n_units = 80
    duration = 62.0
    times, units = simulate(rng, duration, n_units)
    vocab = rng.permutation(1000)[:n_units].astype(np.int64)
    cap = max_window_count(times, window_s) + 8
    tok = IncrementalTokenizer(
        window_s=window_s,
        latent_step_s=step,
        num_latents_per_step=4,
        unit_vocab_index=vocab,
        session_vocab_index=3,
        max_spikes=cap,
        rebase_horizon_s=20.0,
    )
    buf = SpikeBuffer(capacity=times.shape[0] // 4, n_units=n_units)
    arrays_before = {k: v for k, v in tok.arrays().items()}
    tick_ends = T0 + 0.3 + np.arange(int((duration - 0.5) * 50)) * 0.02  # 50 Hz
    n_ticks = n_rebased = n_empty = 0
    for info in drive(tok, buf, times, units, tick_ends, rng, scribble):
        want = offline_tokens(times, units, vocab, info.window_start_s, info.t_end_s, window_s)
        assert_same_tokens(incremental_tokens(tok, info), want)
        assert_latents_outputs(tok, info, window_s, step, 4)
        assert info.n_token_overflow == 0
        assert info.n_input_tokens == 2 * n_units + info.n_spikes
        in_win = times[(times >= info.window_start_s) & (times < info.t_end_s)]
        if in_win.size:
            assert info.newest_spike_s == in_win[-1]
        else:
            assert math.isnan(info.newest_spike_s)
            n_empty += 1
        n_ticks += 1
        n_rebased += info.rebased
    assert n_ticks >= 3000 and n_rebased >= 2 and n_empty > 0  # silent periods and rebases were hit
    assert tok.counters["token_overflow"] == 0 and buf.drops["overflow"] == 0
    assert all(tok.arrays()[k] is v for k, v in arrays_before.items())  # updated in place
    np.testing.assert_array_equal(tok.output_session_index, 3)


def test_matches_torch_brain_reference():
    tb = pytest.importorskip("torch_brain.models.poyo")
    window_s, step, n_lat = 1.0, 0.125, 8
    vocab = np.array([5, 9, 2, 11], dtype=np.int64)
    tok = IncrementalTokenizer(
        window_s=window_s, latent_step_s=step, num_latents_per_step=n_lat, unit_vocab_index=vocab,
        session_vocab_index=0, max_spikes=32,
    )
    buf = SpikeBuffer(capacity=64, n_units=4)
    t_sp = T0 + np.array([0.1, 0.35, 0.35, 0.9, 1.2, 1.7])
    u_sp = np.array([0, 3, 1, 2, 0, 3])
    buf.append(t_sp, u_sp)
    t_end = T0 + 1.5
    info = tok.update(t_end, buf)
    ws = t_end - window_s
    sel = (t_sp >= ws) & (t_sp < t_end)
    se_type, se_unit, se_ts = tb.create_start_end_unit_tokens(np.array(["a", "b", "c", "d"]), 0.0, window_s)
    want = _sorted(
        np.concatenate([vocab[se_unit], vocab[u_sp[sel]]]),
        np.concatenate([se_type, np.zeros(sel.sum(), dtype=np.int64)]),
        np.concatenate([se_ts, t_sp[sel] - ws]),
    )
    assert_same_tokens(incremental_tokens(tok, info), want)
    lat_idx, lat_ts = tb.create_linspace_latent_tokens(0.0, window_s, step, n_lat)
    shift = info.window_start_s - info.origin_s
    np.testing.assert_array_equal(tok.latent_index[0], lat_idx)
    np.testing.assert_allclose(tok.latent_timestamps[0] - shift, lat_ts, rtol=0, atol=TOL_S)
    np.testing.assert_allclose(tok.output_timestamps[0] - shift, [window_s], rtol=0, atol=TOL_S)


def _small(max_spikes: int, window_s: float = 1.0, **kw) -> IncrementalTokenizer:
    return IncrementalTokenizer(
        window_s=window_s, latent_step_s=0.25, num_latents_per_step=2,
        unit_vocab_index=np.arange(3, dtype=np.int64) + 10, session_vocab_index=1, max_spikes=max_spikes,
        **kw,
    )


def test_overflow_drops_oldest_counts_flags_and_recovers():
    rng = np.random.default_rng(7)
    cap = 40
    tok = _small(cap)
    buf = SpikeBuffer(capacity=10_000, n_units=3)
    # sparse background, a 100-spike burst inside 50 ms at t=3.0, sparse again
    bg = np.sort(rng.uniform(0.0, 8.0, 60))
    burst = np.sort(rng.uniform(3.0, 3.05, 100))
    times = T0 + np.round(np.sort(np.concatenate([bg, burst])) * FS) / FS
    units = rng.integers(0, 3, times.shape[0])
    vocab = tok.unit_vocab_index
    total_over = 0
    flagged = 0
    for info in drive(tok, buf, times, units, T0 + 0.5 + np.arange(350) * 0.02, rng):
        lo = np.searchsorted(times, info.window_start_s, side="left")
        hi = np.searchsorted(times, info.t_end_s, side="left")
        lo_kept = max(lo, hi - cap)  # the newest `cap` spikes of the window survive
        want = offline_tokens(
            times[lo_kept:hi], units[lo_kept:hi], vocab, info.window_start_s, info.t_end_s, 1.0
        )
        assert_same_tokens(incremental_tokens(tok, info), want)
        assert info.n_spikes == hi - lo_kept <= cap
        total_over += info.n_token_overflow
        flagged += info.overflow
    assert flagged > 0 and total_over == tok.counters["token_overflow"] > 0
    # after the burst left the window, decoding is exact again: the last ticks hold every spike
    assert info.n_spikes == np.count_nonzero((times >= info.window_start_s) & (times < info.t_end_s))


@pytest.mark.parametrize("cap", [40, 10_000])
def test_early_update_then_the_rest_equals_one_update(cap: int):
    """The engine tokenizes each tick early (before its deadline, with the spikes so far), then again at the
    deadline with the ones that came in meanwhile. Per tick, the window, its tokens and the merged counts
    (TickTokens.after) equal one update with every spike, also through an overflowing burst and a stalled stream."""
    rng = np.random.default_rng(11)
    bg = np.sort(rng.uniform(0.0, 8.0, 400))
    burst = np.sort(rng.uniform(3.0, 3.05, 100))
    times = T0 + np.round(np.sort(np.concatenate([bg, burst])) * FS) / FS
    units = rng.integers(0, 3, times.shape[0]).astype(np.int32)
    one, two = _small(cap, rebase_horizon_s=2.0), _small(cap, rebase_horizon_s=2.0)  # rebases every ~2 s
    buf_one, buf_two = SpikeBuffer(capacity=10_000, n_units=3), SpikeBuffer(capacity=10_000, n_units=3)
    sent = 0
    n_late = 0
    for t_end in T0 + 0.5 + np.arange(350) * 0.02:
        early = np.searchsorted(times, t_end - rng.uniform(0.0, 0.015), side="left")  # in by the early update
        late = np.searchsorted(times, t_end, side="left")  # in by the tick
        if rng.uniform() < 0.05:  # a stalled stream: this tick gets none, the next gets them
            early = late = sent
        buf_two.append(times[sent:early], units[sent:early])
        first = two.update(float(t_end), buf_two)
        buf_two.append(times[early:late], units[early:late])
        merged = two.update(float(t_end), buf_two).after(first)
        buf_one.append(times[sent:late], units[sent:late])
        want = one.update(float(t_end), buf_one)
        n_late += late - early
        sent = late
        if want.n_token_overflow == 0:
            assert merged == want
        else:  # n_new also counts spikes taken in early that the tick's overflow dropped again
            assert merged._replace(n_new=want.n_new) == want
            assert want.n_new <= merged.n_new <= want.n_new + want.n_token_overflow
        assert_same_tokens(incremental_tokens(two, merged), incremental_tokens(one, want))
        np.testing.assert_array_equal(two.latent_timestamps, one.latent_timestamps)
        np.testing.assert_array_equal(two.output_timestamps, one.output_timestamps)
    assert n_late > 50 and two.counters == one.counters
    if cap == 40:
        assert one.counters["token_overflow"] > 0
    with pytest.raises(ValueError, match="different window ends"):
        want.after(first._replace(t_end_s=first.t_end_s - 0.02))


def test_burst_larger_than_capacity_in_one_tick():
    tok = _small(8)
    buf = SpikeBuffer(capacity=100, n_units=3)
    times = T0 + np.linspace(0.1, 0.9, 30)
    buf.append(times, np.arange(30) % 3)
    info = tok.update(T0 + 1.0, buf)
    assert info.n_token_overflow == 22 and info.n_spikes == 8 and info.overflow
    got = incremental_tokens(tok, info)
    units = np.arange(30)[-8:] % 3
    want = offline_tokens(times[-8:], units, tok.unit_vocab_index, info.window_start_s, info.t_end_s, 1.0)
    assert_same_tokens(got, want)


def test_t_end_backwards_raises_and_equal_is_a_noop():
    tok = _small(16)
    buf = SpikeBuffer(capacity=16, n_units=3)
    buf.append(T0 + np.array([0.1, 0.2]), np.array([0, 1]))
    a = tok.update(T0 + 1.0, buf)
    b = tok.update(T0 + 1.0, buf)
    assert a.n_spikes == b.n_spikes == 2 and b.n_new == 0 and b.n_expired == 0
    with pytest.raises(ValueError, match="t_end_s"):
        tok.update(T0 + 0.99, buf)
    with pytest.raises(ValueError, match="t_end_s"):
        tok.update(float("nan"), buf)


def test_long_gap_expires_everything_and_skips_stale():
    tok = _small(64)
    buf = SpikeBuffer(capacity=256, n_units=3)
    buf.append(T0 + np.linspace(0.0, 0.9, 50), np.arange(50) % 3)
    info = tok.update(T0 + 1.0, buf)
    assert info.n_spikes == 50
    buf.append(T0 + np.linspace(1.0, 1.5, 20), np.arange(20) % 3)  # never ticked over: go stale
    buf.append(T0 + np.array([600.2, 600.7]), np.array([0, 2]))
    info = tok.update(T0 + 601.0, buf)
    assert info.n_expired == 50 and info.n_stale == 20 and info.n_spikes == 2 and info.rebased
    want = offline_tokens(T0 + np.array([600.2, 600.7]), np.array([0, 2]), tok.unit_vocab_index,
                          info.window_start_s, info.t_end_s, 1.0)
    assert_same_tokens(incremental_tokens(tok, info), want)
    assert tok.counters["stale_spike"] == 20


def test_rebase_leaves_window_unchanged():
    tok = _small(64, rebase_horizon_s=2.0)
    buf = SpikeBuffer(capacity=256, n_units=3)
    times = T0 + np.arange(0.0, 3.0, 0.037)
    units = np.arange(times.shape[0]) % 3
    buf.append(times, units)
    seen = []
    for t_end in T0 + np.arange(1.0, 3.0, 0.1):
        info = tok.update(float(t_end), buf)
        seen.append(info.rebased)
        want = offline_tokens(times, units, tok.unit_vocab_index, info.window_start_s, info.t_end_s, 1.0)
        assert_same_tokens(incremental_tokens(tok, info), want)
        live = tok.input_timestamps[0, : info.n_input_tokens]
        assert live.min() >= 0.0 and live.max() <= tok.rebase_horizon_s  # documented range
    assert sum(seen) >= 2 and tok.counters["rebase"] >= 1


def test_window_times_at_predicts_the_next_update_bit_for_bit():
    """What a runner prepares between ticks is keyed on these times: they must be the ones update() writes,
    exactly, for ticks on an irregular grid; after a rebase the origin moved and they differ (as documented)."""
    tok = _small(64, rebase_horizon_s=2.0)
    buf = SpikeBuffer(capacity=256, n_units=3)
    buf.append(T0 + np.arange(0.0, 4.0, 0.031), np.arange(130) % 3)
    rng = np.random.default_rng(5)
    t_end, exact = T0 + 1.0, 0
    tok.update(t_end, buf)
    for _ in range(120):
        t_end += float(rng.uniform(0.001, 0.04))
        predicted = tok.window_times_at(t_end)
        info = tok.update(t_end, buf)
        se = tok.input_timestamps[0, : tok.n_start_end]
        same = (np.array_equal(predicted.latent_timestamps, tok.latent_timestamps)
                and np.all(se[0::2] == predicted.start_s) and np.all(se[1::2] == predicted.end_s))
        assert same != info.rebased, t_end
        exact += same
    assert exact > 100


def test_unmapped_units_need_the_buffer_map():
    vocab = np.array([4, -1, 6], dtype=np.int64)
    tok = IncrementalTokenizer(
        window_s=1.0, latent_step_s=0.5, num_latents_per_step=1, unit_vocab_index=vocab,
        session_vocab_index=0, max_spikes=8,
    )
    assert tok.n_start_end == 4 and tok.n_in == 16
    with pytest.raises(ValueError, match="unit_map"):
        tok.update(T0, SpikeBuffer(capacity=8, n_units=3))
    with pytest.raises(ValueError, match="n_units"):
        tok.update(T0, SpikeBuffer(capacity=8, n_units=4, unit_map=np.array([4, -1, 6, 7])))
    buf = SpikeBuffer(capacity=8, n_units=3, unit_map=vocab)
    t_sp = T0 + np.array([0.1, 0.2, 0.3])
    buf.append(t_sp, np.array([0, 1, 2]))
    assert buf.drops["unmapped_unit"] == 1
    info = tok.update(T0 + 0.5, buf)
    want = offline_tokens(t_sp[[0, 2]], np.array([0, 2]), vocab, info.window_start_s, info.t_end_s, 1.0)
    assert_same_tokens(incremental_tokens(tok, info), want)


def test_reset_forgets_state():
    tok = _small(16)
    buf = SpikeBuffer(capacity=16, n_units=3)
    buf.append(T0 + np.array([0.5]), np.array([1]))
    tok.update(T0 + 1.0, buf)
    tok.reset()
    info = tok.update(T0 + 0.2, SpikeBuffer(capacity=16, n_units=3))  # earlier time is fine now
    assert info.n_spikes == 0 and not tok.input_mask[0, tok.n_start_end :].any()


def test_outputs_and_constructor_validation():
    np.testing.assert_allclose(output_offsets(1.0, 1, 0.1, None), [0.9])
    np.testing.assert_allclose(output_offsets(1.0, 3, 0.0, 0.02), [0.96, 0.98, 1.0])
    with pytest.raises(ValueError, match="output_spacing_s"):
        output_offsets(1.0, 3, 0.0, None)
    with pytest.raises(ValueError, match="output_lag_s"):
        output_offsets(1.0, 1, 1.5, None)
    with pytest.raises(ValueError, match="max_spikes"):
        _small(0)
    with pytest.raises(ValueError, match="rebase_horizon_s"):
        _small(8, rebase_horizon_s=1.0)
    with pytest.raises(ValueError, match="window_s"):
        _small(8, window_s=-1.0)
    tok = _small(8, n_outputs=4, output_spacing_s=0.05, output_lag_s=0.1)
    assert tok.output_timestamps.shape == (1, 4) and tok.output_session_index.shape == (1, 4)


def test_bucket_for():
    assert bucket_for(1, [8, 64, 256]) == (8, True)
    assert bucket_for(64, [8, 64, 256]) == (64, True)
    assert bucket_for(65, [8, 64, 256]) == (256, True)
    assert bucket_for(300, [8, 64, 256]) == (256, False)
    with pytest.raises(ValueError, match="buckets"):
        bucket_for(3, [64, 8])
    with pytest.raises(ValueError, match="buckets"):
        bucket_for(3, [12])
    with pytest.raises(ValueError, match="buckets"):
        bucket_for(3, [])

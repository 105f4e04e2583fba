"""The encoder key/value cache decodes what torch_brain's POYO decodes on the same windows.

Reference: torch_brain 0.2.1's POYO (same weights) run on the tokenizer's arrays of each tick,
trimmed to the real tokens with the mask; it recomputes every key and value from scratch. The
stream has bursts past the token capacity (overflow), silences, origin rebases every 2 s and a
reset, so slots are appended, swap-removed, rewritten and re-timed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, make_pair, tb_kwargs
from poyo_rt.model.kvcache import EncoderKVCache
from poyo_rt.model.static import StaticInputs, static_forward
from poyo_rt.runtime.runner import Runner, trimmed_views
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer

TOL = 1e-5
T0 = 81_234.567  # LSL-like absolute clock


def tick_views(tok: IncrementalTokenizer, n_tokens: int) -> dict[str, torch.Tensor]:
    return trimmed_views(tok.arrays(), -(-n_tokens // 8) * 8)


def reference(theirs, views: dict[str, torch.Tensor]) -> np.ndarray:
    batch = dict(views, input_mask=torch.from_numpy(views["input_mask"].numpy().copy()))
    with torch.inference_mode():
        return theirs(**tb_kwargs(batch)).numpy()


@pytest.mark.parametrize("ahead", [None, "spikes", "spikes+start/end"],
                         ids=["at-tick", "prepared-spikes", "prepared-spikes-start-end"])
@pytest.mark.parametrize("name", ["cross2_head24", "depth3_head8", "poyo_1.3M"])
def test_cache_equals_torch_brain_over_a_stream(name, ahead):
    ours, theirs = make_pair(CONFIGS[name], n_units=24, n_sessions=2)
    assert theirs is not None, "torch_brain is the reference here (pip install -e '.[test]')"
    rng = np.random.default_rng(11)
    unit_ids = [f"unit{i}" for i in rng.permutation(24)[:18]]
    vocab = np.asarray(ours.unit_emb.tokenizer(unit_ids), dtype=np.int64)
    tok = IncrementalTokenizer(window_s=1.0, latent_step_s=0.125, num_latents_per_step=ours.num_latents_per_step,
                               unit_vocab_index=vocab, session_vocab_index=ours.session_emb.tokenizer("sess1"),
                               max_spikes=400, n_outputs=3, output_lag_s=0.0, output_spacing_s=0.02,
                               rebase_horizon_s=2.0)
    buf = SpikeBuffer(capacity=8192, n_units=len(unit_ids), unit_map=vocab)
    cache = EncoderKVCache(ours, tok.n_in, tok.latent_index)
    rates = rng.uniform(5, 40, len(unit_ids))
    n_rebase = n_overflow = incremental_ticks = n_duplicates = 0
    t_prev = T0
    for k in range(1, 301):  # 6 s at 50 Hz
        t_end = T0 + k * 0.02
        gain = 6.0 if 80 <= k < 90 else (0.0 if 150 <= k < 175 else 1.0)  # burst past capacity, silence
        counts = rng.poisson(rates * 0.02 * gain)
        u = np.repeat(np.arange(len(unit_ids)), counts)
        t = np.sort(rng.uniform(t_prev, t_end, len(u)))
        if ahead:  # stamped per 5 ms chunk, as some sources do: a unit can have two spikes at one time
            t = t_prev + np.floor((t - t_prev) / 0.005) * 0.005
        buf.append(t, rng.permutation(u))
        t_prev = t_end
        if k == 220:
            tok.reset()  # e.g. the stream restarted: origin and slots start over
        info = tok.update(t_end, buf)
        spikes = slice(tok.n_start_end, info.n_input_tokens)
        pairs = np.stack([tok.input_timestamps[0, spikes], tok.input_unit_index[0, spikes]], axis=1)
        n_duplicates += pairs.shape[0] - np.unique(pairs, axis=0).shape[0]
        n_rebase += info.rebased
        n_overflow += info.overflow
        recomputed = cache.update(tok.input_unit_index[0], tok.input_token_type[0], tok.input_timestamps[0],
                                  info.n_input_tokens)
        if info.rebased:
            assert recomputed == info.n_input_tokens  # every time moved
        elif k > 60 and not info.overflow:
            # incremental: new spikes, refilled holes (at most one per expired spike), start/end tokens
            assert recomputed <= info.n_new + info.n_expired + tok.n_start_end
            incremental_ticks += 1
        views = tick_views(tok, info.n_input_tokens)
        used = cache.counters["prepared_used"]
        got = cache.forward(views["latent_timestamps"], views["output_session_index"], views["output_timestamps"])
        if ahead:  # the prepared part is used unless the origin moved (other latent times) or overflow
            # dropped spikes it covered; then the whole attention runs
            used_now = cache.counters["prepared_used"] > used
            assert used_now == (not info.rebased and not info.overflow), k
            # with it, only this tick's new spikes are attended (and the START/END tokens unless prepared
            # too); spikes moved to other slots by swap-remove were prepared, and found again
            at_tick = info.n_new + (tok.n_start_end if ahead == "spikes" else 0)
            assert cache.last_attended == (at_tick if used_now else info.n_input_tokens), k
            if ahead == "spikes+start/end" and used_now:  # START/END were advanced when prepared: not recomputed
                assert recomputed <= info.n_new + info.n_expired, k
        want = reference(theirs, views)
        assert got.shape == (1, 3, 2)
        assert np.abs(got.numpy() - want).max() <= TOL, k
        if ahead:  # between ticks: the next tick's encoder attention over the spikes that stay
            nxt = tok.window_times_at(T0 + (k + 1) * 0.02)
            cache.prepare(*(nxt if ahead == "spikes+start/end" else nxt[:1]))
    assert n_rebase >= 2 and n_overflow >= 1 and incremental_ticks > 150
    if ahead:
        assert cache.counters["prepared_used"] > 200, cache.counters
        assert n_duplicates > 50  # the multiset of tokens is matched, copies included
    else:
        assert cache.counters["prepared_used"] == cache.counters["prepared"] == 0
    assert cache.counters["recomputed"] < 0.5 * cache.counters["ticks"] * tok.n_start_end + 0.5 * 400 * 300


def test_cache_recomputes_a_slot_whose_unit_or_type_changed_at_the_same_time():
    ours, _ = make_pair(CONFIGS["small"], n_units=6)
    n = 16
    unit = np.arange(n, dtype=np.int64) % 6 + 1
    ttype = np.zeros(n, dtype=np.int64)
    times = np.linspace(0.0, 0.9, n)
    cache = EncoderKVCache(ours, 32, ours.latent_tokens()[0])
    lat_ts = torch.from_numpy(ours.latent_tokens()[1][None])
    sess, out_ts = torch.ones((1, 1), dtype=torch.long), torch.full((1, 1), 1.0, dtype=torch.float64)

    def exact() -> torch.Tensor:
        inputs = StaticInputs(
            input_unit_index=torch.from_numpy(unit[None].copy()), input_timestamps=torch.from_numpy(times[None].copy()),
            input_token_type=torch.from_numpy(ttype[None].copy()), input_mask=torch.ones((1, n), dtype=torch.bool),
            latent_index=torch.from_numpy(ours.latent_tokens()[0][None]), latent_timestamps=lat_ts,
            output_session_index=sess, output_timestamps=out_ts)
        with torch.inference_mode():
            return static_forward(ours, inputs)

    assert cache.update(unit, ttype, times, n) == n
    assert cache.update(unit, ttype, times, n) == 0  # nothing changed
    unit[3], ttype[5] = 6 if unit[3] != 6 else 1, 2  # same times, other unit / other type
    assert cache.update(unit, ttype, times, n) == 2
    assert torch.allclose(cache.forward(lat_ts, sess, out_ts), exact(), atol=TOL, rtol=0)
    assert cache.update(unit, ttype, times, n - 4) == 0  # fewer tokens: nothing to recompute
    assert cache.n == n - 4


def test_cache_refuses_bad_use():
    ours, _ = make_pair(CONFIGS["small"], n_units=6)
    lat = ours.latent_tokens()[0]
    cache = EncoderKVCache(ours, 8, lat)
    with pytest.raises(RuntimeError, match="before update"):
        cache.forward(torch.zeros((1, len(lat)), dtype=torch.float64), torch.ones((1, 1), dtype=torch.long),
                      torch.zeros((1, 1), dtype=torch.float64))
    z = np.zeros(8, dtype=np.int64)
    with pytest.raises(ValueError, match="n_tokens"):
        cache.update(z, z, np.zeros(8), 0)
    with pytest.raises(ValueError, match="n_tokens"):
        cache.update(z, z, np.zeros(8), 9)
    with pytest.raises(IndexError, match="vocabulary"):
        cache.update(np.full(8, 99), z, np.zeros(8), 8)
    with pytest.raises(IndexError, match="token type"):
        cache.update(z + 1, np.full(8, 7), np.zeros(8), 8)
    with pytest.raises(ValueError, match="capacity"):
        EncoderKVCache(ours, 0, lat)
    ours.train()
    with pytest.raises(ValueError, match="eval mode"):
        EncoderKVCache(ours, 8, lat)


def test_runner_uses_the_cache_on_cpu_and_checks_the_latents():
    ours, _ = make_pair(CONFIGS["small"], n_units=6)
    assert Runner(ours, capacity=64, n_outputs=1).kv_cache is not None
    assert Runner(ours, capacity=64, n_outputs=1, kv_cache=False).kv_cache is None
    vocab = np.arange(1, 7)
    tok = IncrementalTokenizer(window_s=1.0, latent_step_s=0.25, num_latents_per_step=ours.num_latents_per_step,
                               unit_vocab_index=vocab, session_vocab_index=1, max_spikes=32)
    runner = Runner(ours, capacity=tok.n_in, n_outputs=1)
    buf = SpikeBuffer(capacity=64, n_units=6, unit_map=vocab)
    info = tok.update(T0, buf)
    with pytest.raises(ValueError, match="latent"):  # latent grid of another window length / step
        runner.run(tok.arrays(), info.n_input_tokens)

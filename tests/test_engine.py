"""The engine end to end, with a real LSL outlet/inlet and real ZeroMQ sockets on 127.0.0.1.

An outlet plays a known spike train; the engine decodes it; a subscriber receives every tick;
each tick's values are checked against offline ``POYO.tokenize`` + forward on the same window.
Spikes are pushed ahead of real time (stamped up to ``LEAD_S`` in the future), so every spike of a
window has reached the inlet before its tick, whatever the machine's load.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _poyo_ref import CONFIGS, make_pair
from conftest import poll
from poyo_rt.config import config_from_dict
from poyo_rt.errors import ConfigError, StreamFormatError, UnitMismatchError
from poyo_rt.model import collate
from poyo_rt.runtime.engine import GcWatch, wait_until
from poyo_rt.runtime.launch import build_decoder
from poyo_rt.runtime.report import load_run
from poyo_rt.stream import lsl
from poyo_rt.stream.publisher import Subscriber
from poyo_rt.stream.wire import TickFlags

LEAD_S = 0.4
UNITS = [f"unit{i}" for i in range(20)]


@pytest.fixture
def model():
    m, _ = make_pair(CONFIGS["small"], n_units=20, n_sessions=1)
    return m


def spike_train(rng, unit_ids, duration_s, rate_hz=(5, 40), bursts=(), silences=()):
    """Poisson spikes, seconds from 0: per-unit rates, bursts (x8 rate) and silent stretches."""
    dt = 0.01
    edges = np.arange(0, duration_s + dt, dt)
    rates = rng.uniform(*rate_hz, len(unit_ids))
    times, units = [], []
    for t in edges[:-1]:
        gain = 8.0 if any(a <= t < b for a, b in bursts) else 1.0
        if any(a <= t < b for a, b in silences):
            gain = 0.0
        counts = rng.poisson(rates * dt * gain)
        u = np.repeat(np.arange(len(unit_ids)), counts)
        times.append(rng.uniform(t, t + dt, len(u)))
        units.append(u)
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    return times[order], units[order]


class Pusher(threading.Thread):
    """Pushes (t0 + times, units) to an outlet, each spike ``lead_s`` before its time."""

    def __init__(self, outlet, t0, times, units, lead_s=LEAD_S):
        super().__init__(daemon=True)
        self.outlet, self.t0, self.times, self.units, self.lead_s = outlet, t0, times, units, lead_s
        self.min_lead_s = np.inf
        self.stop_flag = threading.Event()

    def run(self):
        i, n = 0, len(self.times)
        while i < n and not self.stop_flag.is_set():
            now = lsl.local_clock()
            j = np.searchsorted(self.times, now + self.lead_s - self.t0, side="right")
            if j > i:
                self.min_lead_s = min(self.min_lead_s, self.t0 + self.times[i] - now)
                for k in range(i, j):
                    self.outlet.push_sample([int(self.units[k])], self.t0 + float(self.times[k]))
                i = j
            time.sleep(0.005)


def make_config(stream_name, **engine):
    return config_from_dict({
        "model": {"device": "cpu", "threads": 1},  # one thread: no OpenMP stalls on a loaded 2-core machine
        "input": {"name": stream_name, "resolve_timeout_s": 5.0},
        "engine": {"tick_hz": 50.0, **engine},
        "output": {"endpoint": "tcp://127.0.0.1:*"},
        "metrics": {"log_every_s": 0, "report_path": None},
    })


def offline_values(model, t_end, times_abs, units, out_times_abs):
    start = t_end - model.sequence_length
    keep = (times_abs >= start) & (times_abs < t_end)
    window = SimpleNamespace(
        spikes=SimpleNamespace(timestamps=times_abs[keep] - start, unit_index=units[keep]),
        units=SimpleNamespace(id=np.array(UNITS)), session=SimpleNamespace(id="sess0"),
        cursor=SimpleNamespace(timestamps=np.asarray(out_times_abs) - start, vel=np.zeros((len(out_times_abs), 2))),
    )
    batch = collate([model.tokenize(window)])["model_inputs"]
    with torch.inference_mode():
        return model(**batch)[0, : len(out_times_abs)].numpy()


def run_engine(decoder, duration_s):
    thread = threading.Thread(target=decoder.engine.run, kwargs={"duration_s": duration_s}, daemon=True)
    thread.start()
    return thread


def collect(sub, thread, until_idle_s=1.0):
    msgs = []
    while True:
        msg = sub.recv(timeout_s=until_idle_s)
        if msg is not None:
            msgs.append(msg)
        elif not thread.is_alive():
            return msgs


def start(stream_name, source_id, model, **engine):
    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)
    decoder = build_decoder(make_config(stream_name, **engine), model=model)
    sub = Subscriber(decoder.publisher.endpoint, topic="poyo", rcvhwm=100_000, clock=lsl.local_clock)
    poll(lambda: sub.recv(timeout_s=0.01) is None and decoder.publisher.wait_for_subscriber(0.01),
         timeout_s=5, what="subscription")
    return outlet, decoder, sub


@pytest.mark.slow
def test_streaming_equals_offline_over_a_minute(model, stream_name, source_id):
    duration = 61.0
    rng = np.random.default_rng(0)
    times, units = spike_train(rng, UNITS, duration, bursts=[(10, 11), (40, 40.5)], silences=[(20, 23), (50, 52)])
    outlet, decoder, sub = start(stream_name, source_id, model, n_outputs=2, output_spacing_s=0.01)
    try:
        t0 = lsl.local_clock() + 0.2
        pusher = Pusher(outlet, t0, times, units)
        pusher.start()
        thread = run_engine(decoder, duration + 0.5)
        msgs = collect(sub, thread)
        pusher.stop_flag.set()
    finally:
        decoder.close()
    assert pusher.min_lead_s > 0, "the pusher fell behind real time: spikes could reach the inlet after their tick"
    ticks = decoder.engine.ticks
    assert ticks >= 0.9 * duration * 50 and len(msgs) == ticks
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(msgs))), "ticks must arrive in order, none missing"
    times_abs = t0 + times
    worst, n_spiky = 0.0, 0
    for m in msgs:
        ref = offline_values(model, m.window_end_s, times_abs, units, m.output_times_s)
        worst = max(worst, float(np.abs(m.values - ref).max()))
        n_spiky += int(np.isfinite(m.newest_spike_s))
        assert m.values.shape == (2, 2)
    assert worst <= 1e-5
    assert n_spiky > 0.8 * len(msgs)  # most windows hold spikes; silent stretches give a few empty ones
    counters = msgs[-1].counters
    assert counters.get("stale_spike", 0) == 0 and counters.get("token_overflow", 0) == 0
    summary = decoder.engine.summary()
    assert summary["stages"]["forward"]["count"] == ticks == summary["stages"]["runner"]["count"]
    # the runner stage is the host's wall time of the whole call, which spans the forward it times inside
    assert summary["stages"]["runner"]["min_us"] >= summary["stages"]["forward"]["min_us"]
    assert all(m.stages_us["runner"] >= m.stages_us["forward"] for m in msgs)
    # the host's split of the runner call (pack, launch, sync) is the CUDA runner's: none on the CPU
    assert all(summary["stages"][s]["count"] == 0 for s in ("pack", "launch", "overlap", "sync"))
    assert not any({"pack", "launch", "overlap", "sync"} & set(m.stages_us) for m in msgs)
    # the newest spike's age at the window end, in each message: the stream's share of e2e
    for m in msgs:
        if np.isfinite(m.newest_spike_s):
            assert m.stages_us["spike_age"] == pytest.approx((m.window_end_s - m.newest_spike_s) * 1e6, abs=1e-3)
        else:
            assert np.isnan(m.stages_us["spike_age"])
    assert summary["stages"]["spike_age"]["count"] == n_spiky
    # between ticks the engine prepared the next tick's encoder attention; the equality above covers its use
    cache = decoder.engine.runner.kv_cache
    assert cache.counters["prepared_used"] > 0.8 * ticks, cache.counters
    # the loop woke before each tick to tokenize early and warm its code (engine.pre_tick, on by default)
    assert summary["early_ticks"] > 0.9 * ticks
    # the loop ran with the process's objects frozen out of the collector's reach
    assert gc.get_freeze_count() > 10_000 and set(summary["gc"]) == {"collections_by_generation", "max_pause_us"}


def test_binned_counts_stream_decodes_as_its_spikes_at_their_bins_ends(model, stream_name):
    """A binned-count stream (one channel per unit, a sample per bin; here played by the replay's counts layout) is
    decoded by an engine with input.layout counts exactly as the offline model decodes the same spikes, each
    placed where a counts stream puts it: at its bin's end."""
    from poyo_rt.replay.player import SessionPlayer
    from poyo_rt.replay.session import Session

    duration, bin_s = 6.0, 0.02
    times, units = spike_train(np.random.default_rng(1), UNITS, duration)
    session = Session("binned", list(UNITS), times, units, np.zeros(0), np.zeros((0, 0), np.float32), [])
    player = SessionPlayer(session, spike_name=stream_name, behavior_name=None, spike_layout="counts", bin_s=bin_s)
    player.open()
    raw = make_config(stream_name, input_delay_s=0.03).to_dict()  # room for a bin in transit past the window end
    raw["input"]["layout"] = "counts"
    decoder = build_decoder(config_from_dict(raw), model=model)
    sub = Subscriber(decoder.publisher.endpoint, topic="poyo", rcvhwm=100_000, clock=lsl.local_clock)
    try:
        poll(lambda: sub.recv(timeout_s=0.01) is None and decoder.publisher.wait_for_subscriber(0.01),
             timeout_s=5, what="subscription")
        assert player.wait_for_consumers(5.0) and decoder.inlet.layout == "counts"
        thread = run_engine(decoder, duration + 0.5)
        player.start()
        msgs = collect(sub, thread)
        stats = player.join(timeout_s=2.0)
    finally:
        decoder.close()
        player.close()
    assert stats is not None and stats.spikes_pushed == times.size
    edges = player.t_a + np.arange(player.period_s / bin_s + 1) * bin_s
    bin_end = edges[np.searchsorted(edges, times, side="right")]  # each spike at the end of its bin
    spikes_abs = stats.t_play0_s + (bin_end - player.t_a)
    order = np.argsort(spikes_abs, kind="stable")
    decoded = [m for m in msgs if np.isfinite(m.newest_spike_s)]
    assert len(decoded) > 0.8 * duration * 50
    worst = max(float(np.abs(m.values - offline_values(model, m.window_end_s, spikes_abs[order], units[order],
                                                          m.output_times_s)).max()) for m in decoded)
    assert worst <= 1e-5
    counters = msgs[-1].counters
    assert counters.get("stale_spike", 0) == 0 and counters.get("missed_samples", 0) == 0


def test_decoded_values_also_on_lsl_for_a_recorder(model, stream_name, source_id):
    """output.lsl_name: every tick's values also leave on an LSL stream (what LabRecorder records), each sample
    equal to the ZeroMQ message's value and stamped with its output time; the ZeroMQ output is unchanged."""
    import pylsl

    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)
    raw = make_config(stream_name, n_outputs=2, output_spacing_s=0.01).to_dict()
    raw["output"]["lsl_name"] = stream_name + "-decoded"
    decoder = build_decoder(config_from_dict(raw), model=model)
    sub = Subscriber(decoder.publisher.endpoint, topic="poyo", rcvhwm=100_000, clock=lsl.local_clock)
    info = lsl.resolve_stream(name=stream_name + "-decoded", timeout_s=5.0, unique_wait_s=0)
    rec = pylsl.StreamInlet(info, max_buflen=60, recover=False, processing_flags=pylsl.proc_none)
    full = rec.info(timeout=5.0)
    rec.open_stream(timeout=5.0)
    samples, stamps = [], []
    try:
        poll(lambda: sub.recv(timeout_s=0.01) is None and decoder.publisher.wait_for_subscriber(0.01),
             timeout_s=5, what="subscription")
        thread = run_engine(decoder, 1.5)
        pusher = Pusher(outlet, lsl.local_clock() + 0.2, *spike_train(np.random.default_rng(2), UNITS, 1.0))
        pusher.start()
        msgs = collect(sub, thread)
        pusher.stop_flag.set()
        while True:
            data, ts = rec.pull_chunk(timeout=0.5)
            if not ts:
                break
            samples.extend(data)
            stamps.extend(ts)
    finally:
        decoder.close()
    assert full.type() == "Decoded" and full.nominal_srate() == 0 and full.channel_count() == 2
    assert full.channel_format() == pylsl.cf_float32
    ch, labels = full.desc().child("channels").child("channel"), []
    while not ch.empty():
        labels.append(ch.child_value("label"))
        ch = ch.next_sibling("channel")
    assert labels == ["y0", "y1"]  # a bare model: no behaviour labels kept (a poyo-rt checkpoint's are used)
    decoder_desc = full.desc().child("decoder")  # where the values come from
    assert decoder_desc.child_value("topic") == "poyo" and decoder_desc.child_value("source_stream") == stream_name
    assert len(msgs) == decoder.engine.ticks > 50 and len(samples) == 2 * len(msgs)
    np.testing.assert_array_equal(np.asarray(samples, np.float32), np.concatenate([m.values for m in msgs]))
    np.testing.assert_allclose(stamps, np.concatenate([m.output_times_s for m in msgs]), rtol=0, atol=1e-9)
    assert all(m.stages_us["publish"] > 0 for m in msgs[1:])  # each holds the previous send (and push)


def test_decoded_labels_come_from_the_checkpoint(model):
    from poyo_rt.runtime.launch import LoadedModel, decoded_labels

    assert decoded_labels(LoadedModel(model, meta={"behavior_labels": ["vx", "vy"]})) == ["vx", "vy"]
    assert decoded_labels(LoadedModel(model, meta={"behavior_labels": ["a", "b", "c"]})) == ["y0", "y1"]  # not D


def test_lsl_name_must_name_a_stream():
    with pytest.raises(ConfigError, match="output.lsl_name"):
        config_from_dict({"output": {"lsl_name": " "}})


def test_gc_watch_times_collections():
    with GcWatch() as watch:
        gc.collect()
        gc.collect(0)
    assert watch.collections[2] >= 1 and watch.collections[0] >= 1 and watch.max_pause_us > 0
    assert watch._callback not in gc.callbacks


def test_bad_spikes_are_counted_and_decoding_continues(model, stream_name, source_id):
    outlet, decoder, sub = start(stream_name, source_id, model)
    try:
        thread = run_engine(decoder, 1.5)
        now = lsl.local_clock()
        outlet.push_sample([3], now)
        outlet.push_sample([4], float("nan"))  # NaN timestamp
        outlet.push_sample([5], now - 0.5)  # out of order
        outlet.push_sample([99], now + 0.001)  # unit index outside the unit list
        outlet.push_sample([-1], now + 0.002)  # negative unit
        outlet.push_sample([6], now + 0.003)
        msgs = collect(sub, thread)
    finally:
        decoder.close()
    assert len(msgs) > 50
    c = msgs[-1].counters
    assert c["nonfinite_time"] == 1 and c["out_of_order"] == 1 and c["unit_range"] == 1 and c["negative_unit"] == 1
    assert any(np.isfinite(m.newest_spike_s) for m in msgs)


def test_burst_above_capacity_is_dropped_oldest_first_and_flagged(model, stream_name, source_id):
    outlet, decoder, sub = start(stream_name, source_id, model, max_spikes=64)
    try:
        thread = run_engine(decoder, 1.5)
        now = lsl.local_clock()
        burst = now + np.linspace(0.05, 0.15, 500)
        outlet.push_chunk([[i % 20] for i in range(500)], burst.tolist())
        msgs = collect(sub, thread)
    finally:
        decoder.close()
    flagged = [m for m in msgs if m.flags & TickFlags.TOKEN_OVERFLOW]
    assert flagged and msgs[-1].counters["token_overflow"] >= 500 - 64
    assert all(np.isfinite(m.values).all() for m in msgs)
    assert decoder.engine.tokenizer.n_spikes <= 64


def test_unknown_units_error_or_counted_drop(model, stream_name, source_id):
    units = UNITS[:10] + ["stranger0", "stranger1"]
    outlet = lsl.make_spike_outlet(stream_name, units, source_id)
    with pytest.raises(UnitMismatchError, match="stranger"):
        build_decoder(make_config(stream_name), model=model)
    cfg = make_config(stream_name)
    cfg = config_from_dict({**cfg.to_dict(), "input": {**cfg.to_dict()["input"], "on_unknown_unit": "drop"},
                            "engine": {**cfg.to_dict()["engine"], "buckets": []}})
    decoder = build_decoder(cfg, model=model)
    try:
        thread = run_engine(decoder, 1.0)
        now = lsl.local_clock()
        outlet.push_chunk([[10], [11], [2]], [now, now + 0.001, now + 0.002])
        thread.join()
    finally:
        decoder.close()
    assert decoder.engine.counters()["unmapped_unit"] == 2
    assert decoder.engine.ticks > 30


def test_unit_ids_from_the_config_name_a_stream_that_names_none(model, stream_name, source_id, tmp_path):
    """A stream without <desc><units> (Neural Data Simulator's, for one) is refused with the fix named, and decoded
    once input.unit_ids (here a file, in the stream's unit-index order) names its units."""
    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id, write_units=False)
    with pytest.raises(StreamFormatError, match="input.unit_ids"):
        build_decoder(make_config(stream_name), model=model)
    order = UNITS[10:] + UNITS[:10]  # the stream's index i is the model's unit order[i]
    (tmp_path / "units.txt").write_text("\n".join(order) + "\n")
    raw = make_config(stream_name).to_dict()
    raw["input"]["unit_ids"] = str(tmp_path / "units.txt")
    raw["engine"]["buckets"] = []
    decoder = build_decoder(config_from_dict(raw), model=model)
    try:
        assert decoder.inlet.unit_ids == order
        thread = run_engine(decoder, 1.0)
        now = lsl.local_clock()
        outlet.push_chunk([[0], [19], [5]], [now, now + 0.001, now + 0.002])
        thread.join()
    finally:
        decoder.close()
    counters = decoder.engine.counters()
    assert counters.get("unmapped_unit", 0) == 0 and decoder.engine.buffer.next_seq == 3 and decoder.engine.ticks > 30
    vocab = model.unit_emb.vocab
    np.testing.assert_array_equal(decoder.engine.buffer.unit_map, [vocab[u] for u in order])


def test_warm_during_forward_is_refused_on_the_cpu(model, stream_name, source_id):
    """engine.warm_during_forward uses the host's wait for the GPU: the CPU forward leaves none, so a CPU decoder
    asked for it stops at start with the setting named (and leaves no socket behind: a second build works)."""
    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)
    with pytest.raises(ValueError, match="engine.warm_during_forward is a CUDA option"):
        build_decoder(make_config(stream_name, warm_during_forward=True), model=model)
    build_decoder(make_config(stream_name), model=model).close()
    del outlet


def test_the_loop_releases_a_launch_left_waiting_when_it_ends(model, stream_name, source_id):
    """Runner.release (a graph that model.cuda_warm: launch started at a pre-tick waits for its tick's ring) runs
    whenever the loop ends: after its ticks, and when a tick fails (a no-op on the CPU; the GPU test checks what
    it releases)."""
    outlet, decoder, sub = start(stream_name, source_id, model)
    engine, released = decoder.engine, []
    real_release = engine.runner.release
    engine.runner.release = lambda: (released.append(engine.ticks), real_release())
    try:
        engine.run(max_ticks=3)
        assert released == [3]

        def fail(*args, **kwargs):
            raise RuntimeError("simulated: the forward failed")

        engine.runner.run = fail
        with pytest.raises(RuntimeError, match="simulated"):
            engine.run(max_ticks=5)  # (ticks count since construction)
        assert released == [3, 3]
    finally:
        sub.close()
        decoder.close()
        del outlet


def test_wrong_stream_format_is_a_clear_error_at_start(model, stream_name, source_id):
    import pylsl

    info = pylsl.StreamInfo(stream_name, "Spikes", 3, 0.0, pylsl.cf_string, source_id)
    outlet = pylsl.StreamOutlet(info)
    with pytest.raises(StreamFormatError):
        build_decoder(make_config(stream_name), model=model)
    del outlet


@pytest.mark.slow
def test_stream_disappears_and_returns(model, stream_name, source_id):
    outlet, decoder, sub = start(stream_name, source_id, model)
    try:
        thread = run_engine(decoder, 6.0)
        outlet.push_sample([1], lsl.local_clock())
        poll(lambda: decoder.engine.ticks > 20, timeout_s=5, what="ticks")
        del outlet  # the acquisition system goes away ...
        poll(lambda: not decoder.inlet.connected, timeout_s=5, what="disconnect noticed")
        outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)  # ... and comes back
        poll(lambda: decoder.inlet.connected, timeout_s=5, what="reconnect")
        t_back = lsl.local_clock()
        pusher = Pusher(outlet, t_back, np.linspace(0.05, 1.0, 40), np.arange(40) % 20)
        pusher.start()
        msgs = collect(sub, thread)
    finally:
        decoder.close()
    assert thread.is_alive() is False and decoder.engine.ticks > 200
    assert any(m.flags & TickFlags.STREAM_DISCONNECTED for m in msgs)
    assert any(np.isfinite(m.newest_spike_s) and m.newest_spike_s > t_back for m in msgs)
    assert decoder.inlet.reconnect_count == 1


def test_subscriber_that_never_reads_does_not_stall_the_engine(model, stream_name, source_id):
    """A SUB with a 1-message queue that never reads: sends never block, so the loop keeps its schedule
    (every scheduled tick is either run or, on a loaded machine, counted as skipped) and ends on time."""
    outlet, decoder, sub = start(stream_name, source_id, model)
    lazy = Subscriber(decoder.publisher.endpoint, topic="poyo", rcvhwm=1)
    try:
        t0 = time.monotonic()
        decoder.engine.run(duration_s=2.0)
        wall = time.monotonic() - t0
    finally:
        decoder.close()
        lazy.close()
        sub.close()
    engine = decoder.engine
    assert wall < 2.0 + 1.0  # a blocked send would hang here
    # 100 deadlines in 2 s at 50 Hz: each was run or counted as skipped (the last tick's span may end the run)
    assert engine.ticks + engine.skipped_ticks >= 80
    assert engine.ticks > 10 and decoder.publisher.sent + decoder.publisher.dropped == engine.ticks


def test_backlog_is_drained_within_a_tick(model, stream_name, source_id):
    """Pulls are capped at max_chunk samples; a tick keeps pulling while the inlet is backlogged, so a
    5,000-spike burst reaches the window without waiting for later ticks, and none is dropped."""
    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)
    cfg = make_config(stream_name)
    cfg = config_from_dict({**cfg.to_dict(), "input": {**cfg.to_dict()["input"], "max_chunk": 512},
                            "engine": {**cfg.to_dict()["engine"], "buckets": []}})
    decoder = build_decoder(cfg, model=model)
    engine = decoder.engine
    pulls = []
    try:
        now = lsl.local_clock()
        stamps = now - 0.5 + np.arange(5000) * 1e-4  # all already due
        outlet.push_chunk([[i % 20] for i in range(5000)], stamps.tolist())

        def tick_until_all_in() -> bool:
            engine.tick(lsl.local_clock())
            pulls.append(engine.last_pulls)
            return engine.tokenizer.n_spikes == 5000

        poll(tick_until_all_in, timeout_s=5, interval_s=0.02, what="the burst in the window")
    finally:
        decoder.close()
    assert max(pulls) >= 2  # some tick drained more than one max_chunk
    assert engine.counters()["overflow"] == 0 and decoder.inlet.n_spikes == 5000


def test_one_slow_preparation_does_not_switch_preparing_off(model, stream_name, source_id):
    """Between ticks the engine prepares the next one unless less than a preparation's usual time is left.
    One slow preparation (first call, a stall) must not stop it for good: it once did, because a skip never
    updated the duration it compared against. The engine's clock is driven here so that the first
    preparation takes 25 ms and the others 1 ms, each with 19 ms left before its tick."""
    outlet = lsl.make_spike_outlet(stream_name, UNITS, source_id)
    decoder = build_decoder(make_config(stream_name), model=model)
    engine = decoder.engine
    try:
        t = lsl.local_clock()
        engine.buffer.append(t - 0.5 + np.arange(200) * 1e-3, np.arange(200) % 20)
        engine.tick(t)  # a window (and a time origin) to prepare from
        now, took, calls = [t], iter([0.025] + [0.001] * 60), []
        prepare = engine.runner.prepare

        def timed_prepare(window):
            prepare(window)
            calls.append(now[0])
            now[0] += next(took)

        engine.clock, engine.runner.prepare = (lambda: now[0]), timed_prepare
        for _ in range(40):
            engine._prepare(now[0] + 0.019)
            now[0] += 0.02
    finally:
        decoder.close()
        del outlet
    assert len(calls) >= 35, len(calls)  # skipped right after the slow one, then back to every tick


def test_pre_tick_then_late_spikes_decode_as_one_window(model, stream_name, source_id):
    """Woken before a tick, the engine tokenizes with the spikes in so far and warms the runner and the
    publisher without sending; spikes that arrive after that and before the window end still make the tick,
    whose published values equal the offline decode of the whole window. Real LSL and ZeroMQ."""
    outlet, decoder, sub = start(stream_name, source_id, model)
    engine = decoder.engine
    rng = np.random.default_rng(3)
    t_end = lsl.local_clock() + 0.05
    times = np.sort(t_end - rng.uniform(0.0, 1.5, 300))  # some older than the window: never in it
    units = rng.integers(0, 20, 300)

    sent = -np.inf  # spikes before this time are pushed

    def push_until(t: float) -> None:  # push every spike before t not pushed yet; wait until it is buffered
        nonlocal sent
        todo = (times >= sent) & (times < t)
        outlet.push_chunk([[int(u)] for u in units[todo]], times[todo].tolist())
        sent = t
        n = int(np.count_nonzero(times < t))
        poll(lambda: engine.take_in() or engine.buffer.next_seq == n, timeout_s=5, what="the spikes in the buffer")

    try:
        push_until(t_end - 0.02)
        engine.tick(t_end - 0.02)  # the tick before
        assert sub.recv(timeout_s=2.0).seq == 0
        push_until(t_end - 0.01)
        engine._pre_tick(t_end)  # woken before the tick at t_end
        early_spikes = engine.tokenizer.n_spikes
        assert sub.recv(timeout_s=0.2) is None  # warming the publisher sent nothing
        push_until(t_end)  # spikes that came in after the early tokenizing
        engine.tick(t_end)
        msg = sub.recv(timeout_s=2.0)
    finally:
        decoder.close()
        del outlet
    in_window = (times >= t_end - model.sequence_length) & (times < t_end)
    assert engine.early_ticks == 1 and early_spikes == np.count_nonzero(in_window & (times < t_end - 0.01))
    assert engine.tokenizer.n_spikes == np.count_nonzero(in_window) > early_spikes
    assert msg is not None and msg.seq == 1 and msg.window_end_s == t_end
    ref = offline_values(model, t_end, times, units, msg.output_times_s)
    np.testing.assert_allclose(msg.values, ref, atol=1e-5, rtol=0)
    assert msg.newest_spike_s == times[in_window].max()


def thread_names() -> dict[int, str]:
    """This process's threads: kernel id -> name (Linux /proc)."""
    from poyo_rt.runtime.threads import thread_ids

    names = {}
    for tid in thread_ids():
        try:
            names[tid] = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
    return names


def test_cpu_affinity_pins_the_loop_thread_for_the_run(model, stream_name, source_id):
    """engine.cpu_affinity: every tick runs on the chosen core (seen from inside the publisher's send, which the
    loop's thread calls), the process's other threads (ZeroMQ's I/O thread, this test's) run on the other cores
    meanwhile, and every thread gets its cores back after the run; the steal time read is that core's."""
    import os

    everything = os.sched_getaffinity(0)
    core = min(everything)
    outlet, decoder, sub = start(stream_name, source_id, model, cpu_affinity=[core])
    engine, send = decoder.engine, decoder.publisher.send
    cores_at_send: list[set[int]] = []

    def send_and_look(**kw):
        cores_at_send.append(os.sched_getaffinity(0))
        return send(**kw)

    engine.sink.send = send_and_look
    after: list[set[int]] = []

    def run():
        engine.run(duration_s=1.0)
        after.append(os.sched_getaffinity(0))

    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        poll(lambda: len(cores_at_send) >= 5, timeout_s=10, what="five ticks")
        during = {name: os.sched_getaffinity(tid) for tid, name in thread_names().items()
                  if name.startswith("ZMQbg/IO") or tid == threading.get_native_id()}
        msgs = collect(sub, thread)
    finally:
        decoder.close()
        del outlet
    rest = everything - {core} or everything
    assert len(during) >= 2 and all(c == rest for c in during.values()), during
    assert os.sched_getaffinity(0) == everything
    assert len(cores_at_send) == engine.ticks >= 5 and all(c == {core} for c in cores_at_send)
    assert after == [everything]
    assert engine.summary()["pinned_cores"] == [core] and len(msgs) == engine.ticks
    assert engine.steal_clock.cores == {core} and engine.summary()["stolen_ms"] >= 0  # the steal of the loop's core


def test_start_stage_is_how_late_a_tick_began(model, stream_name, source_id):
    """``start``: the time from a tick's schedule to its first step, in the latency log and in the message, so a
    miss can be told apart into starting late and working long (tick >= start + the work that follows)."""
    outlet, decoder, sub = start(stream_name, source_id, model)
    engine = decoder.engine
    try:
        scheduled = lsl.local_clock() - 0.005  # this tick begins at least 5 ms after its schedule
        stages = engine.tick(scheduled)
        msg = sub.recv(timeout_s=2.0)
    finally:
        decoder.close()
        del outlet
    assert 5000.0 <= stages["start"] < stages["tick"]
    assert stages["tick"] >= stages["start"] + stages["runner"] + stages["publish"]
    assert msg is not None and msg.stages_us["start"] == stages["start"]
    assert engine.stats.summary()["stages"]["start"]["count"] == 1


def test_each_miss_is_counted_under_its_cause(model, stream_name, source_id, tmp_path):
    """``cpu``, ``cpu_wait`` and ``off_cpu`` account for a tick's work (in the log and the message), and a missed
    tick is counted under what ran long: a forward that sleeps is ``off_cpu``, one that computes ``cpu_time``, a
    tick begun late ``late_start``. Real LSL, ZeroMQ and model; the runner's call is lengthened by 60 ms."""
    outlet, decoder, sub = start(stream_name, source_id, model, deadline_ms=40.0)
    engine = decoder.engine
    run, extra = engine.runner.run, {}

    def lengthened(*args):
        out = run(*args)
        if extra.get("sleep"):
            time.sleep(0.06)
        if extra.get("busy"):
            t_end = time.perf_counter() + 0.06
            while time.perf_counter() < t_end:
                pass
        return out

    engine.runner.run = lengthened
    ticks, counted = {}, {}

    def tick(case, late_s=0.0):  # (a normal tick on a slow machine may miss too: each case's own count)
        before = dict(engine.miss_causes)
        ticks[case] = engine.tick(lsl.local_clock() - late_s)
        counted[case] = {k: n - before.get(k, 0) for k, n in engine.miss_causes.items() if n != before.get(k, 0)}

    try:
        for _ in range(5):
            tick("normal")
        for case in ("sleep", "busy"):
            extra[case] = True
            tick(case)
            extra.clear()
        tick("late", 0.06)
        msgs = [sub.recv(timeout_s=2.0) for _ in range(8)]
    finally:
        decoder.close()
        del outlet
    assert counted["sleep"] == {"off_cpu": 1} and counted["busy"] == {"cpu_time": 1}
    assert counted["late"] == {"late_start": 1}
    assert engine.summary()["miss_causes"] == engine.miss_causes
    assert load_run(engine.write_report(tmp_path / "run.json"))["meta"]["miss_causes"] == engine.miss_causes
    assert ticks["sleep"]["off_cpu"] >= 60_000 and ticks["sleep"]["cpu"] < 40_000
    assert ticks["busy"]["cpu"] >= 0.5 * 60_000 and ticks["busy"]["off_cpu"] < 40_000
    for stages in ticks.values():  # the accounting spans the tick's work: after its start, before its send
        assert stages["cpu"] > 0 and stages["cpu_wait"] >= 0
        accounted = stages["cpu"] + stages["cpu_wait"] + stages["off_cpu"]
        assert stages["runner"] <= accounted + 1.0 and accounted <= stages["tick"] - stages["start"]
    assert all(m is not None for m in msgs)
    assert msgs[5].stages_us["off_cpu"] == ticks["sleep"]["off_cpu"] and msgs[6].stages_us["cpu"] == ticks["busy"]["cpu"]


def test_a_miss_the_hypervisor_caused_is_counted_stolen_and_every_miss_is_logged(model, stream_name, source_id,
                                                                                 tmp_path):
    """A tick whose lateness the steal time of the loop's core covers is counted ``stolen``; one as late without
    steal is ``off_cpu``. Both are logged with their stages (``missed_ticks``: the summary and the latency log),
    and the run's steal time is summed. Real LSL, ZeroMQ and model; the steal time is a real file in
    /proc/stat's format (the test cannot make a hypervisor stall this VM), rewritten while the forward sleeps."""
    from poyo_rt.runtime.threads import StealClock
    from test_config import _proc_stat

    stat = tmp_path / "stat"
    stat.write_text(_proc_stat({0: 0, 1: 0}))
    steal_ticks = -(-60 * os.sysconf("SC_CLK_TCK") // 1000)  # 60 ms of clock ticks, rounded up
    outlet, decoder, sub = start(stream_name, source_id, model, deadline_ms=40.0)
    engine = decoder.engine
    engine.steal_clock = StealClock([1], path=str(stat))
    run, stolen = engine.runner.run, {"ticks": 0}

    def stalled(*args):
        out = run(*args)
        if stolen.get("sleep"):
            time.sleep(0.06)
            if stolen.get("steal"):
                stolen["ticks"] += steal_ticks
                stat.write_text(_proc_stat({0: 0, 1: stolen["ticks"]}))
        return out

    engine.runner.run = stalled
    index, counted = {}, {}

    def tick(case):  # (a normal tick on a slow machine may miss too: each case's own count)
        before = dict(engine.miss_causes)
        index[case] = engine.ticks
        engine.tick(lsl.local_clock())
        counted[case] = {k: n - before.get(k, 0) for k, n in engine.miss_causes.items() if n != before.get(k, 0)}

    try:
        for _ in range(5):
            tick("normal")
        stolen.update(sleep=True, steal=True)
        tick("stolen")
        stolen.update(steal=False)
        tick("blocked")
    finally:
        decoder.close()
        del outlet
    assert counted["stolen"] == {"stolen": 1} and counted["blocked"] == {"off_cpu": 1}
    logged = {m["index"]: m for m in engine.missed_ticks}
    for case, cause in (("stolen", "stolen"), ("blocked", "off_cpu")):
        miss = logged[index[case]]
        assert miss["cause"] == cause and miss["tick"] > 40_000 and miss["off_cpu"] >= 60_000
        assert set(miss) >= {"index", "at_s", "stolen_us", "start", "cpu", "cpu_wait", "publish", "runner"}
        assert 0 < miss["at_s"] < 10 and abs(miss["t_tick_s"] - lsl.local_clock()) < 10
    assert logged[index["stolen"]]["stolen_us"] == pytest.approx(steal_ticks * 1e6 / os.sysconf("SC_CLK_TCK"))
    assert logged[index["blocked"]]["stolen_us"] == 0
    assert logged[index["blocked"]]["prev_tick_us"] > 40_000  # what ran before it: the stolen tick (no loop here:
    assert "prepare_us" not in logged[index["blocked"]]  # no preparation, no pre-tick between the two)
    assert engine.stolen_ms == pytest.approx(steal_ticks * 1e3 / os.sysconf("SC_CLK_TCK"))
    summary = engine.summary()
    assert summary["missed_ticks"] == list(engine.missed_ticks) and summary["stolen_ms"] == engine.stolen_ms
    meta = load_run(engine.write_report(tmp_path / "run.json"))["meta"]
    assert meta["missed_ticks"] == list(engine.missed_ticks) and meta["stolen_ms"] == engine.stolen_ms


def test_a_missed_tick_says_what_ran_before_it(model, stream_name, source_id):
    """In the loop, each missed tick's record holds what ran since the previous tick's send: that tick's
    latency, the preparation for this tick and its pre-tick (µs), so a late start can be told from a late
    wake-up. A deadline every tick misses; real LSL, ZeroMQ and model."""
    outlet, decoder, sub = start(stream_name, source_id, model, deadline_ms=0.5)
    engine = decoder.engine
    try:
        engine.run(duration_s=1.0)
    finally:
        decoder.close()
        del outlet
    missed = list(engine.missed_ticks)
    assert len(missed) == engine.ticks >= 20 and "prev_tick_us" not in missed[0]
    later = missed[1:]
    assert all(m["prev_tick_us"] == m_prev["tick"] for m_prev, m in zip(missed, later))
    assert sum("prepare_us" in m for m in later) >= 0.8 * len(later)  # the key/value cache prepares between ticks
    assert sum("pre_tick_us" in m for m in later) >= 0.8 * len(later) and engine.early_ticks >= 0.8 * engine.ticks
    assert all(0 < m["prepare_us"] < 20_000 for m in later if "prepare_us" in m)
    assert all(0 < m["pre_tick_us"] < 20_000 for m in later if "pre_tick_us" in m)


def test_spin_is_at_most_a_quarter_period():
    """engine.spin_ms holds at 50 Hz; at 1 kHz a 1 ms spin would leave no sleep (and no pre-tick): a quarter."""
    from poyo_rt.runtime.engine import EngineSettings

    assert EngineSettings(tick_hz=50.0, spin_ms=1.0).spin_s == pytest.approx(1e-3)
    assert EngineSettings(tick_hz=1000.0, spin_ms=1.0).spin_s == pytest.approx(0.25e-3)
    assert EngineSettings(tick_hz=50.0, spin_ms=0.0).spin_s == 0.0


def test_wait_until_is_never_early_and_cannot_hang():
    """The tick loop's wake-up (sleep, then spin the last spin_s): on a real clock it returns at or after each
    deadline, with the spin or without; on a clock that never moves it still returns (bounded spin)."""
    for spin_s in (0.0, 0.0005, 0.003):
        t0 = time.monotonic()
        for k in range(1, 11):
            deadline = t0 + k * 0.004
            wait_until(deadline, time.monotonic, time.sleep, spin_s)
            assert time.monotonic() >= deadline
    slept = []
    t0 = time.perf_counter()
    wait_until(10.0, lambda: 0.0, slept.append, 0.0005)  # frozen clock, 10 s "to go"
    assert slept == [pytest.approx(10.0 - 0.0005)] and time.perf_counter() - t0 < 0.5


def test_wait_until_polls_while_it_spins():
    """The engine pulls from its inlet while it spins (poll): only in the last spin_s, until the deadline.
    A driven clock: each sleep and each poll moves it."""
    now, polled_at, slept = [0.0], [], []

    def sleep(s):
        slept.append(s)
        now[0] += s

    def poll():
        polled_at.append(now[0])
        now[0] += 0.0001

    woken = []
    wait_until(0.010, lambda: now[0], sleep, 0.001, poll=poll, on_wake=lambda: woken.append(now[0]))
    assert slept == [pytest.approx(0.009)] and woken == [pytest.approx(0.009)]  # once, after the sleep
    assert len(polled_at) in (10, 11) and min(polled_at) >= 0.009 - 1e-12 and max(polled_at) < 0.010
    assert now[0] >= 0.010
    # already inside the spin window (a late loop): no sleep, so no wake-up work either
    wait_until(now[0] + 0.0005, lambda: now[0], sleep, 0.001, poll=poll, on_wake=lambda: woken.append(now[0]))
    assert len(woken) == 1 and len(slept) == 1
    # wake-up work that takes 0.6 ms: the sleep ends that much earlier, so the spin keeps its 1 ms of polls

    def pre_tick():
        woken.append(now[0])
        now[0] += 0.0006

    start, polled_at[:] = now[0], []
    wait_until(start + 0.010, lambda: now[0], sleep, 0.001, poll=poll, on_wake=pre_tick, wake_s=0.0006)
    assert slept[-1] == pytest.approx(0.0084) and woken[-1] == pytest.approx(start + 0.0084)
    assert len(polled_at) in (10, 11) and min(polled_at) >= start + 0.009 - 1e-12

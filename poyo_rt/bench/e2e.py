"""End-to-end benchmark: LSL push -> engine -> ZeroMQ receipt, with real processes and sockets.

A child process publishes Poisson spikes over LSL in real time (a chunk every millisecond on average, at
jittered times so that pushes fall at every phase of the engine's ticks; every spike stamped with the LSL
clock at its push) and counts what it pushes. The engine of ``poyo-rt run``
(:func:`poyo_rt.runtime.launch.build_decoder`, the run config's defaults: ``threads: auto``, the
encoder key/value cache) decodes at a fixed tick rate and publishes on 127.0.0.1; a subscriber in a
third process (as a closed loop's consumer would be: not sharing the engine's interpreter lock) stamps each
message's receipt on the LSL clock; ``--receiver-spin-ms`` makes it busy-poll around each tick's expected
arrival (``Subscriber(spin_s=...)``), as a closed loop's consumer that must react at once would.

Measured per tick, from the messages themselves: **receipt latency** = receipt time - the newest
spike's push time (what a closed loop waits for, LSL and ZeroMQ included; over the ticks whose window ends
before the player pauses at the end of the phase), **tick -> receipt** =
receipt time - the tick's scheduled time (the window end): the pipeline's own latency, split into **tick ->
send** (the engine's part, up to the message's send stamp) and **send -> receipt** (ZeroMQ's and the
subscriber's wake-up), the forward time carried in the message, and deadline misses (a tick published later
than one period after its schedule, plus ticks skipped because the loop fell a whole period behind).

Receipt latency = **newest spike's age at the tick** (window end - newest spike's push time) + tick -> receipt,
and the first term is mostly the stream's own silence: with Poisson spikes at rate r the newest spike is
older than a at the tick with probability exp(-r a), so at 2,000 spikes/s its p99 is at least
ln(100) / 2,000 s = 2.3 ms, whatever the decoder does. The table prints that age and this floor.

Phases, each a fresh decoder on the same live stream: first the **baseline** (``--baseline-duration``
seconds, 0 to skip), where the engine's forward is torch_brain's POYO with the same weights (full
forward on the tokenizer's arrays every tick), then **poyo_rt** for ``--duration`` seconds. In each
phase the player pushes only while the phase runs; at its end the player pauses and the engine stops (so its
latency log ends with the stream), then what was still in transit is taken in for 0.5 s without decoding, so
the spikes the inlet took in must equal the spikes pushed: the **ingest** check (nothing dropped anywhere:
inlet, buffer, tokenizer).

LSL stays on this machine: :func:`poyo_rt.stream.lsl.configure_lsl` (machine scope) runs first in both
processes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from poyo_rt.bench.common import percentiles_us
from poyo_rt.bench.forward import BENCH_CONFIGS, build_model, torch_brain_kwargs, torch_brain_twin
from poyo_rt.runtime.report import describe_miss_causes, describe_preparation
from poyo_rt.runtime.threads import allowed_cores, format_cores, pin_process
from poyo_rt.runtime.runner import ForwardResult, trimmed_views
from poyo_rt.stream.tokenizer import WindowTimes

log = logging.getLogger(__name__)

CHUNK_S = 1e-3  # the player pushes every millisecond on average (jittered: see play)
PAUSED = -1
ROW = ("t_recv_s", "window_end_s", "newest_spike_s", "forward_us", "flags", "t_send_s")  # a message, as listen keeps it


# ------------------------------------------------------------------------------- the player process
def play(name: str, source_id: str, n_units: int, rate_hz: float, seed: int, phase, pushed, alive, ready,
         cores: tuple[int, ...] | None = None) -> None:
    """Child process: an events outlet pushing Poisson spikes every ``CHUNK_S`` on average while
    ``phase.value`` >= 0, each push the spikes of the interval since the last one.

    The intervals are drawn uniformly from 0.5-1.5 x ``CHUNK_S``: on a fixed 1 ms grid the pushes kept one
    phase against the engine's ticks (both run on the LSL clock) for a whole run, so the newest spike's age
    at each tick, and the receipt latency with it, depended on that phase, drawn once at start (medians
    0.3 to 1.4 ms apart between otherwise equal runs). ``pushed[i]`` counts the spikes pushed during phase
    ``i``; the loop ends when ``alive`` is cleared. ``cores``: run on these CPU cores only.
    """
    from poyo_rt.stream import lsl

    if cores:
        pin_process(os.getpid(), cores)
    lsl.configure_lsl()
    outlet = lsl.make_spike_outlet(name, [f"unit{i}" for i in range(n_units)], source_id)
    rng = np.random.default_rng(seed)
    ready.set()
    t_next = lsl.local_clock()
    while alive.is_set():
        interval = CHUNK_S * rng.uniform(0.5, 1.5)
        t_next += interval
        wait = t_next - lsl.local_clock()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.1:  # fell far behind (machine stalled): restart the schedule, do not burst
            t_next = lsl.local_clock()
        i = phase.value
        if i < 0:
            continue
        n = rng.poisson(rate_hz * interval)
        if n:
            block = rng.integers(0, n_units, (n, 1)).astype(np.int32)
            now = lsl.local_clock()
            outlet.push_chunk(block, [now] * n)
            pushed[i] += n


def listen(endpoint: str, conn, stop, ready, cores: tuple[int, ...] | None = None, spin_s: float = 0.0) -> None:
    """Child process: subscribe to ``endpoint`` and stamp each message's receipt on the LSL clock until
    ``stop`` is set; then send one row a message through ``conn``: the :data:`ROW` fields. ``cores``: run on
    these CPU cores only; ``spin_s``: the subscriber's busy-poll around each expected tick (0 = off)."""
    from poyo_rt.stream import lsl
    from poyo_rt.stream.publisher import Subscriber

    if cores:
        pin_process(os.getpid(), cores)
    lsl.configure_lsl()
    sub = Subscriber(endpoint, rcvhwm=1_000_000, clock=lsl.local_clock, spin_s=spin_s)
    ready.set()
    rows: list[tuple[float, ...]] = []
    try:
        while not stop.is_set():
            msg = sub.recv(timeout_s=0.05)
            if msg is not None:
                rows.append((msg.t_recv_s, msg.window_end_s, msg.newest_spike_s, msg.stages_us.get("forward", np.nan),
                             msg.flags, msg.t_send_s))
    finally:
        conn.send(np.array(rows, dtype=np.float64).reshape(-1, len(ROW)))
        sub.close()


def poisson_age_floor_us(rate_hz: float, q: float = 0.99) -> float:
    """The q-quantile of the newest spike's age at a tick for Poisson spikes at ``rate_hz`` (µs):
    P(age > a) = exp(-rate a), so a_q = -ln(1 - q) / rate."""
    return -np.log1p(-q) / rate_hz * 1e6


# ------------------------------------------------------------------------------- the baseline forward
class TorchBrainRunner:
    """The engine's runner interface with torch_brain's POYO: the full forward every tick (CPU), on the
    tokenizer's arrays trimmed to the real tokens (rounded up to 8) and masked."""

    def __init__(self, twin: torch.nn.Module):
        self.twin = twin.eval()
        self.device = torch.device("cpu")

    def prepare(self, window: WindowTimes) -> None:
        """Nothing to prepare between ticks: torch_brain's forward runs whole at the tick."""

    def warm(self, arrays: dict[str, np.ndarray], n_tokens: int) -> None:
        """Nothing to warm: the baseline runs as torch_brain would."""

    def counters(self) -> dict[str, int]:
        """No cache, nothing counted."""
        return {}

    def release(self) -> None:
        """Nothing launched ahead."""

    def run(self, arrays: dict[str, np.ndarray], n_tokens: int, during=None) -> ForwardResult:
        """As :meth:`Runner.run`; ``during`` (the engine's warm_during_forward) runs first: a CPU forward
        leaves no wait to overlap."""
        if during is not None:
            during()
        n = min(-(-max(n_tokens, 1) // 8) * 8, arrays["input_mask"].shape[1])
        kw = torch_brain_kwargs(trimmed_views(arrays, n))
        t0 = time.perf_counter_ns()
        with torch.inference_mode():
            out = self.twin(**kw)
        t1 = time.perf_counter_ns()
        values = out[0].numpy().astype(np.float32, copy=True)
        return ForwardResult(values=values, n_input=n, h2d_us=0.0, forward_us=(t1 - t0) / 1e3,
                             d2h_us=(time.perf_counter_ns() - t1) / 1e3)


# ------------------------------------------------------------------------------- one phase
def torch_brain_runner(engine, model) -> TorchBrainRunner:
    """The baseline phase's runner: torch_brain's POYO with ``model``'s weights, warmed up once."""
    twin = torch_brain_twin(model)
    if twin is None:
        raise RuntimeError("the torch_brain baseline needs torch_brain (pip install -e '.[test]')")
    runner = TorchBrainRunner(twin)
    runner.run(engine.tokenizer.arrays(), engine.tokenizer.n_start_end)  # warm-up
    return runner


class Player:
    """The player process (:func:`play`) and the shared values that steer it: ``phase`` (index of the phase
    whose count ``pushed[index]`` the pushes go to; :data:`PAUSED`: push nothing). ``cores``: the CPU cores of
    the bench's helper processes (this player, and the subscriber of each phase); None = not pinned."""

    def __init__(self, n_phases: int, *, n_units: int, rate_hz: float, seed: int = 0,
                 cores: tuple[int, ...] | None = None):
        self.ctx = mp.get_context("spawn")
        self.cores = cores
        self.name = f"poyo-bench-{int(time.time() * 1e3) % 10**9}"
        self.phase = self.ctx.Value("i", PAUSED)
        self.pushed = self.ctx.Array("q", n_phases)
        self._alive, ready = self.ctx.Event(), self.ctx.Event()
        self._alive.set()
        self._proc = self.ctx.Process(target=play, daemon=True, args=(
            self.name, self.name + "-src", n_units, rate_hz, seed, self.phase, self.pushed, self._alive, ready, cores))
        self._proc.start()
        if not ready.wait(20):
            self._proc.terminate()
            raise RuntimeError("the LSL player process did not start within 20 s")

    def pin(self, cores: tuple[int, ...] | None) -> None:
        """Move the player's threads (liblsl's included) to ``cores``, or back to all of this process's
        cores (None); the subscribers of later phases start there too."""
        self.cores = cores
        pin_process(self._proc.pid, cores or tuple(allowed_cores() or ()))

    def close(self) -> None:
        self._alive.clear()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()


def e2e_config(stream_name: str, *, device: str = "cpu", threads: int | str | None = "auto", kernels: str = "auto",
               tick_hz: float = 50.0, rate_hz: float = 2000.0, max_spikes: int = 8192,
               endpoint: str = "tcp://127.0.0.1:*", model: dict | None = None, **engine):
    """The run config of a benchmark phase: the decoder of ``poyo-rt run`` on ``stream_name``, publishing on
    ``endpoint`` (default a free loopback port); ``model``: further ``model.*`` settings (``graph_copies``,
    ``cuda_warm``...); ``engine``: further ``engine.*`` settings (``spin_ms``, ``pre_tick``...)."""
    from poyo_rt.config import config_from_dict

    return config_from_dict({
        "model": {"device": device, "session_id": "session0", "threads": threads, "kernels": kernels,
                  **(model or {})},
        "input": {"name": stream_name, "resolve_timeout_s": 10.0},
        "engine": {"tick_hz": tick_hz, "max_spikes": max_spikes,
                   "buffer_capacity": max(65536, int(4 * rate_hz * max(1.0, 1.0 / tick_hz))), **engine},
        "output": {"endpoint": endpoint},
        "metrics": {"log_every_s": 0, "report_path": None},
    })


def run_phase(label: str, index: int, *, model, cfg, duration_s: float, player: Player,
              progress: Callable[[str], None] = log.info, report_path: Path | None = None,
              make_runner: Callable | None = None, receiver_spin_s: float = 0.0) -> dict:
    """One phase: a fresh decoder from ``cfg`` (its runner replaced by ``make_runner(engine)`` if given) on the
    player's stream for ``duration_s``, a subscriber process stamping receipts (busy-polling ``receiver_spin_s``
    around each expected tick); returns the phase's numbers."""
    from poyo_rt.runtime.launch import build_decoder
    from poyo_rt.stream import lsl
    from poyo_rt.stream.wire import TickFlags

    phase, pushed = player.phase, player.pushed
    decoder = build_decoder(cfg, model=model)
    engine = decoder.engine
    if make_runner is not None:
        engine.runner = make_runner(engine)
    conn, child_conn = player.ctx.Pipe(duplex=False)
    stop, ready = player.ctx.Event(), player.ctx.Event()
    listener = player.ctx.Process(target=listen, daemon=True,
                                  args=(decoder.publisher.endpoint, child_conn, stop, ready, player.cores,
                                        receiver_spin_s))
    listener.start()

    paused_at = [np.inf]  # LSL time the player paused: later windows have no new spikes to measure receipt by

    def stopper() -> None:  # pause the player and stop the engine: its last window ends with the stream
        end = time.monotonic() + duration_s
        last = 0.0
        while time.monotonic() < end and not engine.stopping:
            time.sleep(0.2)
            elapsed = duration_s - (end - time.monotonic())
            if elapsed - last >= 30.0:
                last = elapsed
                progress(f"{label}: {elapsed:.0f}/{duration_s:g} s, {engine.ticks} ticks")
        paused_at[0] = lsl.local_clock()
        phase.value = PAUSED
        engine.stop()

    try:
        if not ready.wait(30) or not decoder.publisher.wait_for_subscriber(10.0):
            raise RuntimeError("the subscriber process did not subscribe within 40 s")
        phase.value = index
        stop_thread = threading.Thread(target=stopper, daemon=True)
        stop_thread.start()
        progress(f"{label}: decoding for {duration_s:g} s")
        summary = engine.run()
        stop_thread.join()
        drain_end = time.monotonic() + 0.5  # what was in transit at the pause is taken in (counted), not decoded
        while time.monotonic() < drain_end:
            engine.take_in()
            time.sleep(0.01)
        stop.set()
        arr = conn.recv() if conn.poll(30) else np.empty((0, len(ROW)))
        counters = engine.counters()
        if report_path is not None:  # the engine's latency log: `poyo-rt report PATH` plots it
            engine.write_report(report_path, extra={"bench": "e2e", "phase": label, "duration_s": duration_s})
            progress(f"{label}: wrote {report_path} (poyo-rt report {report_path})")
        taken = (engine.buffer.next_seq + sum(engine.buffer.drops.values())
                 + sum(getattr(decoder.inlet, "drops", {}).values()))
    finally:  # also when the engine failed: no subscriber process or sockets left behind
        phase.value = PAUSED
        stop.set()
        listener.join(5)
        if listener.is_alive():
            listener.terminate()
        decoder.close()

    # receipt latency only while spikes flow (the last tick, just after the pause, may end past it); the
    # engine stops at the pause, so its latency log holds no ticks of the stream's silence after it
    t_recv, window_end, newest, forward, flags, t_send = arr.T
    pushing = window_end <= paused_at[0]
    receipt = (t_recv - newest)[pushing] * 1e6
    receipt = receipt[np.isfinite(receipt)]
    age = (window_end - newest)[pushing] * 1e6
    age = age[np.isfinite(age)]
    flags = flags.astype(np.int64)
    missed_published = int(np.count_nonzero(flags & int(TickFlags.DEADLINE_MISSED)))
    drops = {k: v for k, v in counters.items() if k != "skipped_ticks" and v}
    return {
        "path": label, "duration_s": duration_s, "ticks_published": int(engine.ticks), "ticks_received": int(len(arr)),
        "receipt_ticks": int(receipt.shape[0]),
        "receipt_us": percentiles_us(receipt), "spike_age_us": percentiles_us(age),
        "forward_us": percentiles_us(forward),
        "tick_to_receipt_us": percentiles_us((t_recv - window_end) * 1e6),
        "tick_to_send_us": percentiles_us((t_send - window_end) * 1e6),
        "send_to_receipt_us": percentiles_us((t_recv - t_send) * 1e6),
        "deadline_misses": missed_published + int(engine.skipped_ticks),
        "late_ticks": missed_published, "skipped_ticks": int(engine.skipped_ticks),
        "spikes_pushed": int(pushed[index]), "spikes_taken_in": int(taken), "spikes_accepted": int(engine.buffer.next_seq),
        "drops": drops, "threads": torch.get_num_threads(), "engine": summary, "runner": summary["runner"],
        "early_ticks": int(summary.get("early_ticks", 0)),
        "kernels": getattr(engine.runner, "kernels", None),
    }


# ------------------------------------------------------------------------------- the benchmark
def split_cores(cpu_affinity: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(the engine loop's cores, the helper processes' cores) for ``--cpu-affinity``: the helpers get this
    process's other cores, or stay unpinned (None) when there are none (a warning) or nothing is pinned."""
    from poyo_rt.runtime.launch import check_cores

    pinned = tuple(sorted(set(cpu_affinity or ())))
    if not pinned:
        return (), None
    check_cores(pinned)
    rest = tuple(sorted((allowed_cores() or frozenset()) - set(pinned)))
    if not rest:
        log.warning("the engine is pinned to every core this process may use (%s): the player and subscriber "
                    "share them", format_cores(pinned))
        return pinned, None
    return pinned, rest


def run_e2e_bench(config: str = "poyo_1.3M", *, duration_s: float = 30.0, baseline_duration_s: float | None = None,
                  tick_hz: float = 50.0, n_units: int = 100, rate_hz: float = 2000.0, device: str = "cpu",
                  threads: int | str | None = "auto", max_spikes: int | None = None, seed: int = 0,
                  realtime_priority: int | None = None, report_dir: str | Path | None = None,
                  kernels: str = "auto", spin_ms: float = 1.0, pre_tick: bool = True,
                  cpu_affinity: Sequence[int] | None = None, graph_copies: bool = False, cuda_warm: str = "copy",
                  warm_during_forward: bool = False, receiver_spin_ms: float = 0.0, ipc: bool = False,
                  progress: Callable[[str], None] = log.info) -> dict:
    """Run the baseline phase (unless ``baseline_duration_s`` is 0) and the poyo_rt phase; see the module
    docstring. ``max_spikes`` defaults to 1.25 x the spikes a window holds at ``rate_hz`` (at least 8,192).
    ``report_dir``: write each phase's engine latency log there (``e2e-CONFIG-PHASE.json``, per-stage
    histograms and the last 4,096 ticks; ``poyo-rt report`` turns it into a report). ``kernels``: the run
    config's ``model.kernels`` (``"auto"``: Triton on CUDA where it runs; each phase reports the kernels it
    ran); ``spin_ms``, ``pre_tick``: its ``engine.spin_ms`` and ``engine.pre_tick``; ``cpu_affinity``: its
    ``engine.cpu_affinity``, and the player and subscriber processes then run on the process's other cores
    (where there are any), as on a rig whose decoder has cores of its own; ``graph_copies``, ``cuda_warm``: its
    ``model.graph_copies`` and ``model.cuda_warm``, ``warm_during_forward`` its ``engine.warm_during_forward``
    (CUDA); ``receiver_spin_ms``: the subscriber busy-polls this long before and after each tick's expected
    arrival (0 = it sleeps in ``poll``); ``ipc``: publish on an ``ipc://`` endpoint in a temporary directory
    instead of a free ``tcp://127.0.0.1`` port."""
    from poyo_rt.stream import lsl

    if config not in BENCH_CONFIGS:
        raise ValueError(f"unknown bench config {config!r}; choose from {sorted(BENCH_CONFIGS)}")
    baseline_duration_s = duration_s if baseline_duration_s is None else baseline_duration_s
    if duration_s <= 0 or baseline_duration_s < 0:
        raise ValueError("durations must be > 0 (the baseline's >= 0)")
    if not 0 <= receiver_spin_ms <= 1000:
        raise ValueError(f"receiver_spin_ms: expected 0 (off) to 1000 ms, got {receiver_spin_ms!r}")
    lsl.configure_lsl()
    pinned, helper_cores = split_cores(cpu_affinity)
    model = build_model(BENCH_CONFIGS[config], n_units=n_units)
    window = model.sequence_length
    max_spikes = max_spikes or max(8192, int(1.25 * rate_hz * window))
    phases = ([("torch_brain", baseline_duration_s)] if baseline_duration_s > 0 else []) + [("poyo_rt", duration_s)]
    sockets = tempfile.TemporaryDirectory(prefix="poyo-rt-bench-") if ipc else None
    player = Player(len(phases), n_units=n_units, rate_hz=rate_hz, seed=seed, cores=helper_cores)
    cfg = e2e_config(player.name, device=device, threads=threads, kernels=kernels, tick_hz=tick_hz, rate_hz=rate_hz,
                     max_spikes=max_spikes, realtime_priority=realtime_priority, spin_ms=spin_ms, pre_tick=pre_tick,
                     cpu_affinity=list(pinned), warm_during_forward=warm_during_forward,
                     endpoint=f"ipc://{sockets.name}/out" if sockets else "tcp://127.0.0.1:*",
                     model={"graph_copies": graph_copies, "cuda_warm": cuda_warm})
    results = []
    try:
        for i, (label, dur) in enumerate(phases):
            report_path = Path(report_dir) / f"e2e-{config}-{label}.json" if report_dir is not None else None
            baseline = (lambda engine: torch_brain_runner(engine, model)) if label == "torch_brain" else None
            results.append(run_phase(label, i, model=model, cfg=cfg, duration_s=dur, player=player,
                                     progress=progress, report_path=report_path, make_runner=baseline,
                                     receiver_spin_s=receiver_spin_ms / 1e3))
    finally:
        player.close()
        if sockets is not None:
            sockets.cleanup()
    base = results[0]
    for r in results:
        r["ratio_receipt_p99_vs_baseline"] = base["receipt_us"]["p99_us"] / r["receipt_us"]["p99_us"]
        r["ratio_forward_median_vs_baseline"] = base["forward_us"]["median_us"] / r["forward_us"]["median_us"]
    return {"config": config, "tick_hz": tick_hz, "n_units": n_units, "rate_hz": rate_hz, "device": device,
            "max_spikes": max_spikes, "realtime_priority": realtime_priority, "kernels": kernels, "spin_ms": spin_ms,
            "pre_tick": pre_tick, "cpu_affinity": list(pinned), "helper_cores": list(helper_cores or ()),
            "graph_copies": graph_copies, "cuda_warm": cuda_warm, "warm_during_forward": warm_during_forward,
            "receiver_spin_ms": receiver_spin_ms, "transport": "ipc" if ipc else "tcp",
            "spike_age_floor_p99_us": poisson_age_floor_us(rate_hz),
            "phases": results, "baseline": base["path"]}


def format_e2e_table(result: dict) -> str:
    """Aligned text: per phase receipt/forward/tick percentiles (ms), misses, ingest accounting."""
    ran = result["phases"][-1].get("kernels") or result.get("kernels", "torch")
    kernels = f", {ran} kernels" if result["device"] != "cpu" else ""
    kernels += ", copies in the graphs" if result.get("graph_copies") else ""
    pre = ", tokenized early and warmed" if result.get("pre_tick") and result.get("spin_ms") else ""
    pre += " (the whole call replayed)" if pre and result.get("cuda_warm") == "replay" else ""
    pre += " (the tick's graph launched ahead, rung at the tick)" if pre and result.get("cuda_warm") == "launch" else ""
    pre += ", publisher warmed during the forward" if result.get("warm_during_forward") else ""
    if result.get("transport") == "ipc":
        pre += ", published on ipc://"
    if result.get("receiver_spin_ms"):
        pre += f", subscriber busy-polling {result['receiver_spin_ms']:g} ms around each tick"
    if result.get("cpu_affinity"):
        helpers = format_cores(result["helper_cores"]) if result.get("helper_cores") else "unpinned"
        pre += f"; loop on core(s) {format_cores(result['cpu_affinity'])}, player and subscriber on {helpers}"
    lines = [f"{result['config']} at {result['tick_hz']:g} Hz, {result['n_units']} units, {result['rate_hz']:g} "
             f"spikes/s, {result['device']}{kernels}, woken {result.get('spin_ms', 0.0):g} ms before each tick{pre}",
             f"{'path':<12} {'metric (ms)':<22} {'median':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}"]
    for r in result["phases"]:
        for key, title in (("receipt_us", "push -> receipt"), ("spike_age_us", "newest spike age"),
                           ("tick_to_receipt_us", "tick -> receipt"), ("tick_to_send_us", "  tick -> send"),
                           ("send_to_receipt_us", "  send -> receipt"), ("forward_us", "forward")):
            if key not in r:  # results written before the age was measured
                continue
            s = r[key]
            lines.append(f"{r['path']:<12} {title:<22} " + " ".join(
                f"{s[k] / 1e3:>8.2f}" for k in ("median_us", "p90_us", "p99_us", "p999_us", "max_us")))
        lines.append(f"{r['path']:<12} {r['duration_s']:g} s, {r['ticks_published']} ticks, deadline misses "
                     f"{r['deadline_misses']} (late {r['late_ticks']}, skipped {r['skipped_ticks']}), "
                     f"{r['threads']} thread(s); x baseline: receipt p99 {r['ratio_receipt_p99_vs_baseline']:.2f}, "
                     f"forward p50 {r['ratio_forward_median_vs_baseline']:.2f}")
        causes = describe_miss_causes(r.get("engine", {}).get("miss_causes", {}))
        if causes:  # the engine counts a tick late once handed to ZeroMQ; a message's flag is set before its send
            over = r["engine"]["stages"]["tick"].get("deadline_misses", "?")
            stolen = r["engine"].get("stolen_ms")
            steal = f" ({stolen:.0f} ms stolen by the hypervisor from the loop's cores in all)" if stolen else ""
            lines.append(f"{r['path']:<12} {over} ticks over the deadline once sent, by cause: {causes}{steal}")
        lines.append(f"{r['path']:<12} ingest: pushed {r['spikes_pushed']}, taken in {r['spikes_taken_in']}, "
                     f"accepted {r['spikes_accepted']}, drops {r['drops'] or 'none'}")
        if "spike_age_us" in r:
            lines.append(f"{r['path']:<12} newest spike age p99 floor of a Poisson stream at {result['rate_hz']:g} "
                         f"spikes/s: {poisson_age_floor_us(result['rate_hz']) / 1e3:.2f} ms (the stream's own silence)")
        prepared = describe_preparation(r.get("runner", {}))
        if prepared:
            lines.append(f"{r['path']:<12} kv-cache: {prepared}")
        if "launched_early" in r.get("runner", {}):
            c = r["runner"]
            lines.append(f"{r['path']:<12} graphs launched ahead {c['launched_early']}, of which a tick replaced "
                         f"{c['launch_missed']} (another bucket); doorbell waits timed out {c['bell_timeouts']}")
    return "\n".join(lines)

"""The tick loop: pull spikes, buffer, tokenize, forward, publish, time every stage.

One tick, at scheduled time ``t_tick`` on the LSL clock (``pylsl.local_clock``)::

    pull      inlet.pull()                     new (times, units) since the last tick
    buffer    buffer.append(...)               validated; drops counted by reason
    tokenize  tokenizer.update(t_end, buffer)  window [t_end - window_s, t_end), O(new + expired)
    h2d / forward / d2h   runner.run(...)      CUDA graph replay (GPU) or eager (CPU); ``runner`` = the
                                               whole call on the host (on CUDA: also packing, launching,
                                               waiting and reading back, which the GPU's events miss;
                                               CUDA also splits it into ``pack``, ``launch``, ``overlap``
                                               and ``sync``, see :class:`~poyo_rt.runtime.runner.ForwardResult`)
    publish   publisher.send(...)              one ZeroMQ message, never blocks

``t_end = t_tick - input_delay_s``. Ticks follow absolute deadlines
``t_start + k / tick_hz`` (never "sleep a period"), so the schedule does not drift; a tick
that starts more than a period late skips the ticks it missed (counted as ``skipped_ticks``).
With ``tick_hz = 0`` the engine decodes whenever new spikes arrive, with the window ending
just after the newest spike.

Garbage collector: before the loop starts, :meth:`Engine.run` collects once and freezes every object
alive then (``gc.freeze()``: the model, torch, liblsl, numpy...), so the collector never scans them
again. A full collection of the ~170,000 objects a decoder process holds took 68-95 ms on the 2-core
test VM (a deadline miss whenever Python decides to run one); after the freeze it scans only what the
loop itself keeps. ``EngineSettings.freeze_gc`` turns this off; :class:`GcWatch` counts collections
and their longest pause during the run (in the summary).

Waking up: ``time.sleep`` returns late, by 0.1-0.3 ms on the 2-core test VM (``tools/sleep_overshoot.py``),
and every tick would start that late. The loop therefore sleeps until ``EngineSettings.spin_ms`` before each
tick (1 ms by default, at most a quarter period: 5 % of a core at 50 Hz; 0 turns it off) and then, unless
``EngineSettings.pre_tick`` is False (it then wakes earlier by the pre-tick's usual duration, so that the
spin keeps its length):

1. tokenizes early (:meth:`Engine._pre_tick`): the window is moved to the coming tick's end with the
   spikes buffered so far, so the tick itself only adds those that arrive in the last moments
   (:meth:`TickTokens.after` merges the two updates' counts);
2. warms the code the tick runs after the tokenizer (:meth:`Runner.warm`, :meth:`Publisher.warm`): after
   sleeping most of a period, each stage's code and data are out of the CPU's caches and run 5-20x slower
   than warm (on the test VM a 6 µs message encoding takes 89 µs after a sleep: ``tools/cold_code.py``;
   the tick's host work with and without this: ``tools/host_overhead.py``);
3. (always) busy-waits to the tick, pulling from the inlet into the buffer as it spins (:meth:`Engine.take_in`),
   so the tick's own pull and buffer stages find next to nothing to do.

Scheduling: ``EngineSettings.realtime_priority`` runs the loop's thread under ``SCHED_FIFO``
(:class:`~poyo_rt.runtime.threads.RealtimePriority`), so other processes on the machine cannot preempt a
forward; off by default (it needs root or CAP_SYS_NICE). ``EngineSettings.cpu_affinity`` pins the loop's thread
to chosen cores and moves the process's other threads (ZeroMQ's and liblsl's I/O, torch's workers) off them
(:class:`~poyo_rt.runtime.threads.CpuAffinity`): the loop keeps its code and data in its core's caches and is
not preempted there by the threads that every publish and every incoming chunk wake.

Latencies recorded per tick (µs): ``start`` = scheduled tick time to the tick's first step (a late wake-up, or
the previous tick and preparation running over: how much of a miss is not the tick's own work), every stage
above, ``e2e`` = newest spike's LSL time to
the moment the message is handed to ZeroMQ, and ``tick`` = scheduled tick time to that
moment; a ``tick`` above the deadline (default: one period) is a deadline miss. ``spike_age`` = the window
end minus the newest spike's time (also in the message): ``e2e = spike_age + input_delay_s + tick``, and for
a Poisson stream at r spikes/s the age alone exceeds a with probability exp(-r a) (the stream's silence,
not the decoder's latency).

Where the loop's time went, per tick (µs, from the tick's first step to its send; :class:`ThreadClock`): ``cpu``
= the loop thread's CPU time, ``cpu_wait`` = the time it was ready but another thread or process had its core,
``off_cpu`` = the rest (blocked, or stolen by the hypervisor of a virtual machine; where the run-queue wait
cannot be read, not on Linux, it includes that wait). On CUDA the wait for the GPU (an event's ``synchronize``,
a spin under CUDA's default scheduling while there are fewer CUDA contexts than cores) counts as ``cpu``; the
GPU's own time is ``forward``. Each deadline miss is counted under the cause whose value exceeded its median the
most (:data:`~poyo_rt.runtime.report.MISS_CAUSES`; ``Engine.miss_causes``, in the summary and the latency log),
or as ``stolen`` when a hypervisor took the loop's core for at least half the time the tick ran over its median
(:class:`~poyo_rt.runtime.threads.StealClock`, read once a tick after the send: Linux's steal time, in 10 ms
steps; ``Engine.stolen_us`` sums it over the run). The last :data:`MISS_LOG` missed ticks are kept, each with all
its stages, the steal time, what ran since the previous tick's send (``prev_tick_us``: that tick's ``tick``;
``prepare_us``: the preparation for this tick; ``pre_tick_us``: its pre-tick; absent when they did not run: a
late ``start`` beyond them is a late wake-up), the time it was scheduled (``t_tick_s``, LSL s: CLOCK_MONOTONIC on
Linux, to set beside other logs of the machine, e.g. ``tools/stall_watch.py``'s) and the seconds since the run
began (``Engine.missed_ticks``, in the summary and the latency log, listed by ``poyo-rt report``), so every miss
of a long run can be looked at, not only those among the last ticks' raw samples.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from poyo_rt.model.poyo import POYO
from poyo_rt.runtime.metrics import LatencyStats, PeriodicReporter
from poyo_rt.runtime.report import MISS_CAUSES, miss_cause
from poyo_rt.runtime.runner import Runner
from poyo_rt.runtime.threads import CpuAffinity, RealtimePriority, StealClock, ThreadClock, allowed_cores
from poyo_rt.stream.buffer import SpikeBuffer
from poyo_rt.stream.tokenizer import IncrementalTokenizer, TickTokens
from poyo_rt.stream.wire import TickFlags

log = logging.getLogger(__name__)

#: Pulls per tick at most while the inlet reports a backlog (each pull takes up to max_chunk samples).
MAX_PULLS_PER_TICK = 16
#: The loop wakes at most this much earlier than the spin for the pre-tick (s).
MAX_PRE_TICK_S = 0.005
#: Missed ticks whose stages the engine keeps (the most recent; ``Engine.missed_ticks``).
MISS_LOG = 1024

STAGES = ("start", "pull", "buffer", "tokenize", "h2d", "forward", "d2h", "runner", "pack", "launch", "overlap", "sync",
          "publish", "spike_age", "e2e", "tick", "cpu", "cpu_wait", "off_cpu")

#: Ticks between two updates of the medians the causes are measured against.
TYPICAL_EVERY = 256

# Wire-format counter names are at most 16 ASCII characters.
_SHORT_NAMES = {"unit_out_of_range": "unit_range", "non_integer_count": "non_int_count"}


class SpikeSource(Protocol):
    """What the engine needs of an input (``poyo_rt.stream.lsl.SpikeInlet`` is one)."""

    unit_ids: Sequence[str]
    drops: dict[str, int]
    connected: bool

    def pull(self) -> tuple[np.ndarray, np.ndarray]: ...


class TickSink(Protocol):
    """What the engine needs of an output (``poyo_rt.stream.publisher.Publisher`` is one). A sink may also
    have ``warm()``: run its sending code without sending, called shortly before each tick."""

    last_send_us: float

    def send(self, **kwargs: Any) -> float: ...


def wait_until(deadline: float, clock: Callable[[], float], sleep: Callable[[float], None], spin_s: float,
               poll: Callable[[], object] | None = None, on_wake: Callable[[], object] | None = None,
               wake_s: float = 0.0) -> None:
    """Return at ``deadline`` (on ``clock``, s): sleep to ``spin_s`` before it, then busy-wait, calling
    ``poll`` (if given) on each turn. ``on_wake`` (if given) runs once before the spin, when more than
    ``spin_s`` is left: the sleep then ends ``wake_s`` earlier (how long ``on_wake`` usually takes), so that
    the spin keeps its ``spin_s``. The spin is bounded in real time as well (``spin_s`` + 1 ms), so a clock
    that does not move (a test's) cannot hold it; on a real clock it returns early only if the sleep itself
    came back over 1 ms early."""
    wait = deadline - clock()
    if wait > spin_s:
        waking = on_wake is not None and spin_s > 0
        nap = wait - spin_s - (wake_s if waking else 0.0)
        if nap > 0:
            sleep(nap)
        if waking:
            on_wake()
    give_up = time.perf_counter() + spin_s + 1e-3
    while spin_s > 0 and clock() < deadline and time.perf_counter() < give_up:
        if poll is not None:
            poll()


def moving_average(average: float, sample: float) -> float:
    """An exponential moving average of durations (weight 0.2 on the new sample); 0.0 = no sample yet."""
    return sample if average == 0.0 else 0.8 * average + 0.2 * sample


@dataclass
class EngineSettings:
    """Tick-loop settings (seconds unless named otherwise). See ``configs/default.yaml``."""

    tick_hz: float = 50.0
    input_delay_s: float = 0.0
    output_lag_s: float = 0.0
    n_outputs: int = 1
    output_spacing_s: float | None = None
    max_spikes: int = 8192
    buffer_capacity: int = 65536
    deadline_ms: float | None = None
    log_every_s: float = 10.0
    idle_poll_s: float = 0.0005
    freeze_gc: bool = True  #: gc.collect() + gc.freeze() before the loop (see the module docstring)
    realtime_priority: int | None = None  #: run the loop under SCHED_FIFO at this priority (1-99); None = normal
    cpu_affinity: tuple[int, ...] = ()  #: CPU cores the loop's thread runs on; empty = wherever the OS puts it
    spin_ms: float = 1.0  #: wake this long before a tick (pre-tick work, then busy-wait: a sleep wakes late); 0 = off
    pre_tick: bool = True  #: on waking, tokenize early and warm the tick's code (Engine._pre_tick); False = only spin
    #: CUDA: while the GPU runs the tick's forward, warm the sink's code (``Publisher.warm``: the last message
    #: encoded again and sent nowhere), so that the send right after runs warm; the host would only wait.
    #: Its host time is the ``overlap`` stage. Refused on the CPU, whose forward leaves no wait to use.
    warm_during_forward: bool = False

    @property
    def period_s(self) -> float:
        return 1.0 / self.tick_hz if self.tick_hz > 0 else 0.0

    @property
    def spin_s(self) -> float:
        """The busy-wait before each tick, s: ``spin_ms``, at most a quarter of the tick period (at 1 kHz a
        1 ms spin would never sleep, and never pre-tick)."""
        return min(self.spin_ms / 1e3, self.period_s / 4)


class GcWatch:
    """Counts garbage collections by generation and the longest pause (µs) while installed."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.max_pause_us = 0.0
        self._t0 = 0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        else:
            self.collections[info["generation"]] += 1
            self.max_pause_us = max(self.max_pause_us, (time.perf_counter_ns() - self._t0) / 1e3)

    def __enter__(self) -> "GcWatch":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def as_dict(self) -> dict:
        return {"collections_by_generation": list(self.collections), "max_pause_us": self.max_pause_us}


class Engine:
    """Drives one decoder: a spike source in, a tick sink out.

    Args:
        model: the POYO to run (its vocabularies name the units and sessions it knows).
        source: spike input; its ``unit_ids`` are matched to the model's at construction.
        sink: where each tick's message goes.
        unit_map: (U_stream,) model vocabulary row of each stream unit, -1 = drop (see
            :func:`poyo_rt.stream.units.match_units`).
        session_index: the session's row in ``model.session_emb``.
        output_mean, output_std: (D_out,) the published values are ``model output * std + mean``
            (the checkpoint's behaviour normalisation; default identity).
        settings: :class:`EngineSettings`.
        device: "cpu" or "cuda"; buckets / compile / cuda_graphs / kv_cache / precision / fused / kernels /
            graph_copies: see :class:`~poyo_rt.runtime.runner.Runner`; cuda_warm: its ``warm``.
        clock: LSL clock, seconds (``pylsl.local_clock``; CLOCK_MONOTONIC on Linux).
        steal_clock: where the steal time of the loop's cores is read; default: :meth:`run` reads
            ``/proc/stat`` for the cores the loop may run on (its pinned cores, else the process's).
    """

    def __init__(self, model: POYO, source: SpikeSource, sink: TickSink, *, unit_map: np.ndarray,
                 session_index: int, settings: EngineSettings, device: str = "cpu",
                 buckets: list[int] | None = None, compile: bool = False, cuda_graphs: bool = True,
                 kv_cache: bool = True, precision: str = "fp32", fused: bool | None = None, kernels: str = "auto",
                 graph_copies: bool = False, cuda_warm: str = "copy",
                 output_mean: Sequence[float] | None = None, output_std: Sequence[float] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 steal_clock: StealClock | None = None):
        self.model = model
        self.source = source
        self.sink = sink
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        d_out = model.readout_spec.dim
        self.output_mean = np.zeros(d_out, np.float32) if output_mean is None else np.asarray(output_mean, np.float32)
        self.output_std = np.ones(d_out, np.float32) if output_std is None else np.asarray(output_std, np.float32)
        if self.output_mean.shape != (d_out,) or self.output_std.shape != (d_out,):
            raise ValueError(f"output_mean/output_std must have {d_out} values (the readout's dim), got "
                             f"{self.output_mean.shape} and {self.output_std.shape}")
        self.buffer = SpikeBuffer(capacity=settings.buffer_capacity, n_units=len(unit_map), unit_map=unit_map)
        self.tokenizer = IncrementalTokenizer(
            window_s=model.sequence_length, latent_step_s=model.latent_step,
            num_latents_per_step=model.num_latents_per_step, unit_vocab_index=unit_map,
            session_vocab_index=session_index, max_spikes=settings.max_spikes, n_outputs=settings.n_outputs,
            output_lag_s=settings.output_lag_s,
            output_spacing_s=settings.output_spacing_s or (settings.period_s / settings.n_outputs or 0.01),
        )
        self.runner = Runner(model, capacity=self.tokenizer.n_in, n_outputs=settings.n_outputs, device=device,
                             buckets=buckets, compile=compile, cuda_graphs=cuda_graphs, kv_cache=kv_cache,
                             precision=precision, fused=fused, kernels=kernels, graph_copies=graph_copies,
                             warm=cuda_warm)
        self._run_options: dict[str, Any] = {}  # runner.run's keywords: what the host runs during the forward
        if settings.warm_during_forward:
            if not self.runner.is_cuda:
                raise ValueError("engine.warm_during_forward is a CUDA option: the CPU forward leaves no wait to use")
            if getattr(sink, "warm", None) is not None:
                self._run_options["during"] = sink.warm
        deadline_ms = settings.deadline_ms or (settings.period_s * 1e3 if settings.tick_hz > 0 else None)
        self.stats = LatencyStats(STAGES, deadline_us=deadline_ms * 1e3 if deadline_ms else None,
                                  deadline_stages=("tick",), recent=4096)
        self.reporter = PeriodicReporter(self.stats, settings.log_every_s, clock=clock) if settings.log_every_s > 0 else None
        self.ticks = 0
        self.skipped_ticks = 0
        self._prepare_s = 0.0  # how long Runner.prepare takes: a moving average (s, LSL clock)
        self.last_pulls = 0  #: inlet pulls the last tick needed to drain the backlog
        self.early_ticks = 0  #: ticks tokenized early and warmed before their deadline (_pre_tick)
        self._early: TickTokens | None = None  # the early update of the coming tick
        self._pre_tick_s = 0.0  # how long _pre_tick takes: a moving average (s, LSL clock)
        self.gc: dict | None = None  #: garbage collections during the last run() (GcWatch.as_dict)
        self.pinned_cores: list[int] = []  #: CPU cores the loop ran pinned to in the last run() (cpu_affinity)
        self.miss_causes: dict[str, int] = {}  #: deadline misses by cause (MISS_CAUSES), since construction
        self._thread_clock = ThreadClock()
        self.steal_clock = steal_clock
        self.stolen_us = 0.0  #: steal time of the loop's cores over the ticks (µs; StealClock laps)
        self.missed_ticks: deque[dict[str, Any]] = deque(maxlen=MISS_LOG)  #: the last missed ticks (_count_miss)
        self._t0: float | None = None  # LSL s the first run (or else tick) began: missed ticks' ``at_s``
        # what ran between the previous tick and this one (µs): the previous tick, the preparation, the pre-tick
        self._before_tick: dict[str, float] = {}
        self._typical: dict[str, float] = {}  # medians of the MISS_CAUSES stages (µs), refreshed every TYPICAL_EVERY
        self._typical_tick = -TYPICAL_EVERY
        self._stop = threading.Event()
        self._report_requested = threading.Event()
        self.on_report: Callable[[], None] | None = None  #: called between ticks after request_report()
        self._warm_up()

    # --- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish after the current tick (thread- and signal-safe)."""
        self._stop.set()

    def request_report(self) -> None:
        """Ask for ``on_report()`` to run between two ticks (thread- and signal-safe)."""
        self._report_requested.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _warm_up(self) -> None:
        """One forward on empty windows so the first real tick does not pay for lazy set-up."""
        t0 = time.perf_counter()
        self.runner.run(self.tokenizer.arrays(), self.tokenizer.n_start_end)
        log.info("engine ready: %d units, window %.3f s, %d token slots, device %s (warm-up %.0f ms)",
                 self.tokenizer.n_units, self.model.sequence_length, self.tokenizer.n_in, self.runner.device,
                 (time.perf_counter() - t0) * 1e3)

    # --- one tick ------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Every drop counter so far, by reason (input stream, buffer, tokenizer, loop)."""
        out: dict[str, int] = {}
        for source in (getattr(self.source, "drops", {}), self.buffer.drops):
            for name, value in source.items():
                key = _SHORT_NAMES.get(name, name)
                out[key] = out.get(key, 0) + int(value)
        out["token_overflow"] = self.tokenizer.counters["token_overflow"]
        out["stale_spike"] = self.tokenizer.counters["stale_spike"]
        out["skipped_ticks"] = self.skipped_ticks
        return {k: v for k, v in out.items() if v or k in ("overflow", "token_overflow", "skipped_ticks")}

    def tick(self, t_tick: float) -> dict[str, float]:
        """Run one tick scheduled at ``t_tick`` (LSL s); returns its stage latencies (µs)."""
        s = self.settings
        if self._t0 is None:
            self._t0 = t_tick
        start_us = (self.clock() - t_tick) * 1e6 if s.tick_hz > 0 else math.nan
        w0 = time.perf_counter_ns()
        cpu0, wait0 = self._thread_clock.read()
        pull_ns = buffer_ns = 0
        for self.last_pulls in range(1, MAX_PULLS_PER_TICK + 1):  # drain: a pull is capped at the inlet's max_chunk samples
            c0 = time.perf_counter_ns()
            times, units = self.source.pull()
            c1 = time.perf_counter_ns()
            if len(times):
                self.buffer.append(times, units)
            c2 = time.perf_counter_ns()
            pull_ns, buffer_ns = pull_ns + c1 - c0, buffer_ns + c2 - c1
            if not getattr(self.source, "backlogged", False):
                break
        if s.tick_hz > 0:
            t_end = t_tick - s.input_delay_s
        else:
            newest = self.buffer.last_time_s
            t_end = max(np.nextafter(newest, math.inf) if math.isfinite(newest) else t_tick, self.tokenizer.t_end_s)
        info = self.tokenizer.update(t_end, self.buffer)
        early, self._early = self._early, None
        if early is not None and early.t_end_s == t_end:  # tokenized early (_pre_tick): one tick's counts
            info = info.after(early)
        c3 = time.perf_counter_ns()
        result = self.runner.run(self.tokenizer.arrays(), info.n_input_tokens, **self._run_options)
        c4 = time.perf_counter_ns()
        values = result.values * self.output_std + self.output_mean  # model units -> behaviour units

        flags = 0
        if info.overflow:
            flags |= TickFlags.TOKEN_OVERFLOW
        if not getattr(self.source, "connected", True):
            flags |= TickFlags.STREAM_DISCONNECTED
        cpu1, wait1 = self._thread_clock.read()
        work_ns = time.perf_counter_ns() - w0
        t_before_send = self.clock()
        tick_us = (t_before_send - t_tick) * 1e6
        if self.stats.deadline_us is not None and tick_us > self.stats.deadline_us:
            flags |= TickFlags.DEADLINE_MISSED
        stages = {
            "start": start_us, "pull": pull_ns / 1e3, "buffer": buffer_ns / 1e3, "tokenize": (c3 - c2) / 1e3,
            "h2d": result.h2d_us, "forward": result.forward_us, "d2h": result.d2h_us, "runner": (c4 - c3) / 1e3,
            **result.host_us,
            "spike_age": (t_end - info.newest_spike_s) * 1e6 if math.isfinite(info.newest_spike_s) else math.nan,
            **thread_times(work_ns, cpu1 - cpu0, wait1 - wait0 if wait0 >= 0 and wait1 >= 0 else -1),
        }
        output_times = info.origin_s + self.tokenizer.output_timestamps[0]  # (N_out,) LSL s
        publish_us = self.sink.send(
            window_end_s=t_end, newest_spike_s=info.newest_spike_s, output_times_s=output_times,
            values=values, counters=self.counters(), stages_us={**stages, "publish": self.sink.last_send_us},
            flags=int(flags),
        )
        t_sent = self.clock()
        stages["publish"] = publish_us
        stages["tick"] = (t_sent - t_tick) * 1e6
        stages["e2e"] = (t_sent - info.newest_spike_s) * 1e6 if math.isfinite(info.newest_spike_s) else math.nan
        stolen_us = self._stolen_since_last_tick()
        self.stats.record_tick({k: v for k, v in stages.items() if not math.isnan(v)})
        self.ticks += 1
        if self.stats.deadline_us is not None and stages["tick"] > self.stats.deadline_us:
            self._count_miss(stages, stolen_us, t_tick)
        self._before_tick = {"prev_tick": stages["tick"]}
        return stages

    def _stolen_since_last_tick(self) -> float:
        """Steal time of the loop's cores (µs) since the previous tick's send, -1 if unknown; adds to ``stolen_us``."""
        if self.steal_clock is None:
            return -1.0
        ns = self.steal_clock.lap()
        if ns < 0:
            return -1.0
        self.stolen_us += ns / 1e3
        return ns / 1e3

    def _count_miss(self, stages: dict[str, float], stolen_us: float, t_tick: float) -> None:
        """Count a missed tick under its cause (:func:`~poyo_rt.runtime.report.miss_cause`) and log its stages."""
        if self.ticks - self._typical_tick >= TYPICAL_EVERY:
            medians = {st: self.stats.percentile(st, 50.0) for st in (*MISS_CAUSES, "tick")}  # NaN: never recorded
            self._typical = {st: m for st, m in medians.items() if not math.isnan(m)}
            self._typical_tick = self.ticks
        cause = miss_cause(stages, self._typical, stolen_us)
        self.miss_causes[cause] = self.miss_causes.get(cause, 0) + 1
        self.missed_ticks.append({
            "index": self.ticks - 1, "at_s": round(t_tick - self._t0, 6), "t_tick_s": t_tick, "cause": cause,
            "stolen_us": stolen_us if stolen_us >= 0 else None,
            **{k: round(v, 1) for k, v in stages.items() if not math.isnan(v)},
            **{f"{k}_us": round(v, 1) for k, v in self._before_tick.items()},
        })

    # --- the loop ------------------------------------------------------------------------------
    def run(self, duration_s: float | None = None, max_ticks: int | None = None) -> dict:
        """Tick until :meth:`stop`, ``duration_s`` or ``max_ticks``; returns the latency summary."""
        if self.settings.freeze_gc:
            gc.collect()
            gc.freeze()
        with CpuAffinity(self.settings.cpu_affinity) as pinned:
            self.pinned_cores = list(pinned.cores) if pinned.active else []
            if self.steal_clock is None:
                self.steal_clock = StealClock(self.pinned_cores or allowed_cores())
            with RealtimePriority(self.settings.realtime_priority), GcWatch() as watch:
                try:
                    self._loop(duration_s, max_ticks)
                finally:  # a graph the last pre-tick launched ahead (model.cuda_warm: launch) runs, unused
                    self.runner.release()
        self.gc = watch.as_dict()
        return self.summary()

    def take_in(self) -> None:
        """One pull into the buffer, while the loop spins before a tick: the spikes that arrive then are
        already buffered at the tick (later than its window end, they wait there for the next), and the
        pull's code is warm when the tick runs it. Also after :meth:`run` (no tick running): what the inlet
        still holds is then taken in, validated and counted, but not decoded (the benchmarks' drain)."""
        times, units = self.source.pull()
        if len(times):
            self.buffer.append(times, units)

    def _pre_tick(self, deadline: float) -> None:
        """Woken ``spin_ms`` (plus this method's usual duration) before the tick at ``deadline``: pull, tokenize
        to the tick's window end with the spikes so far (the tick adds the rest: :meth:`tick` merges the two
        updates), and run the runner's and the sink's code on this window so the tick finds it in the CPU's
        caches (nothing is sent; the CPU key/value cache computes the keys and values of the spikes so far)."""
        t0 = self.clock()
        self.take_in()
        self._early = self.tokenizer.update(deadline - self.settings.input_delay_s, self.buffer)
        self.runner.warm(self.tokenizer.arrays(), self._early.n_input_tokens)
        warm = getattr(self.sink, "warm", None)
        if warm is not None:
            warm()
        self.early_ticks += 1
        took = self.clock() - t0
        self._pre_tick_s = moving_average(self._pre_tick_s, took)  # the loop wakes this much earlier
        self._before_tick["pre_tick"] = took * 1e6

    def _prepare(self, next_deadline: float) -> None:
        """In the idle part of the period, what the next tick's forward can do before its spikes arrive
        (:meth:`Runner.prepare`). Skipped when less than its usual duration (a moving average) is left before
        that tick: up to there it ends before the tick is due, and even an overrun by a fraction of it costs
        the tick less than the preparation saves it (for poyo_1.3M on one core: ~3 ms to prepare, ~2.5 ms
        saved). A skip halves the estimate, so that one slow preparation (the first call, a stall of the
        machine) does not switch preparing off for good."""
        now = self.clock()
        if not math.isfinite(self.tokenizer.origin_s):
            return
        if next_deadline - now < self._prepare_s:
            self._prepare_s *= 0.5
            return
        self.runner.prepare(self.tokenizer.window_times_at(next_deadline - self.settings.input_delay_s))
        took = self.clock() - now
        self._prepare_s = moving_average(self._prepare_s, took)
        self._before_tick["prepare"] = took * 1e6

    def _loop(self, duration_s: float | None, max_ticks: int | None) -> None:
        s = self.settings
        t_start = self.clock()
        if self._t0 is None:
            self._t0 = t_start
        t_stop = t_start + duration_s if duration_s else math.inf
        k = 0
        while not self._stop.is_set() and self.clock() < t_stop and (max_ticks is None or self.ticks < max_ticks):
            if s.tick_hz > 0:
                k += 1
                deadline = t_start + k * s.period_s
                wait = deadline - self.clock()
                if wait > 0:
                    wait_until(deadline, self.clock, self.sleep, s.spin_s, poll=self.take_in,
                               on_wake=(lambda: self._pre_tick(deadline)) if s.pre_tick else None,
                               wake_s=min(self._pre_tick_s, MAX_PRE_TICK_S))
                elif wait < -s.period_s:  # more than a whole period late: skip the missed ticks
                    missed = int(-wait // s.period_s)
                    self.skipped_ticks += missed
                    k += missed
                    deadline = t_start + k * s.period_s
                self.tick(deadline)
                self._prepare(t_start + (k + 1) * s.period_s)
            else:
                before = self.buffer.next_seq
                times, units = self.source.pull()
                if len(times):
                    self.buffer.append(times, units)
                if self.buffer.next_seq == before:
                    self.sleep(s.idle_poll_s)
                    continue
                self.tick(self.clock())
            if self.reporter is not None:
                self.reporter.maybe_log()
            if self._report_requested.is_set():
                self._report_requested.clear()
                if self.on_report is not None:
                    self.on_report()

    def summary(self) -> dict:
        out = self.stats.summary()
        out["ticks"] = self.ticks
        out["early_ticks"] = self.early_ticks
        out["pinned_cores"] = self.pinned_cores
        out["miss_causes"] = dict(self.miss_causes)
        out["stolen_ms"] = self.stolen_ms
        out["missed_ticks"] = list(self.missed_ticks)
        out["counters"] = self.counters()
        out["runner"] = self.runner.counters()
        if self.gc is not None:
            out["gc"] = self.gc
        return out

    def write_report(self, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
        """Latency summary (+ run metadata in ``extra``) as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for name, value in self.counters().items():
            self.stats.set_counter(name, value)
        self.stats.to_json(path, extra={"ticks": self.ticks, "runner": self.runner.counters(),
                                        "miss_causes": dict(self.miss_causes), "stolen_ms": self.stolen_ms,
                                        "missed_ticks": list(self.missed_ticks), **(extra or {})},
                           include_recent=True)
        return path

    @property
    def stolen_ms(self) -> float | None:
        """Steal time of the loop's cores over the ticks so far (ms), None where it is not read."""
        return None if self.steal_clock is None or not self.steal_clock.available else self.stolen_us / 1e3


def thread_times(work_ns: int, cpu_ns: int, wait_ns: int) -> dict[str, float]:
    """``cpu``, ``cpu_wait`` and ``off_cpu`` (µs) of a span of ``work_ns`` wall time in which the thread ran
    ``cpu_ns`` and waited ``wait_ns`` for a core (-1 = unknown: ``cpu_wait`` NaN, ``off_cpu`` includes it)."""
    wait = max(wait_ns, 0)
    return {"cpu": cpu_ns / 1e3, "cpu_wait": wait_ns / 1e3 if wait_ns >= 0 else math.nan,
            "off_cpu": (work_ns - cpu_ns - wait) / 1e3}


def install_signal_handlers(engine: Engine, report: Callable[[], None] | None = None) -> None:
    """SIGINT/SIGTERM stop the loop after the current tick; SIGUSR1 has ``report`` run between two ticks
    (never from inside the handler, so a report never sees a half-recorded tick). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _stop(signum, _frame):
        log.info("received %s: stopping after this tick", signal.Signals(signum).name)
        engine.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if report is not None and hasattr(signal, "SIGUSR1"):
        engine.on_report = report
        signal.signal(signal.SIGUSR1, lambda *_: engine.request_report())

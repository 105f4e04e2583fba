"""Wires a :class:`~poyo_rt.config.RunConfig` to a running engine: model, LSL inlet, publisher."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from poyo_rt.config import RunConfig
from poyo_rt.errors import ConfigError, PoyoRtError
from poyo_rt.model.poyo import POYO
from poyo_rt.registry import MODALITY_REGISTRY
from poyo_rt.runtime.engine import Engine, EngineSettings, install_signal_handlers
from poyo_rt.runtime.report import describe_miss_causes
from poyo_rt.runtime.threads import apply_threads, check_available
from poyo_rt.version import code_version

log = logging.getLogger(__name__)


def resolve_device(choice: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; "cuda" without a device is a ConfigError."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("model.device", "cuda was asked for, but no CUDA device is available to this torch build")
    return choice


@dataclass
class LoadedModel:
    """A decoder checkpoint: the model and the behaviour normalisation its outputs need undone."""

    model: POYO
    output_mean: list[float] | None = None  #: (D_out,) published = model output * std + mean
    output_std: list[float] | None = None
    meta: dict | None = None  #: hyper_parameters["poyo_rt"] of the checkpoint


def load_model(config: RunConfig) -> LoadedModel:
    """The checkpoint named by ``model.checkpoint`` (see :func:`poyo_rt.train.load_decoder`): readout from the
    config, else the checkpoint's; the behaviour normalisation stored with it (identity when none)."""
    from poyo_rt.train.evaluate import load_decoder

    if config.model.checkpoint is None:
        raise ConfigError("model.checkpoint", "no checkpoint given (set it in the config or pass --checkpoint)")
    if config.model.readout is not None and config.model.readout not in MODALITY_REGISTRY:
        raise ConfigError("model.readout", f"unknown modality {config.model.readout!r}; "
                          f"registered: {', '.join(sorted(MODALITY_REGISTRY))}")
    model, norm, meta = load_decoder(config.model.checkpoint, readout=config.model.readout)
    return LoadedModel(model, list(norm.mean), list(norm.std), meta)


def session_index(model: POYO, session_id: str | None, default: str | None = None) -> int:
    """Row of ``session_id`` in the model's session vocabulary. None picks ``default`` (a calibrated checkpoint's
    ``default_session``: the session it was calibrated for) when given, else the only session."""
    sessions = [w for w in model.session_emb.vocab if w != "NA"]
    if session_id is None and default is not None:
        session_id = default
        log.info("decoding session %r (the checkpoint's default_session)", session_id)
    if session_id is None:
        if len(sessions) != 1:
            raise ConfigError("model.session_id", f"the checkpoint knows {len(sessions)} sessions; choose one of "
                              f"{sessions[:10]}")
        session_id = sessions[0]
    if session_id not in model.session_emb.vocab:
        raise ConfigError("model.session_id", f"{session_id!r} is not in the checkpoint's sessions {sessions[:10]}")
    return model.session_emb.vocab[session_id]


def check_cores(cores: tuple[int, ...]) -> None:
    """``engine.cpu_affinity`` must name cores this process may use (checked before the stream is resolved)."""
    try:
        check_available(cores)
    except ValueError as err:
        raise ConfigError("engine.cpu_affinity", str(err)) from None


@dataclass
class RunningDecoder:
    """An engine with the resources it owns; close() releases them."""

    engine: Engine
    inlet: object
    publisher: object
    config: RunConfig
    echo: object | None = None  #: the LSL outlet of the decoded values (``output.lsl_name``), when asked for

    def close(self) -> None:
        self.publisher.close()
        if self.echo is not None:
            self.echo.close()
        self.inlet.close()


class EchoedSink:
    """The engine's sink when ``output.lsl_name`` is set: each tick goes to the ZeroMQ publisher first, then its
    values to the LSL outlet (after the send, so the ZeroMQ message is not delayed). ``send`` returns, and the
    ``publish`` stage holds, both together."""

    def __init__(self, publisher: Any, echo: Any) -> None:
        self.publisher = publisher
        self.echo = echo
        self.last_send_us = 0.0
        self.warm = getattr(publisher, "warm", None)

    def send(self, **kwargs: Any) -> float:
        t0 = time.perf_counter()
        self.publisher.send(**kwargs)
        self.echo.push(kwargs["values"], kwargs["output_times_s"])
        self.last_send_us = (time.perf_counter() - t0) * 1e6
        return self.last_send_us


def decoded_labels(loaded: LoadedModel) -> list[str]:
    """Channel labels of the decoded values: the training data's behaviour labels when the checkpoint kept them
    (a poyo-rt checkpoint does), else ``y0, y1, ...``."""
    n = loaded.model.readout.out_features
    labels = list((loaded.meta or {}).get("behavior_labels") or [])
    return [str(x) for x in labels] if len(labels) == n else [f"y{i}" for i in range(n)]


def build_decoder(config: RunConfig, *, model: POYO | LoadedModel | None = None) -> RunningDecoder:
    """Resolve the stream, match its units to the model, bind the publisher and build the engine.

    ``model``: an already loaded model (a bare POYO publishes raw model outputs; a :class:`LoadedModel`
    carries its normalisation); default: :func:`load_model` from ``config.model``."""
    from poyo_rt.stream import lsl
    from poyo_rt.stream.publisher import Publisher
    from poyo_rt.stream.units import match_units

    lsl.configure_lsl(config.input.lsl_scope, config.input.lsl_config)
    device = resolve_device(config.model.device)
    if config.model.precision == "tf32" and device == "cpu":
        raise ConfigError("model.precision", "tf32 is a CUDA option, and device auto found no CUDA device here")
    check_cores(config.engine.cpu_affinity)
    apply_threads(config.model.threads, torch.device(device).type)
    loaded = load_model(config) if model is None else model if isinstance(model, LoadedModel) else LoadedModel(model)
    model = loaded.model
    sess = session_index(model, config.model.session_id, default=(loaded.meta or {}).get("default_session"))
    inp = config.input
    log.info("resolving LSL stream name=%r type=%r source_id=%r (timeout %.1f s)", inp.name, inp.type, inp.source_id,
             inp.resolve_timeout_s)
    layout_args = inp.layout_args()
    try:
        inlet = lsl.open_spike_inlet(
            inp.name, inp.type, inp.source_id, timeout_s=inp.resolve_timeout_s, **layout_args,
            max_chunk=inp.max_chunk, clock_correction=inp.clock_correction,
            max_buffer_samples=max(int(inp.max_buflen_s * 100_000), 1000),  # sized for 100k spikes/s
        )
    except ValueError as err:  # columns that only the stream's labels show to be one (unit_column 0 = "ch")
        if isinstance(err, PoyoRtError):
            raise
        raise ConfigError("input", str(err)) from None
    try:
        unit_map = match_units(inlet.unit_ids, list(model.unit_emb.vocab), on_unknown=inp.on_unknown_unit)
        eng = config.engine
        settings = EngineSettings(
            tick_hz=eng.tick_hz, input_delay_s=eng.input_delay_s, output_lag_s=eng.output_lag_s,
            n_outputs=eng.n_outputs, output_spacing_s=eng.output_spacing_s, max_spikes=eng.max_spikes,
            buffer_capacity=eng.buffer_capacity, deadline_ms=eng.deadline_ms, log_every_s=config.metrics.log_every_s,
            freeze_gc=eng.freeze_gc, realtime_priority=eng.realtime_priority, cpu_affinity=eng.cpu_affinity,
            spin_ms=eng.spin_ms, pre_tick=eng.pre_tick, warm_during_forward=eng.warm_during_forward,
        )
        out = config.output
        publisher = Publisher(out.endpoint, topic=out.topic, sndhwm=out.sndhwm, tick_hz=eng.tick_hz or 100.0,
                              allow_remote=out.allow_remote, clock=lsl.local_clock)
    except Exception:
        inlet.close()
        raise
    echo, sink = None, publisher
    try:
        if out.lsl_name is not None:
            echo = lsl.DecodedOutlet(out.lsl_name, decoded_labels(loaded), f"poyo-rt-{out.lsl_name}-{out.topic}",
                                     extra_desc={"topic": out.topic, "zmq_endpoint": publisher.endpoint,
                                                 "source_stream": inlet.stream_name})
            sink = EchoedSink(publisher, echo)
        engine = Engine(model, inlet, sink, unit_map=unit_map, session_index=sess, settings=settings,
                        device=device, buckets=list(eng.buckets) or None, compile=config.model.compile,
                        kv_cache=config.model.kv_cache, precision=config.model.precision,
                        cuda_graphs=config.model.cuda_graphs, fused=config.model.fused, kernels=config.model.kernels,
                        graph_copies=config.model.graph_copies, cuda_warm=config.model.cuda_warm,
                        output_mean=loaded.output_mean, output_std=loaded.output_std, clock=lsl.local_clock)
    except Exception:
        publisher.close()
        if echo is not None:
            echo.close()
        inlet.close()
        raise
    log.info("publishing on %s topic %r%s; %d of %d stream units decoded", publisher.endpoint, out.topic,
             "" if echo is None else f" and on the LSL stream {out.lsl_name!r}", int((unit_map >= 0).sum()),
             len(unit_map))
    return RunningDecoder(engine, inlet, publisher, config, echo)


def run_decoder(config: RunConfig, *, model: POYO | LoadedModel | None = None) -> dict:
    """Build, run until stopped (signal or ``engine.duration_s``), write the latency report."""
    decoder = build_decoder(config, model=model)
    meta = {"config": config.to_dict(), "code_version": code_version(), "torch": torch.__version__,
            "device": str(decoder.engine.runner.device)}

    def report() -> None:
        if config.metrics.report_path:
            path = decoder.engine.write_report(config.metrics.report_path, extra=meta)
            log.info("latency report written to %s", path)

    install_signal_handlers(decoder.engine, report)
    try:
        summary = decoder.engine.run(duration_s=config.engine.duration_s)
    finally:
        decoder.close()
    log.info("final latency after %d ticks:\n%s", decoder.engine.ticks, decoder.engine.stats.format_table())
    if decoder.engine.miss_causes:
        log.info("deadline misses by cause: %s", describe_miss_causes(decoder.engine.miss_causes))
    if decoder.engine.stolen_ms:
        log.info("hypervisor steal on the loop's cores: %.0f ms over the run", decoder.engine.stolen_ms)
    report()
    return summary

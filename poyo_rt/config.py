"""Run configuration: frozen dataclasses loaded from YAML, validated at load.

Every error names the offending field in dotted form (``engine.tick_hz``) and the bad
value. Unknown keys are errors too (a typo must not silently fall back to a default).
``configs/default.yaml`` documents every field; :func:`load_config` fills defaults for
what a file leaves out.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from poyo_rt.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Which decoder to run and where."""

    checkpoint: str | None = None  #: path of a poyo-rt/torch_brain checkpoint
    readout: str | None = None  #: registry name of the decoded modality; None = the checkpoint's (else hand_velocity_2d)
    device: Literal["auto", "cpu", "cuda"] = "auto"  #: auto = cuda when available
    session_id: str | None = None  #: session vocabulary word; None = a calibrated checkpoint's session, else the only one
    threads: int | Literal["auto"] | None = "auto"  #: torch CPU threads: auto = cores - 1 (runtime/threads.py), None = torch's default
    compile: bool = False  #: torch.compile the forward (CPU: measure first; CUDA: the fused forward, before capture)
    kv_cache: bool = True  #: CPU eager: keep the encoder's per-token keys/values between ticks (same values, less work)
    precision: Literal["fp32", "bf16", "tf32"] = "fp32"  #: CPU bf16 autocast (~5e-3 rel. error) / CUDA TF32 matmuls (5e-5..1.2e-3); opt-in
    cuda_graphs: bool = True  #: CUDA: capture one graph per padding bucket (False = eager, for debugging)
    fused: bool | None = None  #: run poyo_rt/model/fused.py's forward: None = on CUDA only (the CPU's kv_cache is faster)
    kernels: Literal["auto", "torch", "triton"] = "auto"  #: CUDA: the fused forward as torch ops or as poyo_rt/kernels' Triton kernels; auto = Triton where it runs
    graph_copies: bool = False  #: CUDA graphs: capture the input and output copies in each graph (fewer calls into torch a tick; h2d/d2h then inside forward); opt-in until measured end to end
    cuda_warm: Literal["copy", "replay", "launch"] = "copy"  #: CUDA: what the pre-tick runs on the early window: its copy to the GPU, the whole call (warms every host step; one more forward of GPU time a tick), or the tick's graph launched ahead behind a doorbell the tick rings (copies in the graphs; needs Triton)

    def validate(self, prefix: str) -> None:
        if isinstance(self.threads, int) and self.threads < 1:
            raise ConfigError(f"{prefix}.threads", f"must be >= 1, got {self.threads}")
        if self.precision == "bf16" and self.device == "cuda":
            raise ConfigError(f"{prefix}.precision", "bf16 is a CPU option (the CUDA path runs fp32 CUDA graphs, or tf32)")
        if self.precision == "tf32" and self.device == "cpu":
            raise ConfigError(f"{prefix}.precision", "tf32 is a CUDA option (TF32 matmuls on tensor cores): "
                                                     "use device cuda or auto")
        if self.precision == "tf32" and (self.kernels == "triton" or self.fused is False or self.compile):
            raise ConfigError(f"{prefix}.precision", "tf32 runs the fused forward's torch operators: needs kernels "
                                                     "auto/torch, fused not false, compile false")
        if self.kernels == "triton" and (self.device == "cpu" or self.fused is False or self.compile):
            raise ConfigError(f"{prefix}.kernels", "triton runs the fused forward on CUDA: needs device auto/cuda, "
                                                   "fused not false, compile false")
        if self.graph_copies and (self.device == "cpu" or not self.cuda_graphs):
            raise ConfigError(f"{prefix}.graph_copies", "is an option of the CUDA graphs: needs device auto/cuda "
                                                        "and cuda_graphs true")
        if self.cuda_warm != "copy" and (self.device == "cpu" or not self.cuda_graphs):
            raise ConfigError(f"{prefix}.cuda_warm", f"{self.cuda_warm} runs the CUDA graphs: needs device "
                                                     "auto/cuda and cuda_graphs true")
        if self.cuda_warm == "launch" and self.fused is False:
            raise ConfigError(f"{prefix}.cuda_warm", "launch runs the fused forward's graphs behind a doorbell: "
                                                     "needs fused not false")


@dataclass(frozen=True)
class InputConfig:
    """The LSL spike stream to decode."""

    name: str | None = "poyo-spikes"  #: stream name to resolve (None = any)
    type: str | None = None  #: stream type to resolve (e.g. "SpikeEvents")
    source_id: str | None = None  #: stream source_id to resolve
    resolve_timeout_s: float = 10.0  #: give up resolving after this long, seconds
    layout: Literal["events", "counts"] = "events"  #: one sample per spike, or binned counts per unit
    #: events: column (index or channel label) holding the unit; None = the stream's only channel (a wider stream
    #: must name it: guessing column 0 would read a Blackrock stream's channel ids as units)
    unit_column: int | str | None = None
    channel_column: int | str | None = None  #: events: column holding the channel, for (channel, unit) pairs
    on_unknown_unit: Literal["error", "drop"] = "error"  #: stream units missing from the model vocabulary
    #: the stream's unit ids in unit-index order, for streams whose <desc> names none: a list, or a text file of
    #: one id per line; None = the stream's own <desc><units> (or, for counts, its channel labels)
    unit_ids: tuple[str, ...] | str | None = None
    max_buflen_s: float = 2.0  #: liblsl inlet buffer, seconds of data kept when the decoder stalls
    max_chunk: int = 4096  #: most samples taken per pull
    clock_correction: Literal["auto", "always", "never"] = "auto"  #: auto: correct streams from other hosts only
    lsl_scope: Literal["machine", "site"] = "machine"  #: machine = LSL stays on this host (default)
    lsl_config: str | None = None  #: path of a liblsl config file (only with lsl_scope: site)

    def unit_id_list(self) -> list[str] | None:
        """``unit_ids`` as a list (read from its file when it names one), or None; ConfigError naming it."""
        from poyo_rt.stream.units import load_unit_ids

        if self.unit_ids is None:
            return None
        try:
            return load_unit_ids(self.unit_ids)
        except ValueError as err:
            raise ConfigError("input.unit_ids", str(err)) from None

    def layout_args(self) -> dict:
        """How the inlet reads the stream (``SpikeInlet``'s and ``inspect_stream``'s keyword arguments): the
        layout, its columns (a unit column only for events) and the unit ids (their file read now)."""
        return dict(layout=self.layout, unit_column=self.unit_column if self.layout == "events" else None,
                    channel_column=self.channel_column, unit_ids=self.unit_id_list())

    def validate(self, prefix: str) -> None:
        if self.resolve_timeout_s <= 0:
            raise ConfigError(f"{prefix}.resolve_timeout_s", f"must be > 0, got {self.resolve_timeout_s}")
        if self.max_buflen_s <= 0:
            raise ConfigError(f"{prefix}.max_buflen_s", f"must be > 0, got {self.max_buflen_s}")
        if self.max_chunk < 1:
            raise ConfigError(f"{prefix}.max_chunk", f"must be >= 1, got {self.max_chunk}")
        if self.lsl_config is not None and self.lsl_scope != "site":
            raise ConfigError(f"{prefix}.lsl_config", "a custom liblsl config needs lsl_scope: site")
        if isinstance(self.unit_ids, tuple):
            if not self.unit_ids:
                raise ConfigError(f"{prefix}.unit_ids", "is an empty list; null uses the stream's own unit list")
            self.unit_id_list()  # duplicates: the check match_units applies
        elif self.unit_ids == "":
            raise ConfigError(f"{prefix}.unit_ids", "must be a list of ids or a file's path, got an empty string")
        if self.channel_column is not None and self.layout == "counts":
            raise ConfigError(f"{prefix}.channel_column", "applies to events streams only, and layout is counts "
                              "(one channel per unit): remove it")
        if self.channel_column is not None and self.unit_column is None and self.layout == "events":
            raise ConfigError(f"{prefix}.channel_column", "needs unit_column too: (channel, unit) pairs name both "
                              "columns")
        if self.channel_column is not None and self.channel_column == self.unit_column:
            raise ConfigError(f"{prefix}.channel_column", f"names the same column as unit_column "
                              f"({self.unit_column!r}); (channel, unit) pairs need two columns")


@dataclass(frozen=True)
class EngineConfig:
    """The tick loop."""

    tick_hz: float = 50.0  #: decode this often on the LSL clock; 0 = whenever new spikes arrive
    input_delay_s: float = 0.0  #: the window ends this long before the tick (room for spikes in transit)
    output_lag_s: float = 0.0  #: decode this long before the window end (causal: 0)
    n_outputs: int = 1  #: output queries per tick, ending at the window end minus output_lag_s
    output_spacing_s: float | None = None  #: spacing of several queries; None = tick period / n_outputs
    max_spikes: int = 8192  #: spike-token capacity of a window; beyond it the oldest are dropped and counted
    buffer_capacity: int = 65536  #: spikes held between arrival and tokenization (overflow is counted)
    buckets: tuple[int, ...] = ()  #: CUDA padding buckets (input tokens); empty = from 256, x1.25 each, to capacity
    deadline_ms: float | None = None  #: a tick later than this is a deadline miss; None = the tick period
    freeze_gc: bool = True  #: gc.collect() + gc.freeze() before the loop: no multi-ms full collections mid-run
    realtime_priority: int | None = None  #: SCHED_FIFO priority (1-99) for the tick loop; None = normal scheduling
    cpu_affinity: tuple[int, ...] = ()  #: CPU cores the tick loop's thread is pinned to; empty = not pinned
    spin_ms: float = 1.0  #: wake this long before each tick (pre-tick work, then busy-wait: a sleep wakes late); 0 = off
    pre_tick: bool = True  #: on waking: tokenize early and warm the tick's code (EngineSettings.pre_tick)
    warm_during_forward: bool = False  #: CUDA: while the GPU runs the tick's forward, run the publisher's code on the last message (the send right after runs warm); opt-in until measured
    duration_s: float | None = None  #: stop after this long (None = until SIGINT/SIGTERM)

    def validate(self, prefix: str) -> None:
        if self.tick_hz < 0:
            raise ConfigError(f"{prefix}.tick_hz", f"must be >= 0, got {self.tick_hz}")
        if self.n_outputs < 1:
            raise ConfigError(f"{prefix}.n_outputs", f"must be >= 1, got {self.n_outputs}")
        if self.max_spikes < 1:
            raise ConfigError(f"{prefix}.max_spikes", f"must be >= 1, got {self.max_spikes}")
        if self.output_lag_s < 0:
            raise ConfigError(f"{prefix}.output_lag_s", f"must be >= 0, got {self.output_lag_s}")
        if self.input_delay_s < 0:
            raise ConfigError(f"{prefix}.input_delay_s", f"must be >= 0, got {self.input_delay_s}")
        if self.output_spacing_s is not None and self.output_spacing_s <= 0:
            raise ConfigError(f"{prefix}.output_spacing_s", f"must be > 0, got {self.output_spacing_s}")
        if self.buffer_capacity < 1:
            raise ConfigError(f"{prefix}.buffer_capacity", f"must be >= 1, got {self.buffer_capacity}")
        if self.realtime_priority is not None and not 1 <= self.realtime_priority <= 99:
            raise ConfigError(f"{prefix}.realtime_priority", f"must be in [1, 99], got {self.realtime_priority}")
        if any(c < 0 for c in self.cpu_affinity) or len(set(self.cpu_affinity)) != len(self.cpu_affinity):
            raise ConfigError(f"{prefix}.cpu_affinity", f"must be distinct CPU ids >= 0, got {list(self.cpu_affinity)}")
        if any(b < 8 or b % 8 for b in self.buckets) or list(self.buckets) != sorted(set(self.buckets)):
            raise ConfigError(f"{prefix}.buckets", f"must be increasing multiples of 8, got {list(self.buckets)}")
        if not 0 <= self.spin_ms <= 20:
            raise ConfigError(f"{prefix}.spin_ms", f"must be in [0, 20], got {self.spin_ms}")
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ConfigError(f"{prefix}.deadline_ms", f"must be > 0, got {self.deadline_ms}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"{prefix}.duration_s", f"must be > 0, got {self.duration_s}")


@dataclass(frozen=True)
class OutputConfig:
    """Where decoded ticks are published."""

    endpoint: str = "tcp://127.0.0.1:5556"  #: ZeroMQ endpoint to bind (loopback or ipc:// by default)
    topic: str = "poyo"  #: first frame of every message
    sndhwm: int | None = None  #: send high-water mark; None = about one second of ticks
    allow_remote: bool = False  #: permit binding a non-loopback address (labs: explicit opt-in)
    #: also push the decoded values to an LSL outlet of this name (irregular float32, a sample per output query
    #: stamped with its time on the LSL clock), so that LabRecorder records them beside the spikes; None = off
    lsl_name: str | None = None

    def validate(self, prefix: str) -> None:
        if not self.topic:
            raise ConfigError(f"{prefix}.topic", "must not be empty")
        if self.lsl_name is not None and not self.lsl_name.strip():
            raise ConfigError(f"{prefix}.lsl_name", "must be a stream name, or null for no LSL output")
        if self.sndhwm is not None and self.sndhwm < 1:
            raise ConfigError(f"{prefix}.sndhwm", f"must be >= 1, got {self.sndhwm}")


@dataclass(frozen=True)
class MetricsConfig:
    """Latency reporting."""

    log_every_s: float = 10.0  #: log a latency table this often (0 = never)
    report_path: str | None = "runs/latency.json"  #: JSON written at exit (None = no file)

    def validate(self, prefix: str) -> None:
        if self.log_every_s < 0:
            raise ConfigError(f"{prefix}.log_every_s", f"must be >= 0, got {self.log_every_s}")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``poyo-rt run`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- generic loading ---------------------------------------------------------------------------
def _check_value(path: str, value: Any, hint: Any) -> Any:
    """Coerce/validate ``value`` against a type hint; raise ConfigError naming ``path``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(path, "must not be null")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_value(path, value, option)
            except ConfigError as err:
                errors.append(str(err).split(": ", 1)[1])
        raise ConfigError(path, " or ".join(errors))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(path, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {value!r}")
        (item,) = get_args(hint)[:1]
        return tuple(_check_value(f"{path}[{i}]", v, item) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _build(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path or "<root>", f"must be a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown field (known: {', '.join(names)})")
    kwargs = {k: _check_value(f"{path}.{k}" if path else k, v, hints[k]) for k, v in raw.items()}
    obj = cls(**kwargs)
    for name in names:  # validate nested defaults too
        child = getattr(obj, name)
        if dataclasses.is_dataclass(child) and hasattr(child, "validate"):
            child.validate(f"{path}.{name}" if path else name)
    return obj


def config_from_dict(raw: dict | None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (as parsed from YAML)."""
    return _build(RunConfig, raw, "")


def load_config(path: str | Path | None) -> RunConfig:
    """Load a YAML run configuration; ``None`` gives the defaults."""
    if path is None:
        return config_from_dict({})
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML: {err}") from None
    return config_from_dict(raw)


def with_overrides(config: RunConfig, **sections: dict) -> RunConfig:
    """A copy with some fields replaced, e.g. ``with_overrides(cfg, model={"device": "cpu"})``."""
    raw = config.to_dict()
    for section, values in sections.items():
        raw[section].update({k: v for k, v in values.items() if v is not None})
    for key in ("buckets", "cpu_affinity"):
        raw["engine"][key] = list(raw["engine"][key])
    return config_from_dict(raw)


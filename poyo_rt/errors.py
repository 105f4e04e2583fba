"""Typed errors of poyo-rt. Each carries enough context to act on without a debugger."""

from __future__ import annotations


class PoyoRtError(Exception):
    """Base class of every error poyo-rt raises on purpose."""


class ConfigError(PoyoRtError, ValueError):
    """A configuration value is invalid. ``field`` names it in dotted form (``engine.tick_hz``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class CheckpointError(PoyoRtError, ValueError):
    """A checkpoint file cannot be loaded safely or does not match the model."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class StreamNotFoundError(PoyoRtError, LookupError):
    """No LSL stream matched the query within the timeout."""


class StreamFormatError(PoyoRtError, ValueError):
    """An LSL stream does not have the shape the decoder expects (channels, format, units)."""


class UnitMismatchError(PoyoRtError, ValueError):
    """The stream's units do not match the checkpoint's unit vocabulary."""

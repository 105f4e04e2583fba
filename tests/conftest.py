"""Shared test configuration.

LSL must stay on this machine. At import time, before any test module imports pylsl, this file points
``LSLAPICFG`` at the packaged machine-scope config (so subprocesses inherit it too) and applies it in
this process with :func:`poyo_rt.stream.lsl.configure_lsl`.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

LSL_CONFIG = Path(__file__).resolve().parents[1] / "poyo_rt" / "stream" / "loopback.cfg"
os.environ["LSLAPICFG"] = str(LSL_CONFIG)  # before anything imports pylsl

try:
    from poyo_rt.stream.lsl import configure_lsl  # noqa: E402
except ImportError:  # pylsl absent (e.g. the GPU machine running tests/test_gpu.py): no LSL call can happen
    configure_lsl = None
if configure_lsl is not None:
    configure_lsl()

T = TypeVar("T")


def _unique(prefix: str, request: pytest.FixtureRequest) -> str:
    test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40]
    return f"{prefix}-{test}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    """A stream name no other test (or earlier run) uses."""
    return _unique("poyo-test", request)


@pytest.fixture
def source_id(request: pytest.FixtureRequest) -> str:
    """A unique LSL source_id."""
    return _unique("poyo-src", request)


def poll(
    predicate: Callable[[], T], timeout_s: float = 3.0, interval_s: float = 0.002, what: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout_s`` passes.

    Raises AssertionError naming ``what`` on timeout. Use instead of fixed sleeps.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or predicate}")
        time.sleep(interval_s)


@pytest.fixture
def poll_until() -> Callable[..., object]:
    """The :func:`poll` helper: ``poll_until(predicate, timeout_s=3.0, interval_s=0.002, what="")``."""
    return poll

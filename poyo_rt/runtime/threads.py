"""How many CPU threads the decoder's torch ops get (``model.threads`` in the run config).

A closed-loop decoder shares its machine with the LSL pull, the ZeroMQ publisher and, often, the
acquisition or replay process. torch's default (one thread per core) makes each forward wait for
every core, so any other process that wakes up delays the whole tick: on the 2-core test VM with the
replay player on the same cores, poyo_1.3M at 50 Hz missed 303 of 1,488 deadlines with 2 threads
and 23 of 1,000 with 1 (docs/performance.md). ``auto`` therefore leaves one core free:

* CPU: ``available cores - 1``, at least 1, at most :data:`MAX_AUTO_THREADS` (small models gain
  nothing from more; this cap is a judgement, not measured on a large machine here);
* CUDA: 1 (the host only copies inputs and launches a graph).

An integer sets the count; ``None`` keeps torch's default.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

MAX_AUTO_THREADS = 8


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def auto_threads(device_type: str, cores: int | None = None) -> int:
    """The ``auto`` policy: see the module docstring."""
    if device_type == "cuda":
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, min(cores - 1, MAX_AUTO_THREADS))


def apply_threads(setting: int | str | None, device_type: str) -> int:
    """Set torch's intra-op threads from a config value (``"auto"``, an int >= 1, or None = keep
    torch's default); returns the count in effect."""
    if setting is None:
        return torch.get_num_threads()
    if setting == "auto":
        n = auto_threads(device_type)
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        n = setting
    else:
        raise ValueError(f"threads must be 'auto', an int >= 1 or None, got {setting!r}")
    torch.set_num_threads(n)
    log.info("torch CPU threads: %d (%s)", n, setting)
    return n


class RealtimePriority:
    """Context manager: the calling thread runs under ``SCHED_FIFO`` at ``priority`` (1-99), then goes back
    to the scheduling it had.

    A real-time thread is not preempted by normal processes (the acquisition or replay process, a browser),
    which is what makes a forward's tail long on a busy machine. The tick loop sleeps between ticks, so it
    never starves the machine. Needs root or ``CAP_SYS_NICE`` (or an ``rtprio`` limit in
    /etc/security/limits.conf); without it a warning is logged and the loop runs at normal priority
    (``active`` tells). Linux only; elsewhere it does nothing.
    """

    def __init__(self, priority: int | None):
        if priority is not None and not (isinstance(priority, int) and 1 <= priority <= 99):
            raise ValueError(f"realtime priority must be an int in [1, 99] or None, got {priority!r}")
        self.priority = priority
        self.active = False
        self._saved: tuple[int, int] | None = None

    def __enter__(self) -> "RealtimePriority":
        if self.priority is None:
            return self
        if not hasattr(os, "sched_setscheduler"):
            log.warning("real-time priority requested, but this platform has no sched_setscheduler: ignored")
            return self
        try:
            self._saved = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
        except PermissionError:
            log.warning("real-time priority %d refused (needs root or CAP_SYS_NICE): running at normal priority",
                        self.priority)
            self._saved = None
            return self
        self.active = True
        log.info("tick loop runs under SCHED_FIFO, priority %d", self.priority)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active and self._saved is not None:
            policy, prio = self._saved
            os.sched_setscheduler(0, policy, os.sched_param(prio))
            self.active = False

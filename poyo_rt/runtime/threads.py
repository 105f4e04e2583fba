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

:class:`CpuAffinity` and :class:`RealtimePriority` are for the tick loop's own thread (``engine.cpu_affinity``,
``engine.realtime_priority``); :class:`ThreadClock` reads where that thread's time went (on a CPU, waiting for one),
:class:`StealClock` how much of it a hypervisor took.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Iterable

import torch

log = logging.getLogger(__name__)

MAX_AUTO_THREADS = 8


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    allowed = allowed_cores()
    return len(allowed) if allowed is not None else os.cpu_count() or 1


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
    which is what makes a forward's tail long on a busy machine. Linux still stops a real-time thread that runs
    more than ``sched_rt_runtime_us`` of every ``sched_rt_period_us`` (950 ms of 1 s by default) for the rest
    of that second: ~50 ms, once a second, for a loop that runs late tick after tick (``tools/rt_throttle.py``;
    the tick's ``cpu_wait`` shows it). A loop with slack sleeps far more than that between ticks; an overloaded
    one misses ticks either way. Needs root or ``CAP_SYS_NICE`` (or an ``rtprio`` limit in
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


def parse_cores(text: str) -> tuple[int, ...]:
    """CPU cores from a ``taskset``-style list, e.g. ``"3"``, ``"2,3"`` or ``"2-5,8"``; raises ValueError."""
    cores: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ValueError(f"CPU list {text!r}: expected cores like 3, 2,3 or 2-5") from None
        if first < 0 or last < first:
            raise ValueError(f"CPU list {text!r}: {part.strip()!r} is not a range of cores >= 0")
        cores.extend(range(first, last + 1))
    return tuple(sorted(set(cores)))


def allowed_cores() -> frozenset[int] | None:
    """The cores this process may run on, or None where the platform cannot tell (not Linux)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def check_available(cores: Iterable[int]) -> None:
    """Raise ValueError naming the ``cores`` this process may not run on (none where the platform cannot tell)."""
    allowed = allowed_cores()
    missing = sorted(set(cores) - allowed) if allowed is not None else []
    if missing:
        raise ValueError(f"CPU cores {missing} are not available to this process (it may use "
                         f"{format_cores(allowed)})")


class CpuAffinity:
    """Context manager: the calling thread runs only on ``cores`` (CPU ids) for the block, and the process's
    other threads leave those cores; afterwards every thread goes back to the cores it had.

    For a rig's tick loop: a loop pinned to its own cores is not moved between cores by the scheduler, keeps
    its code and data in that core's caches between ticks, and is not preempted on its core by the process's
    own helper threads: ZeroMQ's I/O thread, woken by every publish, and liblsl's receiving threads, woken by
    every incoming chunk (on the 2-core test VM, pinning the loop with ZeroMQ's I/O thread left free to run on
    its core raised the tick's publish stage from 84 to 117 µs at the median: ``tools/host_overhead.py``,
    docs/performance.md). torch's worker threads (``model.threads``
    above 1) move too: the forward's parallel part then runs on the other cores. Threads started later inherit
    the cores of the thread that starts them. Pair it with cores kept free of other processes
    (``isolcpus``/``taskset`` for the rest) and, if allowed, :class:`RealtimePriority`.

    Empty ``cores``: nothing changes. Cores the process may not use are a ValueError that names them; when the
    loop takes every core the other threads stay where they are; platforms without ``sched_setaffinity`` log a
    warning and run unpinned. One pinned loop a process: a second one's exit would give the first loop's
    thread back the cores it had before the second was entered.
    """

    def __init__(self, cores: Iterable[int] = ()):
        self.cores = tuple(sorted(set(int(c) for c in cores)))
        self.active = False
        self.moved: dict[int, frozenset[int]] = {}  #: thread id -> its cores before, for the threads moved off
        self._saved: frozenset[int] | None = None

    def __enter__(self) -> "CpuAffinity":
        if not self.cores:
            return self
        allowed = allowed_cores()
        if allowed is None or not hasattr(os, "sched_setaffinity"):
            log.warning("CPU affinity %s requested, but this platform cannot pin threads: ignored", list(self.cores))
            return self
        check_available(self.cores)
        self._saved = allowed
        os.sched_setaffinity(0, self.cores)
        self.active = True
        self._move_others(allowed - set(self.cores))
        log.info("tick loop pinned to CPU core(s) %s; %d other thread(s) of the process moved to %s",
                 format_cores(self.cores), len(self.moved), format_cores(allowed - set(self.cores)) or "-")
        return self

    def _move_others(self, rest: frozenset[int]) -> None:
        """Move this process's other threads off the loop's cores, to ``rest`` (Linux: /proc/self/task)."""
        if not rest:
            return
        me = threading.get_native_id()
        for tid in thread_ids():
            if tid == me:
                continue
            try:
                before = frozenset(os.sched_getaffinity(tid))
                if before & set(self.cores):
                    os.sched_setaffinity(tid, (before - set(self.cores)) or rest)
                    self.moved[tid] = before
            except (ProcessLookupError, PermissionError):  # ended meanwhile / not ours to move
                continue

    def __exit__(self, *exc: object) -> None:
        if self.active and self._saved is not None:
            os.sched_setaffinity(0, self._saved)
            for tid, before in self.moved.items():
                try:
                    os.sched_setaffinity(tid, before)
                except (ProcessLookupError, PermissionError):
                    continue
            self.moved = {}
            self.active = False


def thread_ids(pid: int | None = None) -> list[int]:
    """Kernel ids of the threads of process ``pid`` (default: this one) (Linux), or none where /proc is not
    there."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid or 'self'}/task")]
    except OSError:
        return []


def pin_process(pid: int, cores: Iterable[int]) -> None:
    """Move every thread of process ``pid`` (those its libraries started too) to ``cores``; threads it starts
    later inherit them from the thread that starts them."""
    for tid in thread_ids(pid):
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def format_cores(cores: Iterable[int]) -> str:
    """``taskset``-style text of a set of cores: ``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for c in sorted(cores):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


class ThreadClock:
    """The calling thread's CPU time and run-queue wait, ns: where a tick's wall time went.

    Between two :meth:`read` calls on one thread, ``wall = cpu + wait + off``: ``cpu`` the time the thread ran
    (``CLOCK_THREAD_CPUTIME_ID``), ``wait`` the time it was ready to run but another thread or process had its
    core (Linux's run delay, ``/proc/thread-self/schedstat``), ``off`` the rest: blocked (a lock, I/O, a GPU
    synchronisation that sleeps) or, on a virtual machine, stolen by the hypervisor, which a guest kernel with
    steal-time accounting leaves out of the thread's CPU time. A tick that ran long therefore says whether
    its work was slow (``cpu``), was preempted (``wait``) or stood still (``off``). Each read costs ~2 µs (one
    clock call, one ``pread``). ``wait`` is -1 where the run delay cannot be read (not Linux).
    """

    PATH = "/proc/thread-self/schedstat"

    def __init__(self) -> None:
        self._tid: int | None = None
        self._fd = -1

    def _open(self) -> int:
        """The schedstat file of the calling thread (reopened when another thread reads), or -1."""
        tid = threading.get_native_id()
        if tid != self._tid:
            self.close()
            self._tid = tid
            try:
                self._fd = os.open(self.PATH, os.O_RDONLY)
            except OSError:  # not Linux, or /proc not mounted
                self._fd = -1
        return self._fd

    def read(self) -> tuple[int, int]:
        """``(cpu_ns, wait_ns)`` of the calling thread since it started (``wait_ns`` -1 if unknown)."""
        fd = self._open()
        cpu = time.thread_time_ns()
        if fd < 0:
            return cpu, -1
        try:
            return cpu, int(os.pread(fd, 64, 0).split()[1])
        except (OSError, IndexError, ValueError):
            return cpu, -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._tid = None

    def __del__(self) -> None:
        self.close()


class StealClock:
    """Time a hypervisor took from some of this machine's CPU cores, ns: Linux's steal time (``/proc/stat``).

    On a virtual machine the host can stop a virtual CPU for milliseconds (another guest, the host's own
    work); the guest's kernel counts that time as stolen, per core. :meth:`lap` returns the most any of
    ``cores`` (None: every core) lost since the previous lap: a pinned tick loop's own core tells exactly,
    several cores bound it from above. -1 where it cannot be read (not Linux). The kernel exports steal in
    clock ticks (``USER_HZ``, 10 ms on most systems), so laps resolve stalls of ~10 ms and more, and read 0 on
    bare metal. A lap costs one read of the file's first lines (~10 µs); ``path`` is for tests.
    """

    def __init__(self, cores: Iterable[int] | None = None, path: str = "/proc/stat") -> None:
        self._fd = -1
        self.cores = None if cores is None else frozenset(cores)
        self._ns_per_tick = 1e9 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 1e7
        self._size = 160 * ((os.cpu_count() or 1) + 2)  # the per-core lines, which come first
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError:  # not Linux, or /proc not mounted
            self._fd = -1
        self._last = self._read()

    def _read(self) -> dict[int, int] | None:
        """Clock ticks stolen from each core (of ``cores``) so far, or None."""
        if self._fd < 0:
            return None
        try:
            text = os.pread(self._fd, self._size, 0)
        except OSError:
            return None
        lines = text.split(b"\n")
        if len(text) == self._size:
            lines = lines[:-1]  # cut off mid-line
        out = {}
        for line in lines:  # "cpuN user nice system idle iowait irq softirq steal ..."
            fields = line.split()
            if not fields or not fields[0].startswith(b"cpu"):
                break
            name = fields[0][3:]
            if name.isdigit() and len(fields) > 8 and fields[8].isdigit() and (
                    self.cores is None or int(name) in self.cores):
                out[int(name)] = int(fields[8])
        return out or None

    @property
    def available(self) -> bool:
        """Whether the steal time could be read (at the last lap, or at construction)."""
        return self._last is not None

    def lap(self) -> int:
        """ns stolen from the most-robbed core since the previous lap (or construction), -1 if unknown."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None:
            return -1
        return round(max(now[c] - last.get(c, now[c]) for c in now) * self._ns_per_tick)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __del__(self) -> None:
        self.close()

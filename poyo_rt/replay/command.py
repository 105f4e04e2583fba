"""``poyo-rt replay``: play a recorded (or synthetic) session as LSL streams.

Wire it into the CLI with :func:`add_parser`; the handler is :func:`cmd_replay`. Exit codes: 0 done
(also after Ctrl-C / SIGTERM, which stop cleanly and print the stats), 2 a missing or unreadable file
or a bad option.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from poyo_rt.replay.readers import FORMATS, detect_format, parse_reader_options, read_session
from poyo_rt.replay.session import Session

log = logging.getLogger(__name__)

__all__ = ["add_parser", "cmd_replay", "ProgressReporter", "load_replay_session"]

EXIT_OK, EXIT_USAGE = 0, 2
SYNTHETIC = "synthetic"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``replay`` on ``subparsers``; its handler (``args.func``) is :func:`cmd_replay`."""
    p = subparsers.add_parser(
        "replay",
        help="play a recorded or synthetic session as LSL streams (spikes + behaviour)",
        description="Play FILE (MAT/NPZ binned counts, NWB, XDF, torch_brain HDF5, a poyo-rt NPZ, or the word\n"
        "'synthetic') as two LSL streams on this machine: spike events (irregular, one int32 channel =\n"
        "unit index, unit ids in <desc><units>), or with --spike-layout counts binned counts (one channel\n"
        "per unit, a sample per bin), and the behaviour (regular float32, channel labels).\n"
        "Every sample is stamped with its scheduled LSL time and sent only once that time has come.\n"
        "Ctrl-C stops cleanly and prints the stats. Exit codes: 0 done or stopped, 2 bad file or option.",
        epilog="examples:  poyo-rt replay synthetic --synthetic-duration 60 --loop\n"
        "           poyo-rt replay session.nwb --speed 4 --start 30 --duration 60\n"
        "           poyo-rt replay synthetic --spike-layout counts --bin-ms 20   # a binned-count rig's stream",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="session file, or 'synthetic' for a generated center-out session")
    p.add_argument("--format", choices=FORMATS, help="force the file format (default: from suffix and content)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed, 2 = twice real time (default: 1)")
    p.add_argument("--loop", action="store_true", help="play the span again and again until interrupted")
    p.add_argument("--loops", type=int, metavar="N", help="stop after N passes (implies --loop)")
    p.add_argument("--start", type=float, default=0.0, metavar="S",
                   help="start S seconds after the session's first event (default: 0)")
    p.add_argument("--duration", type=float, metavar="D", help="play D session seconds (default: to the end)")
    p.add_argument("--name", default="poyo-spikes", help="LSL name of the spike stream (default: %(default)s)")
    p.add_argument("--behavior-name", default="poyo-behavior",
                   help="LSL name of the behaviour stream (default: %(default)s)")
    p.add_argument("--no-behavior", action="store_true", help="play spikes only")
    p.add_argument("--spike-layout", choices=["events", "counts"], default="events",
                   help="events: one sample per spike (irregular, one unit-index channel); counts: binned counts, "
                   "one channel per unit, one sample per bin sent at the bin's end, as binned-count systems publish "
                   "(default: %(default)s)")
    p.add_argument("--bin-ms", type=float, metavar="MS",
                   help="counts: the bin, session milliseconds (default: 10)")
    p.add_argument("--source-id-prefix", help="LSL source_id prefix (default: from --name and the session id)")
    p.add_argument("--chunk-ms", type=float, default=5.0, help="pacing period, ms (default: %(default)g)")
    p.add_argument("--wait-consumers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for an inlet on each stream before playing (default: 0)")
    p.add_argument("--linger", type=float, default=1.0, metavar="S",
                   help="after the last sample, keep the streams open S seconds so inlets receive the tail "
                   "(default: %(default)g)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic session, or of spike placement inside MAT/NPZ bins (default: 0)")
    p.add_argument("--synthetic-units", type=int, default=64, help="synthetic: number of units (default: 64)")
    p.add_argument("--synthetic-duration", type=float, default=300.0,
                   help="synthetic: session length, s (default: 300)")
    p.add_argument("-O", "--reader-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for the format's reader (repeatable; VALUE parsed as JSON when it can be, "
                   "e.g. -O behavior_key=cursorVel -O 'behavior_channels=[0,1]')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / periodic progress lines")
    p.add_argument("--log-every", type=float, default=10.0, metavar="S",
                   help="without a terminal, log progress every S seconds (default: %(default)g)")
    p.set_defaults(func=cmd_replay)
    return p


# --- progress ----------------------------------------------------------------------------------
class ProgressReporter:
    """``progress(fraction, elapsed_s)`` sink: a one-line bar on a TTY, else a log line every ``log_every_s``."""

    def __init__(self, stream: TextIO, *, total_wall_s: float, looping: bool, log_every_s: float = 10.0,
                 width: int = 30) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.total_wall_s = total_wall_s  # wall seconds of the whole play (of one pass when looping forever)
        self.looping = looping
        self.log_every_s = log_every_s
        self.width = width
        self._next_log_s = log_every_s
        self._drawn = False

    def __call__(self, fraction: float, elapsed_s: float) -> None:
        if self.tty:
            filled = int(round(fraction * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            total = "loop" if self.looping else _clock_text(self.total_wall_s)
            self.stream.write(f"\rreplay [{bar}] {100 * fraction:5.1f}%  {_clock_text(elapsed_s)} / {total} ")
            self.stream.flush()
            self._drawn = True
        elif elapsed_s >= self._next_log_s:
            self._next_log_s = elapsed_s + self.log_every_s
            what = "of this loop" if self.looping else f"of {_clock_text(self.total_wall_s)}"
            log.info("replay: %.1f %% %s, %s elapsed", 100 * fraction, what, _clock_text(elapsed_s))

    def finish(self) -> None:
        """End the bar's line (TTY only)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "∞"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- session loading ---------------------------------------------------------------------------
def load_replay_session(args: argparse.Namespace) -> Session:
    """The session ``args`` name: generated for ``synthetic``, else read from the file.

    Raises ``FileNotFoundError`` / ``ValueError`` / ``TypeError`` (formats, options) for the caller to report.
    """
    if args.file == SYNTHETIC:
        from poyo_rt.replay.synthetic import generate_session

        if args.reader_option or args.format:
            raise ValueError("--format and --reader-option do not apply to FILE 'synthetic'")
        return generate_session(n_units=args.synthetic_units, duration_s=args.synthetic_duration, seed=args.seed)
    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"FILE: no such file {str(path)!r} (or pass 'synthetic')")
    if not path.is_file():
        raise ValueError(f"FILE: {str(path)!r} is not a regular file")
    options = parse_reader_options(args.reader_option)
    fmt = args.format or detect_format(path)
    if fmt in ("mat", "npz"):
        options.setdefault("seed", args.seed)
    return read_session(path, format=args.format, **options)


# --- handler -------------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    """Run ``poyo-rt replay``; returns the exit code (0 done or interrupted, 2 bad file or option)."""
    from poyo_rt.replay.player import SessionPlayer

    try:
        if args.loops is not None and args.loops < 1:
            raise ValueError(f"--loops must be >= 1, got {args.loops}")
        if not (math.isfinite(args.chunk_ms) and args.chunk_ms > 0):
            raise ValueError(f"--chunk-ms must be a positive number, got {args.chunk_ms}")
        for flag, value in (("--wait-consumers", args.wait_consumers), ("--linger", args.linger)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{flag} must be >= 0 seconds, got {value}")
        session = load_replay_session(args)
        loop = bool(args.loop or args.loops is not None)
        player = SessionPlayer(
            session,
            spike_name=args.name,
            behavior_name=None if args.no_behavior else args.behavior_name,
            source_id_prefix=args.source_id_prefix,
            speed=args.speed,
            loop=loop,
            max_loops=args.loops,
            start_s=args.start,
            duration_s=args.duration,
            chunk_s=args.chunk_ms / 1000.0,
            spike_layout=args.spike_layout,
            bin_s=None if args.bin_ms is None else args.bin_ms / 1000.0,
        )
    except (OSError, ValueError, TypeError) as exc:
        log.error("replay: %s", exc)
        return EXIT_USAGE
    log.info("replay: %r", session)

    reporter = None
    if not args.no_progress:
        passes = args.loops if args.loops is not None else (math.inf if loop else 1)
        per_pass_wall_s = player.period_s / player.speed
        reporter = ProgressReporter(
            sys.stderr,
            total_wall_s=per_pass_wall_s * (1 if math.isinf(passes) else passes),
            looping=math.isinf(passes),
            log_every_s=args.log_every,
        )
        player.progress = reporter

    stop = threading.Event()
    restore = _install_stop_handlers(stop)
    try:
        player.open()
        if args.wait_consumers > 0:
            log.info("replay: waiting up to %g s for inlets on %r", args.wait_consumers, args.name)
            if not _wait_consumers(player, args.wait_consumers, stop):
                log.warning("replay: no inlet on every stream after %g s; playing anyway", args.wait_consumers)
        main_thread = threading.current_thread() is threading.main_thread()
        log.info("replay: playing %r%s", args.name, " (Ctrl-C stops)" if main_thread else "")
        stats = player.run(stop)
        if reporter is not None:
            reporter.finish()
        if not stats.stopped and args.linger > 0:
            log.info("replay: done; keeping the streams open %g s for inlets to drain", args.linger)
            stop.wait(args.linger)
    finally:
        if reporter is not None:
            reporter.finish()
        restore()
        player.close()
    print(f"replay {'stopped' if stats.stopped else 'done'}: {stats.summary()}", flush=True)
    return EXIT_OK


def _wait_consumers(player: Any, timeout_s: float, stop: threading.Event) -> bool:
    """Wait for inlets in short steps so that Ctrl-C still stops promptly."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if player.wait_for_consumers(min(0.1, max(0.0, deadline - time.monotonic()))):
            return True
        if time.monotonic() >= deadline:
            return False
    return False


def _install_stop_handlers(stop: threading.Event) -> Any:
    """SIGINT / SIGTERM set ``stop`` (main thread only). Returns a callable that restores the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        log.warning("replay: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore

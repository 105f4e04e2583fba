"""The ``poyo-rt`` command line: one subcommand per job, ``--help`` on each.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from poyo_rt import __version__
from poyo_rt.errors import ConfigError, PoyoRtError

log = logging.getLogger("poyo_rt")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with ``(default: X)`` after each option's text, except where it would mislead or repeat:
    flags that take no value (``--no-offline`` is not "True"), defaults of None or an empty list, and text
    that states its default already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.nargs == 0 or action.default is None or action.default == [] or "default" in text:
            return text
        return super()._get_help_string(action)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")


# --- demo ------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="replay a synthetic session over LSL, decode it live, score it, report latency",
        description="The whole loop on this machine, nothing downloaded: the held-out part of the synthetic "
        "session the bundled checkpoint was trained on is replayed over LSL in real time, the engine decodes it "
        "(CPU, or CUDA when present) and publishes over ZeroMQ, a subscriber scores the decoded velocity against "
        "the ground truth (R²). Prints the latency table; writes latency.json (see `poyo-rt report`), demo.json "
        "and demo.png (decoded vs true velocity, latency histogram). Exit status 1 when R² is below --min-r2.",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds of live decoding (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a 10-second run (as CI does)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--tick-hz", type=float, default=50.0, help="decoding rate (default: %(default)s)")
    p.add_argument("--checkpoint", help="another checkpoint made by tools/train_default.sh (default: the bundled one)")
    p.add_argument("--min-r2", type=float, default=None, help="lowest acceptable mean R² (default: the demo's floor)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from poyo_rt.demo import DEFAULT_MIN_R2, run_demo

    duration = 10.0 if args.quick else args.duration
    if not duration > 2.0:
        raise ConfigError("--duration", f"must be > 2 seconds (one window plus some ticks), got {duration}")
    floor = DEFAULT_MIN_R2 if args.min_r2 is None else args.min_r2
    result = run_demo(duration_s=duration, out_dir=args.out, device=args.device, checkpoint=args.checkpoint,
                      tick_hz=args.tick_hz)
    r2 = ", ".join(f"{v:.3f}" for v in result.r2)
    print(f"decoded R² per channel: {r2}; mean {result.r2_mean:.3f} (floor {floor:.2f}); "
          f"{result.ticks} ticks decoded, {result.received} received, {result.missed} missed")
    print(f"wrote {result.figure}, {result.latency_json} (poyo-rt report {result.latency_json})")
    if not result.r2_mean >= floor:
        log.error("mean R² %.3f is below the floor %.2f", result.r2_mean, floor)
        return EXIT_FAILURE
    return EXIT_OK


# --- run -------------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="decode an LSL spike stream in real time and publish over ZeroMQ",
        description="Resolve the LSL spike stream named in CONFIG, decode it with the checkpoint's POYO at a fixed "
        "tick rate and publish every tick over ZeroMQ. Ctrl-C / SIGTERM stop gracefully and write the latency "
        "report; SIGUSR1 writes it on demand. Every field is documented in configs/default.yaml.",
    )
    p.add_argument("config", nargs="?", help="YAML run configuration (default: built-in defaults)")
    p.add_argument("--checkpoint", help="override model.checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override model.device")
    p.add_argument("--stream", help="override input.name (LSL stream name)")
    p.add_argument("--endpoint", help="override output.endpoint (ZeroMQ)")
    p.add_argument("--tick-hz", type=float, help="override engine.tick_hz")
    p.add_argument("--duration", type=float, help="override engine.duration_s (seconds)")
    p.add_argument("--cpu-affinity", type=cores_arg, metavar="CORES",
                   help="override engine.cpu_affinity: pin the tick loop to these CPU cores, e.g. 3 or 2-3")
    p.add_argument("--report", help="override metrics.report_path")
    p.add_argument("--lsl-output", metavar="NAME",
                   help="override output.lsl_name: also push the decoded values to an LSL stream of this name, for "
                   "LabRecorder to record beside the spikes")
    p.set_defaults(func=_cmd_run)


def cores_arg(text: str) -> list[int]:
    """argparse type of a CPU list (``3``, ``2,3``, ``2-5``)."""
    from poyo_rt.runtime.threads import parse_cores

    try:
        return list(parse_cores(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from poyo_rt.config import load_config, with_overrides
    from poyo_rt.runtime.launch import run_decoder

    config = with_overrides(
        load_config(args.config),
        model={"checkpoint": args.checkpoint, "device": args.device},
        input={"name": args.stream},
        output={"endpoint": args.endpoint, "lsl_name": args.lsl_output},
        engine={"tick_hz": args.tick_hz, "duration_s": args.duration, "cpu_affinity": args.cpu_affinity},
        metrics={"report_path": args.report},
    )
    summary = run_decoder(config)
    return EXIT_OK if summary.get("ticks", 0) > 0 else EXIT_FAILURE


# --- listen ----------------------------------------------------------------------------------
def _add_listen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen",
        help="subscribe to a decoder's ZeroMQ output: print or record ticks",
        description="Subscribe to a poyo-rt publisher, print each decoded tick (or every Nth) and/or record them "
        "as newline-delimited JSON, then print a summary (received, missed, latency percentiles).",
    )
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="publisher endpoint (default: %(default)s)")
    p.add_argument("--topic", default="poyo", help="topic (default: %(default)s)")
    p.add_argument("--out", help="record ticks to this NDJSON file")
    p.add_argument("--count", type=int, help="stop after this many ticks")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--print-every", type=int, default=1, help="print every Nth tick; 0 = none (default: 1)")
    p.add_argument("--idle-timeout", type=float, help="stop when nothing arrives for this many seconds")
    p.add_argument("--spin-ms", type=float, default=0.0,
                   help="busy-poll from this long before each tick is expected to this long after: takes a tick "
                   "within µs of its arrival instead of a thread wake-up later, at the cost of CPU (default: 0 = off)")
    p.set_defaults(func=_cmd_listen)


def _cmd_listen(args: argparse.Namespace) -> int:
    import json

    from poyo_rt.stream.lsl import local_clock
    from poyo_rt.stream.publisher import listen

    if not 0 <= args.spin_ms <= 1000:
        raise ConfigError("--spin-ms", f"must be 0 (off) to 1000 ms, got {args.spin_ms:g}")
    summary = listen(args.endpoint, args.topic, out_path=args.out, count=args.count, duration_s=args.duration,
                     print_every=args.print_every, clock=local_clock, idle_timeout_s=args.idle_timeout,
                     spin_s=args.spin_ms / 1e3)
    print(json.dumps(summary, indent=2, default=str))
    return EXIT_OK if summary.get("received", 0) > 0 else EXIT_FAILURE


# --- report ----------------------------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn a run's latency JSON into a PNG figure and an HTML page",
        description="Read the latency JSON a run wrote (metrics.report_path) and write a figure (per-stage "
        "histograms, latency over time against the deadline, drops) and a self-contained HTML page with the "
        "percentile table, the deadline misses by cause, each missed tick's stages and the run's configuration; "
        "print the table, the misses by cause and the last missed ticks. With --baseline, both also set the run "
        "beside another run's log (medians, p99s, their ratios, misses).",
    )
    p.add_argument("run", help="latency JSON written by `poyo-rt run`, the demo or `poyo-rt bench e2e --report-dir`")
    p.add_argument("--png", help="figure path (default: RUN with .png)")
    p.add_argument("--html", help="HTML path (default: RUN with .html)")
    p.add_argument("--baseline", metavar="BASE", help="another run's latency JSON to compare against")
    p.set_defaults(func=_cmd_report)


MISSED_SHOWN = 20  # missed ticks `poyo-rt report` prints (the HTML page lists them all)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from poyo_rt.runtime.report import (COMPARE_HEAD, MISSED_HEAD, TABLE_HEAD, compare_table, describe_miss_causes,
                                        describe_misses, describe_steal, load_run, missed_ticks_table,
                                        percentile_table, plot_run, write_html)

    docs = {}
    for field, path in (("RUN", args.run), ("--baseline", args.baseline)):
        try:
            docs[field] = load_run(path) if path else None
        except ValueError as err:
            raise ConfigError(field, str(err)) from None
    doc, base = docs["RUN"], docs["--baseline"]
    png = plot_run(doc, args.png or Path(args.run).with_suffix(".png"))
    page = write_html(doc, args.html or Path(args.run).with_suffix(".html"), png, base=base,
                      base_name=str(args.baseline or ""))
    for row in [TABLE_HEAD, *percentile_table(doc)]:
        print("  ".join(f"{c:>10}" for c in row))
    causes = doc.get("meta", {}).get("miss_causes")
    if causes:
        print(f"deadline misses by cause: {describe_miss_causes(causes)}")
    steal = describe_steal(doc)
    if steal:
        print(steal)
    missed = missed_ticks_table(doc)
    if missed:
        shown = missed[-MISSED_SHOWN:]
        print(f"\nthe last {len(shown)} of the {len(missed)} missed ticks the engine kept (ms; all in the HTML page):")
        widths = [max(len(r[i]) for r in [MISSED_HEAD, *shown]) for i in range(len(MISSED_HEAD))]
        for row in [MISSED_HEAD, *shown]:
            print("  ".join(c.rjust(w) if i != 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if base is not None:
        print(f"\nagainst the baseline {args.baseline} (x base: its latency over this run's; above 1: this run "
              "is faster)")
        for row in [COMPARE_HEAD, *compare_table(doc, base)]:
            print("  ".join(f"{c:>11}" for c in row))
        print(f"deadline misses: {describe_misses(doc)}, against {describe_misses(base)} in the baseline")
    print(f"wrote {png} and {page}")
    return EXIT_OK


# --- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poyo-rt",
        description="Real-time POYO decoding: LSL spikes in, decoded behaviour out over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"poyo-rt {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="logging verbosity (default: info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo(sub)
    _add_run(sub)
    _add_listen(sub)
    from poyo_rt.stream.command import add_parser as add_streams

    add_streams(sub)
    from poyo_rt.replay.command import add_parser as add_replay

    add_replay(sub)
    from poyo_rt.train.command import add_parser as add_train

    add_train(sub)
    from poyo_rt.bench.command import add_parser as add_bench

    add_bench(sub)
    _add_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not a failure of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_OK
    except PoyoRtError as err:
        log.error("%s", err)
        return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

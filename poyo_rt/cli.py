"""The ``poyo-rt`` command line: one subcommand per job, ``--help`` on each.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from poyo_rt import __version__
from poyo_rt.errors import ConfigError, PoyoRtError

log = logging.getLogger("poyo_rt")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


# --- bench -----------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency benchmarks with torch_brain as the same-process baseline",
        description="Time poyo_rt's POYO forward against torch_brain's (same weights, same inputs: batch 1, "
        "1 s window, 100 units, 2,000 spikes). On CUDA also the CUDA-graph replay.",
    )
    p.add_argument("what", nargs="?", default="forward", choices=["forward"], help="which benchmark (default: forward)")
    p.add_argument("--quick", action="store_true", help="short smoke run (few iterations, poyo_1.3M only)")
    p.add_argument("--iters", type=int, default=100, help="timed calls per path (default: 100)")
    p.add_argument("--config", action="append", dest="configs", metavar="NAME",
                   help="model config to time (repeatable; default: dim512_depth2 and poyo_1.3M)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=_cmd_bench)


def _resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for, but no CUDA device is available to this torch build")
    return choice


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from poyo_rt import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    configs = args.configs or (["poyo_1.3M"] if args.quick else list(bench.BENCH_CONFIGS))
    iters = 10 if args.quick else args.iters
    if iters < 1:
        raise ConfigError("--iters", f"must be >= 1, got {iters}")
    info = bench.machine_info()
    print(f"poyo-rt {__version__} forward bench on {device} ({info}); {iters} calls per path", flush=True)
    results = bench.run_forward_bench(configs, iters=iters, warmup=2 if args.quick else 5, device=device,
                                      rounds=2 if args.quick else 5, progress=lambda m: print(f"  {m}", flush=True))
    print(bench.format_forward_table(results))
    if args.json:
        bench.write_json(args.json, {"machine": info, "poyo_rt": __version__, "results": results})
        print(f"wrote {args.json}")
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
    _add_bench(sub)
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
    except PoyoRtError as err:
        log.error("%s", err)
        return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

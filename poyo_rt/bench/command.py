"""``poyo-rt bench [forward|tokenizer|e2e|all]``: the benchmarks of :mod:`poyo_rt.bench` from the command line."""

from __future__ import annotations

import argparse

from poyo_rt import __version__
from poyo_rt.cli import HelpFormatter, cores_arg
from poyo_rt.errors import ConfigError

WHAT = ("forward", "tokenizer", "e2e", "all")


def _threads(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {value!r}")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency benchmarks with torch_brain as the same-process baseline",
        description=(
            "forward: poyo_rt's POYO against torch_brain's (same weights; batch 1, 1 s window, 100 units, 2,000 "
            "spikes; on CUDA also the CUDA-graph replay), then per tick of a sliding stream (exact forward and the "
            "encoder key/value cache). tokenizer: the incremental tokenizer per tick against torch_brain's "
            "tokenize+collate, windows 0.5-4 s. e2e: a player process pushes spikes over LSL, the engine decodes "
            "and publishes over ZeroMQ, a subscriber times push -> receipt; the torch_brain forward in the same "
            "engine is the baseline phase; pushed and received spikes are counted (ingest). all: the three."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("what", nargs="?", default="forward", choices=WHAT, help="which benchmark")
    p.add_argument("--quick", action="store_true", help="a short smoke run of the chosen benchmark(s)")
    p.add_argument("--config", action="append", dest="configs", metavar="NAME",
                   help="model config (repeatable; forward default: dim512_depth2 and poyo_1.3M; e2e: poyo_1.3M)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch CPU threads: an integer or auto (cores - 1); forward/tokenizer default: torch's "
                        "choice; e2e default: auto, as poyo-rt run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    g = p.add_argument_group("forward")
    g.add_argument("--iters", type=int, default=100, help="timed calls per path (fixed window)")
    g.add_argument("--ticks", type=int, default=300, help="timed ticks (stream forward and tokenizer)")
    g.add_argument("--no-stream", action="store_true", help="skip the per-tick stream table")
    g.add_argument("--compile", action="append", dest="compile_modes", metavar="MODE", default=[],
                   help="CUDA: also time the fused forward compiled by inductor in MODE (repeatable; e.g. "
                        "max-autotune-no-cudagraphs, default), captured in a CUDA graph")
    g.add_argument("--tf32", action="store_true", help="CUDA: also time the fused graph with TF32 matmuls (error shown)")
    g = p.add_argument_group("e2e")
    g.add_argument("--duration", type=float, default=30.0, help="seconds of poyo_rt decoding")
    g.add_argument("--baseline-duration", type=float, default=None,
                   help="seconds of the torch_brain phase (default: --duration; 0 skips it)")
    g.add_argument("--tick-hz", type=float, default=50.0, help="decode rate")
    g.add_argument("--units", type=int, default=100, help="units in the stream")
    g.add_argument("--rate", type=float, default=2000.0, help="population spike rate, spikes/s")
    g.add_argument("--max-spikes", type=int, default=None,
                   help="spike tokens a window holds (default: 1.25 x rate x window, at least 8192)")
    g.add_argument("--realtime-priority", type=int, default=None, metavar="N",
                   help="run the engine's tick loop under SCHED_FIFO at priority N (1-99; needs root/CAP_SYS_NICE)")
    g.add_argument("--cpu-affinity", type=cores_arg, default=None, metavar="CORES",
                   help="pin the engine's tick loop to these CPU cores (engine.cpu_affinity, e.g. 1 or 2-3), and the "
                        "player and subscriber processes to the process's other cores")
    g.add_argument("--spin-ms", type=float, default=1.0,
                   help="wake this long before each tick, then busy-wait instead of sleeping (engine.spin_ms; 0 = off)")
    g.add_argument("--no-pre-tick", dest="pre_tick", action="store_false",
                   help="on waking, only spin: do not tokenize early and warm the tick's code (engine.pre_tick: false)")
    g.add_argument("--kernels", choices=("auto", "torch", "triton"), default="auto",
                   help="CUDA: the fused forward as torch ops or as poyo_rt's Triton kernels; auto = Triton where it "
                        "runs (model.kernels)")
    g.add_argument("--graph-copies", action="store_true",
                   help="CUDA: capture the input and output copies in each CUDA graph (model.graph_copies)")
    g.add_argument("--cuda-warm", choices=("copy", "replay", "launch"), default="copy",
                   help="CUDA: what the pre-tick runs on the early window: its copy to the GPU (default), the "
                        "whole call, or the tick's graph launched ahead behind a doorbell (model.cuda_warm)")
    g.add_argument("--warm-during-forward", action="store_true",
                   help="CUDA: while the GPU runs the forward, warm the publisher's code (engine.warm_during_forward)")
    g.add_argument("--receiver-spin-ms", type=float, default=0.0, metavar="MS",
                   help="the subscriber busy-polls from MS before each tick's expected arrival to MS after, instead "
                        "of sleeping in poll (Subscriber spin_s; 0 = off)")
    g.add_argument("--ipc", action="store_true",
                   help="publish on an ipc:// endpoint (a temporary directory) instead of tcp://127.0.0.1")
    g.add_argument("--report-dir", metavar="DIR", default=None,
                   help="write each phase's engine latency log to DIR/e2e-CONFIG-PHASE.json (see `poyo-rt report`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from poyo_rt.bench import common, forward as bench
    from poyo_rt.runtime.launch import resolve_device
    from poyo_rt.runtime.threads import apply_threads

    for name in ("iters", "ticks", "units"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}", f"must be >= 1, got {getattr(args, name)}")
    if args.duration <= 0 or args.rate <= 0 or args.tick_hz <= 0:
        raise ConfigError("--duration/--rate/--tick-hz", "must be > 0")
    if not 0 <= args.receiver_spin_ms <= 1000:
        raise ConfigError("--receiver-spin-ms", f"must be 0 (off) to 1000 ms, got {args.receiver_spin_ms:g}")
    device = resolve_device(args.device)
    if (args.compile_modes or args.tf32) and device != "cuda":
        raise ConfigError("--compile/--tf32", "are CUDA options (the forward bench on the CPU times eager paths)")
    which = ("forward", "tokenizer", "e2e") if args.what == "all" else (args.what,)
    if args.threads is not None and which != ("e2e",):
        apply_threads(args.threads, torch.device(device).type)
    info = common.machine_info()
    payload: dict = {"machine": info, "poyo_rt": __version__}

    def progress(msg: str) -> None:
        print(f"  {msg}", flush=True)

    print(f"poyo-rt {__version__} bench {args.what} on {device} ({info})", flush=True)
    if "forward" in which:
        configs = args.configs or (["poyo_1.3M"] if args.quick else list(bench.BENCH_CONFIGS))
        iters = 10 if args.quick else args.iters
        print(f"\n== forward, one fixed window a call: {iters} calls per path", flush=True)
        payload["results"] = []
        for config in configs:  # one table (and the JSON so far) per config: a run cut short keeps what it timed
            results = bench.run_forward_bench([config], iters=iters, warmup=2 if args.quick else 5, device=device,
                                              rounds=2 if args.quick else 5, compile_modes=tuple(args.compile_modes),
                                              tf32=args.tf32, progress=progress)
            payload["results"] += results
            print(bench.format_forward_table(results), flush=True)
            if args.json:
                common.write_json(args.json, payload)
        if not args.no_stream and device == "cpu":
            ticks = 40 if args.quick else args.ticks
            print(f"\n== forward per tick of a stream: {ticks} ticks at 50 Hz, 2,000 spikes/s, 100 units", flush=True)
            payload["stream"] = bench.run_stream_bench(configs, ticks=ticks, warmup_ticks=20 if args.quick else 60,
                                                       progress=progress)
            print(bench.format_stream_table(payload["stream"]), flush=True)
    if "tokenizer" in which:
        from poyo_rt.bench.tokenizer import format_tokenizer_table, run_tokenizer_bench

        ticks = 100 if args.quick else max(args.ticks, 1000)
        windows = (0.5, 4.0) if args.quick else (0.5, 1.0, 2.0, 4.0)
        print(f"\n== tokenizer: {ticks} ticks at 50 Hz per window, {args.units} units", flush=True)
        payload["tokenizer"] = run_tokenizer_bench(n_units=args.units, ticks=ticks, burn_in=20 if args.quick else 100,
                                                   windows_s=windows, progress=progress)
        print(format_tokenizer_table(payload["tokenizer"]), flush=True)
    if "e2e" in which:
        from poyo_rt.bench.e2e import format_e2e_table, run_e2e_bench

        duration = 5.0 if args.quick else args.duration
        base = args.baseline_duration if args.baseline_duration is not None else duration
        payload["e2e"] = []
        for config in args.configs or ["poyo_1.3M"]:
            print(f"\n== end to end: {config}, torch_brain {base:g} s then poyo_rt {duration:g} s", flush=True)
            res = run_e2e_bench(config, duration_s=duration, baseline_duration_s=base, tick_hz=args.tick_hz,
                                n_units=args.units, rate_hz=args.rate, device=device,
                                threads="auto" if args.threads is None else args.threads,
                                max_spikes=args.max_spikes, realtime_priority=args.realtime_priority,
                                report_dir=args.report_dir, kernels=args.kernels, spin_ms=args.spin_ms,
                                pre_tick=args.pre_tick, cpu_affinity=args.cpu_affinity,
                                graph_copies=args.graph_copies, cuda_warm=args.cuda_warm,
                                warm_during_forward=args.warm_during_forward,
                                receiver_spin_ms=args.receiver_spin_ms, ipc=args.ipc, progress=progress)
            payload["e2e"].append(res)
            print(format_e2e_table(res), flush=True)
    if args.json:
        common.write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0

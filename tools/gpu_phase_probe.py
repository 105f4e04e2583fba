#!/usr/bin/env python3
"""Would a persistent kernel beat a chain of kernels for the Triton forward's processor? A 1-minute GPU probe.

The Triton forward of poyo_1.3M runs 25 kernels of ~10 µs each (H200, docs/performance.md), 21 of them the
processor's, each a short chain of dependent memory round trips on 8-192 programs. A persistent kernel would
run those 21 steps as phases of one launch, separated by grid-wide barriers (every program waits until all
have finished the phase). Whether that pays depends on two numbers this probe measures in CUDA graphs:

* **separate**: K launches of a kernel whose P programs each do S dependent loads from L2 (a load whose
  address is the previous load's value), captured in one graph: per launch, the graph node's cost plus the
  kernel's ramp-up and drain;
* **persistent**: one launch of P programs doing the same K phases of S loads, with a grid barrier between
  phases (an atomic arrival counter, zeroed by the graph before the launch; each program spins on it with
  acquire loads). Each phase reads what another program wrote in the phase before, into memory the graph
  zeroes first, so a barrier that lets a program through early shows up as a wrong result (checked), not only
  as a faster time.

Per-phase cost = time / K. If separate - persistent is small against the 21 processor kernels' ~220 µs, the
processor's time is in the chains inside each kernel, and a persistent kernel is not the lever; if it is large,
it is. S = 0 gives the bare launch and barrier costs.

    python tools/gpu_phase_probe.py                          # K 21, P 8 64 132, S 0 4 8; the table
    python tools/gpu_phase_probe.py --compile-only           # no GPU: compile both kernels for sm_90, print PTX facts

Needs a CUDA device with at least P SMs (all P programs must be resident at once, or the barrier waits
forever: P is capped at the SM count), except ``--compile-only``. tools/gpu_check.sh runs it (STEPS=probe).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

from poyo_rt.bench.common import replay_times

BLOCK = 128  # lanes a program: one load of BLOCK int32 a step


@triton.jit
def _chase(next_ptr, idx, n_steps):
    """``n_steps`` dependent loads: ``idx = next[idx]``, each from L2 (``.cg``: not cached in the SM's L1, so a
    value another program wrote is seen)."""
    for _ in range(n_steps):
        idx = tl.load(next_ptr + idx, cache_modifier=".cg")
    return idx


@triton.jit
def _grid_barrier(counter_ptr, target):
    """Wait until ``target`` arrivals are counted at ``counter_ptr``, after adding this program's own: every
    thread's stores first (``debug_barrier``), a release add, then acquire reads until the count is reached."""
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    count = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while count < target:
        count = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _phase(next_ptr, state_ptr, phase, n_steps, BLOCK: tl.constexpr):
    """One phase for this program: read what the next program wrote in the phase before, chase, write
    ``that + 1`` (``state`` (K + 1, P, BLOCK) int32; ``next`` maps every index to itself)."""
    pid, n_prog = tl.program_id(0), tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    src = ((phase * n_prog + (pid + 1) % n_prog) * BLOCK + offs).to(tl.int64)
    prev = tl.load(state_ptr + src, cache_modifier=".cg")
    lane = _chase(next_ptr, offs, n_steps)  # == offs: the chain's cost, not its value
    tl.store(state_ptr + ((phase + 1) * n_prog + pid) * BLOCK + lane, prev + 1)


@triton.jit
def _separate_kernel(next_ptr, state_ptr, phase, n_steps, BLOCK: tl.constexpr):
    """One phase as its own launch."""
    _phase(next_ptr, state_ptr, phase, n_steps, BLOCK)


@triton.jit
def _persistent_kernel(next_ptr, state_ptr, counter_ptr, n_phases, n_steps, BLOCK: tl.constexpr):
    """All phases in one launch, a grid barrier after each but the last."""
    n_prog = tl.num_programs(0)
    for phase in range(n_phases):
        _phase(next_ptr, state_ptr, phase, n_steps, BLOCK)
        if phase + 1 < n_phases:
            _grid_barrier(counter_ptr, (phase + 1) * n_prog)


def buffers(n_prog: int, n_phases: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(next: identity map over a 4 MB table, state (K + 1, P, BLOCK) zeros, counter (1,))."""
    nxt = torch.arange(1 << 20, dtype=torch.int32, device=device)
    state = torch.zeros(n_phases + 1, n_prog, BLOCK, dtype=torch.int32, device=device)
    return nxt, state, torch.zeros(1, dtype=torch.int32, device=device)


def run_separate(nxt, state, n_prog: int, n_phases: int, n_steps: int) -> None:
    state.zero_()  # a memset node in the graph: a read that comes too early sees 0, not the last replay's value
    for k in range(n_phases):
        _separate_kernel[(n_prog,)](nxt, state, k, n_steps, BLOCK=BLOCK)


def run_persistent(nxt, state, counter, n_prog: int, n_phases: int, n_steps: int) -> None:
    state.zero_()
    counter.zero_()
    _persistent_kernel[(n_prog,)](nxt, state, counter, n_phases, n_steps, BLOCK=BLOCK)


def correct(state: torch.Tensor) -> bool:
    """Every program's last phase read a value its neighbour wrote one phase before: K everywhere."""
    return bool((state[-1] == state.shape[0] - 1).all())


def time_graph(fn, replays: int) -> tuple[float, float]:
    """(median, p99) µs of one replay of ``fn`` captured in a CUDA graph (CUDA events around each replay)."""
    fn()  # compile and warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return replay_times(graph, replays)


def compile_only(arch: int) -> int:
    """Compile both kernels for sm_``arch`` here (no GPU): they build, and the barrier's PTX has its release
    add and acquire loads (Triton issues a scalar atomic from one thread of the program, ``%tid.x == 0``, and
    broadcasts the value it read through shared memory; triton 3.9 makes an add whose result is unused a ``red``,
    3.6 an ``atom``, and an add of 0 an acquire load)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernels = {
        "_separate_kernel": (_separate_kernel, {"next_ptr": "*i32", "state_ptr": "*i32", "phase": "i32",
                                                "n_steps": "i32", "BLOCK": "constexpr"}),
        "_persistent_kernel": (_persistent_kernel, {"next_ptr": "*i32", "state_ptr": "*i32", "counter_ptr": "*i32",
                                                    "n_phases": "i32", "n_steps": "i32", "BLOCK": "constexpr"}),
    }
    for name, (kernel, signature) in kernels.items():
        compiled = triton.compile(ASTSource(kernel, signature, constexprs={"BLOCK": BLOCK}),
                                  target=GPUTarget("cuda", arch, 32))
        ptx = compiled.asm["ptx"]
        facts = {op: ptx.count(op) for op in ("global.gpu.release.add", "ld.global.gpu.acquire", "bar.sync",
                                              "ld.global.cg", "%tid.x")}
        print(json.dumps({"kernel": name, "arch": arch, "ptx_counts": facts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", type=int, default=21, help="K: phases (kernels) a forward (default: the "
                                                           "processor's 21)")
    ap.add_argument("--programs", type=int, action="append", help="P (repeatable; default 8 64 132)")
    ap.add_argument("--steps", type=int, action="append", help="S: dependent loads a phase (repeatable; default 0 4 8)")
    ap.add_argument("--replays", type=int, default=300)
    ap.add_argument("--compile-only", action="store_true", help="compile for --arch here, no GPU needed")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    if args.compile_only:
        return compile_only(args.arch)
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        ap.error("needs a CUDA device (and TRITON_INTERPRET unset); --compile-only runs without one")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    programs = sorted({min(p, sms) for p in (args.programs or [8, 64, 132])})
    rows = []
    print(f"{torch.cuda.get_device_name(0)}, {sms} SMs; K = {args.phases} phases; graph replay µs (median / p99)")
    print(f"{'P':>5} {'S':>3} {'separate':>16} {'persistent':>16} {'per phase sep/pers':>20} {'saved':>8}  correct")
    for n_prog in programs:
        for n_steps in args.steps or [0, 4, 8]:
            nxt, state, counter = buffers(n_prog, args.phases, "cuda")
            sep = time_graph(lambda: run_separate(nxt, state, n_prog, args.phases, n_steps), args.replays)
            ok_sep = correct(state)
            per = time_graph(lambda: run_persistent(nxt, state, counter, n_prog, args.phases, n_steps), args.replays)
            ok_per = correct(state)
            rows.append({"programs": n_prog, "steps": n_steps, "phases": args.phases, "separate_us": sep,
                         "persistent_us": per, "correct_separate": ok_sep, "correct_persistent": ok_per})
            print(f"{n_prog:>5} {n_steps:>3} {sep[0]:>8.1f}/{sep[1]:<7.1f} {per[0]:>8.1f}/{per[1]:<7.1f} "
                  f"{sep[0] / args.phases:>9.2f}/{per[0] / args.phases:<10.2f} {sep[0] - per[0]:>8.1f}  "
                  f"{ok_sep and ok_per}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "sms": sms, "rows": rows}, f, indent=1)
    return 0 if all(r["correct_separate"] and r["correct_persistent"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

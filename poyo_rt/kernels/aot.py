"""Compile the Triton kernels for a GPU that is not here: ahead of time, for sm_90 (H100/H200) by default,
with the ptxas Triton bundles, to check that they build and to read their registers and spills.

Triton's interpreter (``TRITON_INTERPRET=1``) checks what the kernels compute but not whether they compile:
block shapes, ``tl.dot`` operand sizes, float64 trigonometry through libdevice and register pressure are
only seen by the real compiler. Two phases, because a process either interprets kernels or compiles them:

1. :func:`record_launches` (in an interpreting process): run :class:`~poyo_rt.kernels.TritonPOYO` once and
   record every kernel launch's argument types, constexpr values and launch options;
2. :func:`compile_launches` (in a process without the interpreter: ``python -m poyo_rt.kernels.aot FILE``,
   which :func:`check` starts): compile each distinct launch to a cubin, parse ptxas's report and count the
   machine code (SASS, from the bundled ``cuobjdump``): instructions and loops. A kernel of these sizes runs
   one or two programs an SM, one warp a scheduler, so its time follows the instructions each thread runs and
   their chains; in a loop-free kernel the count is what runs.

    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --config poyo_1.3M    # both phases, prints a table
    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --config poyo_1.3M --residuals both
    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --config poyo_1.3M --unroll    # TritonPOYO(unroll=True) too
    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --config poyo_1.3M --loops     # each loop's body size
    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --tuning '{"unroll": true, "precision": "tf32x3i"}'
    TRITON_INTERPRET=1 python -m poyo_rt.kernels.aot --unroll --compiler-path DIR   # DIR's triton compiles
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["record_launches", "compile_launches", "check"]

_TORCH_TYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.int64: "i64", torch.int32: "i32", torch.int8: "i8", torch.bool: "i1"}
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas")


def _arg_record(value: Any) -> dict:
    """A launch argument as ``{"type": Triton signature type, "value": the value}`` (tensors: no value);
    phase 2 uses the value where the parameter is a constexpr, the type elsewhere."""
    if isinstance(value, torch.Tensor):
        return {"type": "*" + _TORCH_TYPES[value.dtype], "value": None}
    if isinstance(value, bool):
        return {"type": "i1", "value": value}
    if isinstance(value, int):
        return {"type": "i32" if -2**31 <= value < 2**31 else "i64", "value": value}
    if isinstance(value, float):
        return {"type": "fp32", "value": value}
    return {"type": None, "value": value}


def record_launches(fused, packed: torch.Tensor, residuals: tuple[str, ...] = ("auto",),
                    tunings: tuple[dict, ...] = ({},)) -> list[dict]:
    """Kernel launches of one ``TritonPOYO(fused, residuals=r, **t)(packed)`` call for each residual layout
    ``r`` and tuning ``t`` (keyword arguments of :class:`TritonPOYO`), distinct ones only: ``{"kernel": name, "args": {param: {"type", "value"}}, "options": {...}, "grid":
    [...]}``. Needs TRITON_INTERPRET=1."""
    from poyo_rt.kernels import triton_poyo

    launches: dict[str, dict] = {}
    originals = {name: obj for name, obj in vars(triton_poyo).items() if name.endswith("_kernel")}

    class Recorder:
        def __init__(self, name: str, kernel: Any):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid: tuple):
            def launch(*args: Any, **kwargs: Any) -> Any:
                options = {k: kwargs.pop(k) for k in _LAUNCH_OPTIONS if k in kwargs}
                bound = inspect.signature(self.kernel.fn).bind(*args, **kwargs)
                record = {"kernel": self.name, "args": {k: _arg_record(v) for k, v in bound.arguments.items()},
                          "options": options, "grid": [int(g) for g in grid]}
                key = json.dumps({k: record[k] for k in ("kernel", "args", "options")}, sort_keys=True)
                launches.setdefault(key, record)
                return self.kernel[grid](*args, **kwargs, **options)

            return launch

    try:
        for name, kernel in originals.items():
            setattr(triton_poyo, name, Recorder(name, kernel))
        with torch.inference_mode():
            for layout in residuals:
                for tuning in tunings:
                    triton_poyo.TritonPOYO(fused, residuals=layout, **tuning)(packed)
    finally:
        for name, kernel in originals.items():
            setattr(triton_poyo, name, kernel)
    return list(launches.values())


def _ptxas_report(ptx: str, arch: int, kernel: str) -> dict:
    """Registers, spill stores/loads and stack of ``kernel`` from ``ptxas -v``."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", str(src), "-o",
                              str(Path(tmp) / "k.cubin")], capture_output=True, text=True, check=True).stderr
    # ptxas prints "Function properties for NAME" then "... spill stores ..." and "Used N registers" per entry
    part = log[log.find(f"for {kernel}\n"):] if f"for {kernel}\n" in log else log
    spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", part)
    regs = re.search(r"Used (\d+) registers", part)
    return {"registers": int(regs.group(1)) if regs else None,
            "stack_bytes": int(spills.group(1)) if spills else 0,
            "spill_store_bytes": int(spills.group(2)) if spills else 0,
            "spill_load_bytes": int(spills.group(3)) if spills else 0}


def _sass_counts(cubin: bytes, arch: int) -> dict:
    """``{"instructions": N, "loops": L, "loop_bodies": [...]}`` of a cubin's machine code: its SASS
    instructions (the trailing self-branch and padding NOPs included), its backward branches (loops) and each
    loop's body in instructions, in address order (a body that lies inside another is a nested loop). What a
    thread runs is the count plus each body once per step beyond the first."""
    from triton.backends.nvidia.compiler import get_ptxas

    cuobjdump = Path(get_ptxas(arch).path).with_name("cuobjdump")  # bundled beside ptxas
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([str(cuobjdump), "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    # lines "        /*01a0*/   @!P0 BRA 0x120 ;   /* 0x... */": address, optional predicate, opcode, operands
    code = re.findall(r"^\s+/\*([0-9a-f]+)\*/\s+(.*?);", sass, flags=re.M)
    targets = ((int(addr, 16), re.search(r"\bBRA\s+0x([0-9a-f]+)", text)) for addr, text in code)
    bodies = sorted((int(bra.group(1), 16), addr) for addr, bra in targets
                    if bra and addr - 16 > int(bra.group(1), 16))  # not the self-branch
    return {"instructions": len(code), "loops": len(bodies),
            "loop_bodies": [(end - start) // 16 + 1 for start, end in bodies]}  # 16 bytes an instruction


def compile_launches(launches: list[dict], arch: int = 90) -> list[dict]:
    """Compile each recorded launch for ``sm_{arch}``; returns the launches with ``"ok"``, ``"error"`` and,
    when compiled, ptxas's resource report, the shared memory Triton reserved and the machine code's size
    (:func:`_sass_counts`). Needs the interpreter off."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compile_launches needs TRITON_INTERPRET unset (a process that compiles kernels)")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from poyo_rt.kernels import triton_poyo

    reports = []
    for launch in launches:
        kernel = getattr(triton_poyo, launch["kernel"])
        signature, constexprs = {}, {}
        for param in kernel.params:
            arg = launch["args"][param.name]
            if param.is_constexpr:
                signature[param.name], constexprs[param.name] = "constexpr", arg["value"]
            else:
                signature[param.name] = arg["type"]
        report = dict(launch)
        try:
            compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                                      target=GPUTarget("cuda", arch, 32), options=launch["options"] or None)
            report.update(ok=True, error=None, triton=triton.__version__, shared_bytes=compiled.metadata.shared,
                          num_warps=compiled.metadata.num_warps,
                          **_ptxas_report(compiled.asm["ptx"], arch, compiled.metadata.name),
                          **_sass_counts(compiled.asm["cubin"], arch))
        except Exception as exc:  # a kernel that does not build is the finding, not a crash of the check
            report.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:2000]}")
        reports.append(report)
    return reports


def compile_env() -> dict[str, str]:
    """This process's environment for a child that compiles kernels: the interpreter off, Triton's default FP
    fusion stated (triton 3.9 warns when it is unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


def check(fused, packed: torch.Tensor, arch: int = 90, timeout_s: float = 600.0,
          residuals: tuple[str, ...] = ("auto",), tunings: tuple[dict, ...] = ({},),
          kernels: tuple[str, ...] = (), compiler_path: str | None = None) -> list[dict]:
    """Both phases: record here (interpreting), compile in a child process (not interpreting); ``kernels``:
    compile only the launches of these kernels (default: all); ``compiler_path``: a directory put first on the
    child's ``PYTHONPATH``, whose Triton then compiles (e.g. the device's version, installed with ``pip install
    --target DIR triton==3.6.0``; each report's ``"triton"`` says which compiled it)."""
    launches = record_launches(fused, packed, residuals, tunings)
    if kernels:
        launches = [launch for launch in launches if launch["kernel"] in kernels]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "launches.json"
        path.write_text(json.dumps(launches))
        env = compile_env()
        if compiler_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (compiler_path, env.get("PYTHONPATH")) if p)
        out = subprocess.run([sys.executable, "-m", "poyo_rt.kernels.aot", "--compile", str(path), "--arch",
                              str(arch)], capture_output=True, text=True, env=env, timeout=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(f"compiling the kernels failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout)


def _tuning_label(args: dict) -> str:
    """The launch's TritonPOYO options beyond the defaults (unroll, precision, swap_pairs), or ``-``."""
    value = lambda name: args.get(name, {}).get("value")  # noqa: E731
    words = (["unroll"] if value("UNROLL") else []) + ([value("PRECISION")] if value("PRECISION") not in
                                                      (None, "tf32x3") else []) + (["swap"] if value("SWAP") else [])
    return " ".join(words) or "-"


def format_reports(reports: list[dict], loop_bodies: bool = False) -> str:
    """A table of :func:`compile_launches`'s reports, a line a launch; ``loop_bodies``: each loop's body size
    after the status."""
    lines = [f"{'kernel':<28} {'grid':<16} {'tuning':>20} {'warps':>5} {'regs':>5} {'spill st/ld B':>14} "
             f"{'stack B':>8} {'shared B':>9} {'instr':>6} {'loops':>5}  status"]
    for r in reports:
        grid = "x".join(str(g) for g in r["grid"])
        tuning = _tuning_label(r["args"])
        if r["ok"]:
            lines.append(f"{r['kernel']:<28} {grid:<16} {tuning:>20} {r['num_warps']:>5} {r['registers']:>5} "
                         f"{r['spill_store_bytes']:>6}/{r['spill_load_bytes']:<7} {r['stack_bytes']:>8} "
                         f"{r['shared_bytes']:>9} {r['instructions']:>6} {r['loops']:>5}  ok"
                         + (f"  bodies {r['loop_bodies']}" if loop_bodies and r["loop_bodies"] else ""))
        else:
            lines.append(f"{r['kernel']:<28} {grid:<16} {tuning:>20} {'':>5} {'':>5} {'':>14} {'':>8} {'':>9} "
                         f"{'':>6} {'':>5}  {r['error'][:200]}")
    return "\n".join(lines)


def _tuning_arg(text: str) -> dict:
    """``--tuning``'s JSON object of TritonPOYO keyword arguments."""
    try:
        tuning = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--tuning {text!r}: not JSON ({err})") from None
    if not isinstance(tuning, dict):
        raise argparse.ArgumentTypeError(f"--tuning {text!r}: expected a JSON object, e.g. '{{\"unroll\": true}}'")
    return tuning


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="poyo_1.3M", help="bench config (poyo_rt.bench.forward.BENCH_CONFIGS)")
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    ap.add_argument("--residuals", choices=("auto", "split", "summed", "both"), default="auto",
                    help="residual layout(s) of TritonPOYO to compile (default: the one it picks for the config)")
    ap.add_argument("--unroll", action="store_true",
                    help="compile TritonPOYO(unroll=True)'s launches too, beside the default's")
    ap.add_argument("--tuning", action="append", type=_tuning_arg, metavar="JSON", default=[],
                    help="TritonPOYO keyword arguments as a JSON object, compiled beside the default's (repeatable)")
    ap.add_argument("--compiler-path", metavar="DIR",
                    help="compile with the Triton installed in DIR (pip install --target DIR triton==VERSION)")
    ap.add_argument("--loops", action="store_true",
                    help="print each loop's body size (instructions), to estimate what a thread runs in looped code")
    ap.add_argument("--compile", metavar="LAUNCHES_JSON", help=argparse.SUPPRESS)  # phase 2 (child process)
    args = ap.parse_args(argv)
    if args.compile:
        print(json.dumps(compile_launches(json.loads(Path(args.compile).read_text()), args.arch)))
        return 0
    if os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("run with TRITON_INTERPRET=1 (the launches are recorded by interpreting the kernels once)")
    from poyo_rt.bench.forward import BENCH_CONFIGS, bench_inputs, build_model, fused_inputs
    from poyo_rt.model.fused import FusedPOYO

    model = build_model(BENCH_CONFIGS[args.config], n_units=100)
    fused = FusedPOYO(model, n_output=1)
    packed = fused_inputs(fused, bench_inputs(model, n_spikes=2000, device=torch.device("cpu")))
    layouts = ("split", "summed") if args.residuals == "both" else (args.residuals,)
    tunings = ({}, *([{"unroll": True}] if args.unroll else []), *args.tuning)
    reports = check(fused, packed, arch=args.arch, residuals=layouts, tunings=tunings,
                    compiler_path=args.compiler_path)
    versions = sorted({r["triton"] for r in reports if r["ok"]})
    print(f"{args.config}: {len(reports)} distinct kernel launches compiled for sm_{args.arch} "
          f"by triton {', '.join(versions) or '(none compiled)'}")
    print(format_reports(reports, loop_bodies=args.loops))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

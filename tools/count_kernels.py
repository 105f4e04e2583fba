#!/usr/bin/env python3
"""How many kernels one forward launches: the number that sets a CUDA graph's replay time for small models
(each node costs 1-3 µs on an H100/H200 whatever it computes), counted on the CPU.

For each bench config (batch 1, 100 units, 2,000 spikes): the aten operators that compute something
(views excluded) of torch_brain's forward, poyo_rt's exact forward and the fused forward (eager, as the
CUDA graph captures it), and the launches of the fused forward compiled by inductor (its generated
kernels plus the matmul and attention calls it leaves to libraries), and the launches of the fused
forward's Triton kernels (poyo_rt/kernels). On a CUDA machine the GPU kernels of
the same calls are counted with the profiler instead (`poyo-rt bench forward --device cuda` prints them too).

    python tools/count_kernels.py
    python tools/count_kernels.py --config poyo_1.3M --no-compile
"""

from __future__ import annotations

import argparse
import re

import torch

from poyo_rt.bench.common import count_cuda_kernels, count_kernel_ops
from poyo_rt.bench.forward import (BENCH_CONFIGS, bench_inputs, build_model, fused_inputs, torch_brain_kwargs,
                                   torch_brain_twin)
from poyo_rt.model.fused import FusedPOYO
from poyo_rt.model.static import static_forward


def inductor_launches(module: torch.nn.Module, packed: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Launches in the code inductor generates for ``module(packed)``: (total, by kind)."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    with torch.inference_mode():
        _, codes = run_and_get_code(compiled, packed)
    call = "\n".join(c[c.index("def call("):] for c in codes if "def call(" in c)
    kinds = {
        "generated": len(re.findall(r"^\s+(?:cpp_fused_|triton_)\w+(?:\.run)?\(", call, re.M)),
        "matmul": len(re.findall(r"^\s+extern_kernels\.(?:mm|addmm|bmm|baddbmm)\(", call, re.M)),
        "aten": len(re.findall(r"^\s+buf\w+ = torch\.ops\.aten\.\w+", call, re.M)),
    }
    return sum(kinds.values()), kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", choices=sorted(BENCH_CONFIGS), help="default: all")
    ap.add_argument("--no-compile", action="store_true", help="skip the inductor count (compiling takes ~15 s)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = ((lambda fn: count_cuda_kernels(fn)) if device.type == "cuda"
             else (lambda fn: sum(count_kernel_ops(fn).values())))
    unit = "GPU kernels" if device.type == "cuda" else "aten operators"
    for name in args.config or list(BENCH_CONFIGS):
        model = build_model(BENCH_CONFIGS[name], n_units=100).to(device)
        buf = bench_inputs(model, n_spikes=2000, device=device)
        fused = FusedPOYO(model, n_output=1)
        packed = fused_inputs(fused, buf)
        twin = torch_brain_twin(model)
        rows = {}
        with torch.inference_mode():
            if twin is not None:
                twin, kw = twin.to(device), torch_brain_kwargs(buf.as_kwargs())
                rows["torch_brain eager"] = count(lambda: twin(**kw))
            rows["poyo_rt exact"] = count(lambda: static_forward(model, buf))
            rows["poyo_rt fused"] = count(lambda: fused(packed))
        print(f"{name} ({unit} a forward, {device.type}):")
        for label, n in rows.items():
            print(f"  {label:<24} {n:>5}")
        try:
            from poyo_rt.kernels import launches_per_forward

            print(f"  {'fused, Triton kernels':<24} {launches_per_forward(fused):>5}  launches (poyo_rt/kernels)")
        except ImportError as exc:
            print(f"  fused, Triton kernels: {exc}")
        if not args.no_compile:
            real = FusedPOYO(model, n_output=1, complex_rotation=False)
            total, kinds = inductor_launches(real, packed)
            detail = ", ".join(f"{v} {k}" for k, v in kinds.items())
            print(f"  {'fused, inductor':<24} {total:>5}  launches ({detail})")


if __name__ == "__main__":
    main()

"""Triton kernels of the real-time forward (GPU; on the CPU only under ``TRITON_INTERPRET=1``).

Importing this package needs no Triton; the forward is imported on first use::

    from poyo_rt.kernels import TritonPOYO   # raises ImportError naming ``pip install triton`` without it
"""

from __future__ import annotations

from typing import Any

__all__ = ["TritonPOYO", "triton_forward", "launches_per_forward"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise ImportError("the Triton forward needs Triton: pip install triton") from exc
    from poyo_rt.kernels import triton_poyo

    return getattr(triton_poyo, name)

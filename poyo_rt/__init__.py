"""poyo-rt: a real-time streaming POYO decoder.

Data flow (one module per stage)::

    stream/lsl/ -> stream/buffer.py -> stream/tokenizer.py -> runtime/runner.py
        -> stream/publisher.py, with runtime/engine.py driving the tick loop and
        runtime/metrics.py timing every stage.

The POYO model itself lives in :mod:`poyo_rt.model` and is state-dict compatible
with ``torch_brain``'s POYO.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""A doorbell for CUDA graphs launched before their input is ready (``Runner(warm="launch")``).

On the GPU path the host's Python at the tick costs more than the GPU's work: queueing a graph's replay took
~259 µs at 50 Hz on the H200 host (its code is cold after the loop's idle period), and the GPU waited for it.
Launching the tick's graph ~1 ms early, at the engine's pre-tick, moves that off the tick; but the graph must
not read the staging buffer before the tick has packed its final window into it. So every graph begins with
:func:`_doorbell_kernel`, one program that spins until the host rings:

* ``bell`` is one int64 in pinned host memory, which the GPU reads through the mapping that unified virtual
  addressing gives every pinned allocation (the same pointer on both sides). The host rings by adding 1.
* ``served`` is one int64 in device memory: the rings the kernel has answered. A waiting kernel passes once
  ``bell > served`` and then adds 1 to ``served``, so each ring releases exactly one launch, whatever the order
  of rings and launches (a ring before the launch is kept, not lost).
* The host writes the staging buffer before it rings (program order; x86-64 stores reach memory in that
  order, which is why the runner refuses other hosts), and the graph's copy of the staging buffer comes after
  the kernel in the stream, so the copy reads the final window.
* The host rings exactly once for every launch. A kernel whose ring never comes gives up after ``max_spins``
  reads of the bell (~1 µs each across PCIe: the default is ~10 s), counts it in ``timeouts`` (pinned host
  memory too, so the host reads it without waiting on the GPU) and lets the graph run. It still counts as
  served, so its late ring is absorbed and the next launch waits for its own: a lost ring cannot wedge the GPU
  for good, nor shift every later launch by one.

On the CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``), where a launch runs to its end
before returning: a test rings first, then launches.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

DEFAULT_MAX_SPINS = 10_000_000  # reads of the bell before a waiting kernel gives up (~10 s across PCIe)


@triton.jit
def _doorbell_kernel(bell_ptr, served_ptr, timeouts_ptr, max_spins):
    """Wait until ``*bell > *served``, then ``*served += 1``; after ``max_spins`` reads, ``*timeouts += 1``
    instead of waiting longer (and ``*served += 1`` all the same). Grid (1,)."""
    served = tl.load(served_ptr)
    rung = tl.load(bell_ptr, volatile=True)
    spins = 0
    while (rung <= served) & (spins < max_spins):
        rung = tl.load(bell_ptr, volatile=True)
        spins += 1
    tl.store(served_ptr, served + 1)
    if rung <= served:
        tl.store(timeouts_ptr, tl.load(timeouts_ptr) + 1)


class Doorbell:
    """The host's side: ``wait()`` queues the waiting kernel on the current stream (graphs capture it),
    ``ring()`` releases one waiting (or later) launch. ``bell``, ``served`` and ``timeouts`` are int64 tensors of
    shape (1,): the bell and the timeouts in pinned host memory when ``device`` is CUDA (plain memory otherwise:
    the interpreter), ``served`` on ``device``."""

    def __init__(self, device: str | torch.device, *, max_spins: int = DEFAULT_MAX_SPINS):
        device = torch.device(device)
        if max_spins < 1:
            raise ValueError(f"max_spins: expected >= 1 reads of the bell, got {max_spins}")
        self.max_spins = int(max_spins)
        self.bell = torch.zeros(1, dtype=torch.int64, pin_memory=device.type == "cuda")
        self._bell = self.bell.numpy()  # the host writes through numpy: no torch call at the tick
        self.served = torch.zeros(1, dtype=torch.int64, device=device)
        self.timeouts = torch.zeros(1, dtype=torch.int64, pin_memory=device.type == "cuda")
        self._timeouts = self.timeouts.numpy()
        self.rung = 0  #: rings so far (the bell's value)

    def wait(self) -> None:
        """Queue the waiting kernel (on the current stream; captured into a graph when capturing)."""
        _doorbell_kernel[(1,)](self.bell, self.served, self.timeouts, self.max_spins, num_warps=1)

    def ring(self) -> None:
        """Release one launch: the next kernel to wait (or the one waiting now)."""
        self.rung += 1
        self._bell[0] = self.rung

    def timeouts_seen(self) -> int:
        """Waits that gave up so far, as the GPU has written them (no call into CUDA)."""
        return int(self._timeouts[0])

"""Rolling spike store: a preallocated write-index ring of (time, unit) pairs.

Policy (what is accepted, what is dropped, and how it is counted)
-----------------------------------------------------------------
``append`` checks every spike and drops it, counting one reason in ``drops``, in this order:

- ``"nan_time"``: the time is NaN or +-inf.
- ``"unknown_unit"``: the unit index is negative or ``>= n_units``.
- ``"unmapped_unit"``: ``unit_map[unit] == -1`` (the unit is not in the model's vocabulary).
  The unit map is applied HERE and only here: a dropped unit never takes ring capacity, and
  every input drop sits in one counter. The stored unit stays the stream's own index; the
  tokenizer turns it into a vocabulary index.
- ``"out_of_order"``: the time is earlier than the newest accepted time (equal times are
  accepted: one chunk may carry one timestamp for all its spikes).

Every accepted spike gets the next sequence number (``seq``, 0, 1, 2, ...), so the
accepted times are non-decreasing in ``seq``. The ring keeps the newest ``capacity`` accepted
spikes (``oldest_seq`` .. ``next_seq - 1``). One consumer (the tokenizer) advances
``read_seq`` with :meth:`consume`. When an append overwrites spikes that were not consumed
yet (or a single chunk is larger than the ring), those spikes are counted in
``drops["overflow"]`` and ``read_seq`` jumps to ``oldest_seq``. Hence at any time::

    next_seq == consumed + drops["overflow"] + n_pending

so nothing accepted is lost without being counted. Consumed spikes are overwritten freely.

Costs: ``append`` is O(chunk), ``read``/``consume`` O(log(pending) + returned); the ring is
never rolled. One owner thread; no lock.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["SpikeBuffer", "DROP_REASONS"]

logger = logging.getLogger(__name__)

DROP_REASONS: tuple[str, ...] = ("nan_time", "unknown_unit", "unmapped_unit", "out_of_order", "overflow")

_EMPTY_T = np.empty(0, dtype=np.float64)
_EMPTY_U = np.empty(0, dtype=np.int64)
_EMPTY_T.flags.writeable = False
_EMPTY_U.flags.writeable = False


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class SpikeBuffer:
    """Ring of the newest ``capacity`` accepted spikes of one stream.

    Args:
        capacity: number of spikes kept (the ring length).
        n_units: number of units in the stream; valid unit indices are ``[0, n_units)``.
        unit_map: optional ``(n_units,)`` int array, stream unit -> model vocabulary index,
            ``-1`` = drop the unit (counted as ``"unmapped_unit"``). Only its ``-1`` entries
            matter here; the tokenizer takes the same array as ``unit_vocab_index``.
    """

    def __init__(self, capacity: int, n_units: int, unit_map: np.ndarray | None = None):
        self.capacity = _positive_int("capacity", capacity)
        self.n_units = _positive_int("n_units", n_units)
        self.unit_map: np.ndarray | None = None
        self._unit_ok: np.ndarray | None = None
        if unit_map is not None:
            umap = np.asarray(unit_map)
            if umap.shape != (self.n_units,) or not np.issubdtype(umap.dtype, np.integer):
                raise ValueError(
                    f"unit_map must be an int array of shape ({self.n_units},), "
                    f"got {umap.dtype} {umap.shape}"
                )
            if np.any(umap < -1):
                raise ValueError(f"unit_map entries must be >= -1, got min {int(umap.min())}")
            self.unit_map = umap.astype(np.int64, copy=True)
            self.unit_map.flags.writeable = False
            self._unit_ok = self.unit_map >= 0
        self._times = np.zeros(self.capacity, dtype=np.float64)  # (capacity,) LSL seconds
        self._units = np.zeros(self.capacity, dtype=np.int64)  # (capacity,) stream unit index
        self._times_ro = self._times.view()  # read-only views: slices handed out stay read-only
        self._units_ro = self._units.view()
        self._times_ro.flags.writeable = False
        self._units_ro.flags.writeable = False
        self.drops: dict[str, int] = {reason: 0 for reason in DROP_REASONS}
        self.next_seq = 0  # seq of the next accepted spike == total accepted
        self.read_seq = 0  # first spike not consumed yet
        self.last_time_s = -np.inf  # newest accepted time, LSL seconds

    # ------------------------------------------------------------------ state
    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest spike still in the ring."""
        return max(0, self.next_seq - self.capacity)

    @property
    def n_pending(self) -> int:
        """Accepted spikes not consumed yet."""
        return self.next_seq - self.read_seq

    # ----------------------------------------------------------------- append
    def append(self, times_s: np.ndarray, units: np.ndarray) -> int:
        """Validate and store one chunk; return how many spikes were accepted.

        Args:
            times_s: ``(n,)`` spike times, LSL clock seconds (cast to float64).
            units: ``(n,)`` integer stream unit indices.
        """
        times = np.asarray(times_s, dtype=np.float64)
        unit_arr = np.asarray(units)
        if times.ndim != 1:
            raise ValueError(f"times_s must be 1-D, got shape {times.shape}")
        if unit_arr.shape != times.shape:
            raise ValueError(f"units must have the shape of times_s {times.shape}, got {unit_arr.shape}")
        n = times.shape[0]
        if n == 0:
            return 0
        if not np.issubdtype(unit_arr.dtype, np.integer):
            raise TypeError(f"units must be an integer array, got dtype {unit_arr.dtype}")

        keep = np.isfinite(times)
        n_bad = n - int(np.count_nonzero(keep))
        if n_bad:
            self.drops["nan_time"] += n_bad
        in_range = (unit_arr >= 0) & (unit_arr < self.n_units)
        bad_unit = keep & ~in_range
        n_bad = int(np.count_nonzero(bad_unit))
        if n_bad:
            self.drops["unknown_unit"] += n_bad
            keep &= in_range
        if self._unit_ok is not None:
            mapped = np.zeros(n, dtype=bool)
            mapped[keep] = self._unit_ok[unit_arr[keep]]
            n_bad = int(np.count_nonzero(keep)) - int(np.count_nonzero(mapped))
            if n_bad:
                self.drops["unmapped_unit"] += n_bad
            keep = mapped
        if not keep.all():
            times = times[keep]
            unit_arr = unit_arr[keep]
        if times.shape[0] == 0:
            return 0

        # out_of_order: earlier than the newest accepted time (the running max of kept spikes)
        if times[0] < self.last_time_s or (times.shape[0] > 1 and np.any(times[1:] < times[:-1])):
            prefix_max = np.maximum.accumulate(np.concatenate(([self.last_time_s], times)))
            in_order = times >= prefix_max[:-1]  # prefix_max[i] = max(last, times[:i])
            self.drops["out_of_order"] += times.shape[0] - int(np.count_nonzero(in_order))
            times = times[in_order]
            unit_arr = unit_arr[in_order]
        n_acc = times.shape[0]
        if n_acc == 0:
            return 0
        self._write(times, unit_arr)
        return n_acc

    def _write(self, times: np.ndarray, units: np.ndarray) -> None:
        """Write validated spikes at the write index (two slices at the wrap), count overflow."""
        n = times.shape[0]
        cap = self.capacity
        new_next = self.next_seq + n
        if n > cap:  # only the newest `cap` of this chunk can be kept
            times = times[n - cap :]
            units = units[n - cap :]
        start = (new_next - times.shape[0]) % cap
        first = min(times.shape[0], cap - start)
        self._times[start : start + first] = times[:first]
        self._units[start : start + first] = units[:first]
        if first < times.shape[0]:
            self._times[: times.shape[0] - first] = times[first:]
            self._units[: times.shape[0] - first] = units[first:]
        self.next_seq = new_next
        self.last_time_s = float(times[-1])
        lost = self.oldest_seq - self.read_seq
        if lost > 0:
            self.drops["overflow"] += lost
            self.read_seq = self.oldest_seq
            logger.debug("spike buffer overflow: %d unread spikes overwritten", lost)

    # ------------------------------------------------------------------- read
    def _check_seq(self, name: str, seq: int) -> int:
        seq = int(seq)
        if seq < 0 or seq > self.next_seq:
            raise ValueError(f"{name} must be in [0, next_seq={self.next_seq}], got {seq}")
        return seq

    def seq_before_time(self, t_s: float, since_seq: int) -> int:
        """First seq ``>= since_seq`` (clipped to ``oldest_seq``) whose time is ``>= t_s``.

        O(log n): accepted times are non-decreasing in seq. Returns ``next_seq`` if none.
        """
        lo = max(self._check_seq("since_seq", since_seq), self.oldest_seq)
        hi = self.next_seq
        if lo == hi:
            return hi
        cap = self.capacity
        p0 = lo % cap
        seg1 = min(hi - lo, cap - p0)
        k = int(self._times[p0 : p0 + seg1].searchsorted(t_s, side="left"))
        if k == seg1 and seg1 < hi - lo:
            k += int(self._times[: hi - lo - seg1].searchsorted(t_s, side="left"))
        return lo + k

    def read(self, since_seq: int, stop_seq: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Spikes with seq in ``[max(since_seq, oldest_seq), stop_seq)``.

        Returns ``(times_s (n,) float64, units (n,) int64, first_seq)``; ``first_seq - since_seq``
        spikes were overwritten before this read. The arrays are read-only VIEWS of the ring when
        the range does not wrap (a copy of n spikes when it does); a view is valid until the next
        :meth:`append` overwrites it, so copy what you keep. O(returned spikes).
        """
        lo = max(self._check_seq("since_seq", since_seq), self.oldest_seq)
        hi = self.next_seq if stop_seq is None else self._check_seq("stop_seq", stop_seq)
        if hi <= lo:
            return _EMPTY_T, _EMPTY_U, lo
        cap = self.capacity
        p0 = lo % cap
        n = hi - lo
        if p0 + n <= cap:
            return self._times_ro[p0 : p0 + n], self._units_ro[p0 : p0 + n], lo
        first = cap - p0
        t = np.concatenate((self._times[p0:], self._times[: n - first]))
        u = np.concatenate((self._units[p0:], self._units[: n - first]))
        return t, u, lo

    def consume(self, t_before_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Take every pending spike with time ``< t_before_s`` and advance ``read_seq``.

        Spikes at or after ``t_before_s`` stay pending. Returns ``(times_s (n,), units (n,))`` as
        :meth:`read` does (views valid until the next append).
        """
        stop = self.seq_before_time(t_before_s, self.read_seq)
        times, units, _ = self.read(self.read_seq, stop)
        self.read_seq = stop
        return times, units

    def __repr__(self) -> str:
        return (
            f"SpikeBuffer(capacity={self.capacity}, n_units={self.n_units}, next_seq={self.next_seq}, "
            f"read_seq={self.read_seq}, drops={self.drops})"
        )

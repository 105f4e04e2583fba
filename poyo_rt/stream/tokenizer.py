"""Incremental POYO window tokenizer: static padded arrays, work per tick O(spikes in + out).

Each tick decodes the window ``[t_end - window_s, t_end)`` and must feed the model exactly what
offline tokenization (:mod:`poyo_rt.model.tokens`, as torch_brain's ``POYO.tokenize``) gives for
that window, as a SET of tokens: the model is a set encoder and its rotary attention only sees
time differences, so token order is free and all times may share any origin.

Layout of the input arrays, shape ``(1, N_in)``, ``N_in = 2U + max_spikes`` rounded up to 8
(U = units mapped to the vocabulary, i.e. ``unit_vocab_index >= 0``):

- slots ``[0, 2U)``: START (type 1) and END (type 2) token of each unit, ``[u0 s, u0 e, u1 s, ...]``;
  unit, type and mask fixed; their two times are rewritten every tick (O(U), independent of spikes).
- slots ``[2U, 2U + n_live)``: the spike tokens of the window (type 0), kept COMPACT so that the
  runner can pick the smallest padding bucket ``>= 2U + n_live`` (:func:`bucket_for`).
  New spikes are written at the end; expired spikes are swap-removed in one vectorised batch
  (the live tokens at the end move into the freed slots): O(expired). Slot <-> age back-pointers
  (``_slot_pos``, ``_fifo_slot``) find the oldest spikes' slots, since expiry is in time order.
- slots ``[2U + n_live, N_in)``: mask False; their values are stale and never matter.

Times: spike times are stored once, as ``t_lsl - origin`` (float64). START/END, latent and output
times are written each tick as ``(window_start - origin) + offset``. Expiry and the ``t < t_end``
cut compare ABSOLUTE LSL times (kept in the age ring ``_fifo_t``), with the same float64
``window_start = t_end - window_s`` the offline path uses, so membership is bit-for-bit the
offline one. The origin is moved to the window start when ``t_end - origin > rebase_horizon_s``
(default 60 s: once every ~2,950 ticks at 50 Hz with a 1 s window), then the live spike times are
recomputed from the absolute times: O(live), with no accumulated rounding. Every model time lies
in ``[0, rebase_horizon_s]``, so each is one float64 rounding from exact (<= half an ulp of the
horizon: 7.1e-15 s at 60 s), and ``time - (window_start - origin)`` is within ~3e-14 s of the
offline ``t - window_start``. Keep the times float64 up to the rotary angles (float32 steps by 3.8 us
at 60 s).

Overflow: when the window holds more than ``max_spikes`` spikes, the OLDEST are dropped (counted
in ``counters["token_overflow"]``, flagged on the tick). Spikes consumed from the buffer that are
already older than the window start (late arrivals, start-up backlog, a stream gap) are counted
in ``counters["stale_spike"]`` and skipped: offline tokenization of this window would not hold
them either.
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import NamedTuple, Sequence

import numpy as np

from poyo_rt.model.tokens import TokenType, create_linspace_latent_tokens, create_start_end_unit_tokens
from poyo_rt.stream.buffer import SpikeBuffer

__all__ = ["IncrementalTokenizer", "TickTokens", "WindowTimes", "bucket_for", "output_offsets"]

logger = logging.getLogger(__name__)

_SPIKE_TYPE = int(TokenType.DEFAULT)


# ------------------------------------------------------------------------ pure helpers
def round_up8(n: int) -> int:
    """Smallest multiple of 8 that is ``>= n``."""
    return -(-int(n) // 8) * 8


def bucket_for(n_tokens: int, buckets: Sequence[int]) -> tuple[int, bool]:
    """Smallest padding bucket ``>= n_tokens``.

    Args:
        n_tokens: number of real tokens (e.g. ``TickTokens.n_input_tokens``).
        buckets: ascending positive multiples of 8.
    Returns:
        ``(bucket, fits)``; when no bucket is large enough, ``(buckets[-1], False)``: the caller
        must then drop tokens or use a larger shape.
    """
    if len(buckets) == 0:
        raise ValueError("buckets must not be empty")
    prev = 0
    for b in buckets:
        if b <= prev or b % 8:
            raise ValueError(f"buckets must be ascending positive multiples of 8, got {list(buckets)}")
        prev = b
    i = bisect.bisect_left(buckets, n_tokens)
    if i == len(buckets):
        return int(buckets[-1]), False
    return int(buckets[i]), True


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def output_offsets(
    window_s: float, n_outputs: int, output_lag_s: float, output_spacing_s: float | None
) -> np.ndarray:
    """Window-relative output query times, seconds, ``(n_outputs,)`` float64.

    One output: ``window_s - output_lag_s``. Several: evenly spaced by ``output_spacing_s`` and
    ending there, ``window_s - output_lag_s - (n_outputs - 1 - i) * output_spacing_s``.
    """
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
    if not (0.0 <= output_lag_s < window_s):
        raise ValueError(f"output_lag_s must be in [0, window_s={window_s}), got {output_lag_s}")
    last = window_s - output_lag_s
    if n_outputs == 1:
        return np.array([last], dtype=np.float64)
    if output_spacing_s is None or not output_spacing_s > 0:
        raise ValueError(f"output_spacing_s must be > 0 when n_outputs > 1, got {output_spacing_s}")
    offs = last - output_spacing_s * np.arange(n_outputs - 1, -1, -1, dtype=np.float64)
    if offs[0] < 0:
        raise ValueError(
            f"outputs span {output_spacing_s * (n_outputs - 1)} s before t={last} s: "
            f"output_spacing_s={output_spacing_s} too large for window_s={window_s}"
        )
    return offs


class TickTokens(NamedTuple):
    """What one :meth:`IncrementalTokenizer.update` produced (the arrays are updated in place).

    Times ``t_end_s``, ``window_start_s``, ``origin_s``, ``newest_spike_s`` are LSL seconds; model
    times in the arrays are relative to ``origin_s``, so ``array_time - (window_start_s - origin_s)``
    is the offline window-relative time.
    """

    t_end_s: float
    window_start_s: float
    origin_s: float
    n_input_tokens: int  # 2U + n_spikes: real tokens, all in slots [0, n_input_tokens)
    n_spikes: int  # spike tokens in the window
    n_new: int  # spikes added this tick
    n_expired: int  # spikes that left the window this tick (not counting overflow)
    n_token_overflow: int  # oldest spikes dropped this tick because the window held > max_spikes
    n_stale: int  # consumed spikes already older than the window start, skipped
    newest_spike_s: float  # newest spike time in the window, NaN if the window has none
    rebased: bool  # the origin moved this tick

    @property
    def overflow(self) -> bool:
        return self.n_token_overflow > 0

    def after(self, earlier: "TickTokens") -> "TickTokens":
        """This update and an ``earlier`` one to the same ``t_end_s`` as one tick (the engine tokenizes
        early, then adds the spikes that came in meanwhile): counts summed, state from this one. The window
        and every count equal one update's, except that ``n_new`` also counts spikes that an overflow later
        in the same tick dropped again (one update never adds those)."""
        if earlier.t_end_s != self.t_end_s:
            raise ValueError(f"updates to different window ends: {earlier.t_end_s!r} and {self.t_end_s!r}")
        return self._replace(
            n_new=earlier.n_new + self.n_new, n_expired=earlier.n_expired + self.n_expired,
            n_token_overflow=earlier.n_token_overflow + self.n_token_overflow,
            n_stale=earlier.n_stale + self.n_stale, rebased=earlier.rebased or self.rebased,
        )


class WindowTimes(NamedTuple):
    """A window's model times, seconds relative to the tokenizer's origin
    (:meth:`IncrementalTokenizer.window_times_at`)."""

    latent_timestamps: np.ndarray  # (1, N_lat)
    start_s: float  # the START tokens' time: the window start
    end_s: float  # the END tokens' time: the window end


class IncrementalTokenizer:
    """Streaming POYO tokenizer for one session, batch 1 (see the module docstring).

    Args:
        window_s: window length, seconds (the model's ``sequence_length``).
        latent_step_s: latent step, seconds.
        num_latents_per_step: latents per step.
        unit_vocab_index: ``(U_stream,)`` int64, model vocabulary index of each stream unit
            (``model.unit_emb.tokenizer(unit_ids)``); ``-1`` = unit not decoded (no tokens at all).
            Spikes of such units must be dropped by the buffer: pass the same array as
            ``SpikeBuffer(unit_map=...)``.
        session_vocab_index: the session's vocabulary index.
        max_spikes: spike-token capacity of the window.
        n_outputs: output queries per tick; ``output_lag_s`` / ``output_spacing_s`` place them
            (see :func:`output_offsets`).
        rebase_horizon_s: move the time origin when ``t_end - origin`` exceeds this (seconds,
            ``>= 2 * window_s``).

    Arrays (numpy, updated in place, never reallocated: wrap once with ``torch.from_numpy``):
    ``input_unit_index`` int64 ``(1, N_in)``, ``input_timestamps`` float64 ``(1, N_in)``,
    ``input_token_type`` int64 ``(1, N_in)``, ``input_mask`` bool ``(1, N_in)``,
    ``latent_index`` int64 ``(1, N_lat)``, ``latent_timestamps`` float64 ``(1, N_lat)``,
    ``output_session_index`` int64 ``(1, N_out)``, ``output_timestamps`` float64 ``(1, N_out)``,
    ``output_mask`` bool ``(1, N_out)``.
    """

    def __init__(
        self,
        *,
        window_s: float,
        latent_step_s: float,
        num_latents_per_step: int,
        unit_vocab_index: np.ndarray,
        session_vocab_index: int,
        max_spikes: int,
        n_outputs: int = 1,
        output_lag_s: float = 0.0,
        output_spacing_s: float | None = None,
        rebase_horizon_s: float = 60.0,
    ):
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
        if not (isinstance(latent_step_s, (int, float)) and 0 < latent_step_s <= window_s):
            raise ValueError(f"latent_step_s must be in (0, window_s={window_s}], got {latent_step_s!r}")
        num_latents_per_step = _check_int("num_latents_per_step", num_latents_per_step, 1)
        max_spikes = _check_int("max_spikes", max_spikes, 1)
        session_vocab_index = _check_int("session_vocab_index", session_vocab_index, 0)
        if not (isinstance(rebase_horizon_s, (int, float)) and rebase_horizon_s >= 2 * window_s):
            raise ValueError(
                f"rebase_horizon_s must be >= 2 * window_s = {2 * window_s}, got {rebase_horizon_s!r}"
            )
        vocab = np.asarray(unit_vocab_index)
        if vocab.ndim != 1 or vocab.shape[0] == 0 or not np.issubdtype(vocab.dtype, np.integer):
            raise ValueError(
                f"unit_vocab_index must be a non-empty 1-D int array, got {vocab.dtype} {vocab.shape}"
            )
        if np.any(vocab < -1):
            raise ValueError(f"unit_vocab_index entries must be >= -1, got min {int(vocab.min())}")
        mapped = np.flatnonzero(vocab >= 0)
        if mapped.size == 0:
            raise ValueError("unit_vocab_index maps no unit (all -1)")

        self.window_s = float(window_s)
        self.latent_step_s = float(latent_step_s)
        self.num_latents_per_step = num_latents_per_step
        self.max_spikes = max_spikes
        self.rebase_horizon_s = float(rebase_horizon_s)
        self.unit_vocab_index = vocab.astype(np.int64, copy=True)
        self.unit_vocab_index.flags.writeable = False
        self.n_units = int(mapped.size)  # U: units with tokens
        n_se = 2 * self.n_units
        self.n_start_end = n_se
        self.n_in = round_up8(n_se + max_spikes)

        # ---- static arrays
        se_type, se_local, _ = create_start_end_unit_tokens(range(self.n_units), 0.0, self.window_s)
        self.input_unit_index = np.zeros((1, self.n_in), dtype=np.int64)
        self.input_timestamps = np.zeros((1, self.n_in), dtype=np.float64)
        self.input_token_type = np.full((1, self.n_in), int(TokenType.DEFAULT), dtype=np.int64)
        self.input_mask = np.zeros((1, self.n_in), dtype=bool)
        self.input_unit_index[0, :n_se] = self.unit_vocab_index[mapped][se_local]
        self.input_token_type[0, :n_se] = se_type
        self.input_mask[0, :n_se] = True

        lat_index, lat_offsets = create_linspace_latent_tokens(
            0.0, self.window_s, self.latent_step_s, num_latents_per_step
        )
        self._latent_offsets = lat_offsets.astype(np.float64)  # (N_lat,) window-relative seconds
        self.latent_index = lat_index.reshape(1, -1).astype(np.int64)
        self.latent_timestamps = self._latent_offsets.reshape(1, -1).copy()  # an empty window [0, window_s)

        self._output_offsets = output_offsets(self.window_s, n_outputs, float(output_lag_s), output_spacing_s)
        self.output_session_index = np.full((1, n_outputs), int(session_vocab_index), dtype=np.int64)
        self.output_timestamps = self._output_offsets.reshape(1, -1).astype(np.float64)
        self.output_mask = np.ones((1, n_outputs), dtype=bool)

        # ---- views used on the hot path
        self._ts = self.input_timestamps[0]
        self._se_start = self._ts[0:n_se:2]
        self._se_end = self._ts[1:n_se:2]
        self._sp_ts = self._ts[n_se : n_se + max_spikes]  # (C,) spike-slot times rel. origin
        self._se_end[:] = self.window_s  # before the first update: a well-formed empty window [0, window_s)
        self._sp_unit = self.input_unit_index[0, n_se : n_se + max_spikes]
        self._sp_type = self.input_token_type[0, n_se : n_se + max_spikes]
        self._sp_mask = self.input_mask[0, n_se : n_se + max_spikes]
        self._lat_ts = self.latent_timestamps[0]
        self._out_ts = self.output_timestamps[0]

        # ---- age ring (oldest first) and back-pointers; slot = index into the spike region
        cap = max_spikes
        self._fifo_t = np.zeros(cap, dtype=np.float64)  # absolute LSL time, by age position
        self._fifo_slot = np.zeros(cap, dtype=np.int64)  # age position -> slot
        self._slot_pos = np.zeros(cap, dtype=np.int64)  # slot -> age position
        self._dead = np.zeros(cap, dtype=bool)  # scratch for batch swap-remove
        self._arange = np.arange(2 * cap, dtype=np.int64)
        self._tail = 0  # age position of the oldest live spike
        self._n_live = 0

        self.counters: dict[str, int] = {"token_overflow": 0, "stale_spike": 0, "rebase": 0}
        self.origin_s = math.nan
        self.t_end_s = -math.inf
        self._checked_buffer: SpikeBuffer | None = None

    # ------------------------------------------------------------------ public
    @property
    def n_spikes(self) -> int:
        """Spike tokens in the current window."""
        return self._n_live

    def arrays(self) -> dict[str, np.ndarray]:
        """The static arrays by model keyword (same objects every call)."""
        return {
            "input_unit_index": self.input_unit_index,
            "input_timestamps": self.input_timestamps,
            "input_token_type": self.input_token_type,
            "input_mask": self.input_mask,
            "latent_index": self.latent_index,
            "latent_timestamps": self.latent_timestamps,
            "output_session_index": self.output_session_index,
            "output_timestamps": self.output_timestamps,
            "output_mask": self.output_mask,
        }

    def reset(self) -> None:
        """Forget every spike and the time origin (e.g. after the stream restarted)."""
        self._sp_mask[: self._n_live] = False
        self._n_live = 0
        self._tail = 0
        self.origin_s = math.nan
        self.t_end_s = -math.inf

    def update(self, t_end_s: float, buffer: SpikeBuffer) -> TickTokens:
        """Advance to the window ``[t_end_s - window_s, t_end_s)`` (LSL seconds).

        Consumes the buffer's pending spikes with ``t < t_end_s`` (later ones stay pending),
        expires spikes older than the window start, rewrites START/END, latent and output times.
        Raises ValueError if ``t_end_s`` is not finite or is earlier than the previous tick.
        """
        t_end = float(t_end_s)
        if not math.isfinite(t_end):
            raise ValueError(f"t_end_s must be finite, got {t_end_s!r}")
        if t_end < self.t_end_s:
            raise ValueError(f"t_end_s went backwards: {t_end!r} < previous {self.t_end_s!r}")
        if self._checked_buffer is not buffer:
            self._check_buffer(buffer)
        ws = t_end - self.window_s  # window start, the same float64 the offline path uses
        self.t_end_s = t_end

        # 1) expire spikes older than the window start (time order = age order; absolute times)
        n_expired = self._count_before(ws)
        if n_expired:
            self._remove_oldest(n_expired)
        rebased = False
        if not (t_end - self.origin_s <= self.rebase_horizon_s):  # also true when origin is NaN
            self._rebase(ws)  # O(live), after expiry so only survivors are recomputed
            rebased = True
        origin = self.origin_s

        # 2) take new spikes, skipping those already outside the window
        times, units = buffer.consume(t_end)
        n_stale = 0
        if times.shape[0] and times[0] < ws:
            n_stale = int(times.searchsorted(ws, side="left"))
            times = times[n_stale:]
            units = units[n_stale:]
            self.counters["stale_spike"] += n_stale
        n_new = times.shape[0]

        # 3) overflow: keep the newest max_spikes spikes of the window
        n_over = self._n_live + n_new - self.max_spikes
        if n_over > 0:
            drop_live = min(n_over, self._n_live)
            if drop_live:
                self._remove_oldest(drop_live)
            drop_new = n_over - drop_live
            if drop_new:
                times = times[drop_new:]
                units = units[drop_new:]
                n_new -= drop_new
            self.counters["token_overflow"] += n_over
            logger.debug("token overflow at t_end=%.6f: %d oldest spikes dropped", t_end, n_over)
        else:
            n_over = 0
        if n_new:
            self._append(times, units, origin)

        # 4) per-tick times: O(U + N_lat + N_out), independent of spikes
        ws_rel = ws - origin
        self._se_start.fill(ws_rel)
        self._se_end.fill(ws_rel + self.window_s)
        np.add(self._latent_offsets, ws_rel, out=self._lat_ts)
        np.add(self._output_offsets, ws_rel, out=self._out_ts)

        n_live = self._n_live
        newest = float(self._fifo_t[(self._tail + n_live - 1) % self.max_spikes]) if n_live else math.nan
        return TickTokens(  # positional: 3x cheaper than keywords on the hot path
            t_end, ws, origin, self.n_start_end + n_live, n_live,
            n_new, n_expired, n_over, n_stale, newest, rebased,
        )

    def window_times_at(self, t_end_s: float) -> "WindowTimes":
        """The times :meth:`update` will write for a window ending at ``t_end_s`` (LSL s) unless it moves the
        origin first, with the same float64 arithmetic, bit for bit: latent times and the START/END tokens'
        times. Lets a runner prepare the next tick's work ahead of it (NaN before the first tick)."""
        ws_rel = (float(t_end_s) - self.window_s) - self.origin_s
        return WindowTimes((self._latent_offsets + ws_rel)[None, :], ws_rel, ws_rel + self.window_s)

    # ----------------------------------------------------------------- private
    def _check_buffer(self, buffer: SpikeBuffer) -> None:
        """Once per buffer object: its units are ours and it drops our unmapped units."""
        if buffer.n_units != self.unit_vocab_index.shape[0]:
            raise ValueError(
                f"buffer.n_units={buffer.n_units} != len(unit_vocab_index)={self.unit_vocab_index.shape[0]}"
            )
        unmapped = self.unit_vocab_index < 0
        if unmapped.any():
            if buffer.unit_map is None or not np.array_equal(buffer.unit_map < 0, unmapped):
                raise ValueError(
                    "buffer.unit_map must drop exactly the units with unit_vocab_index == -1: "
                    "build SpikeBuffer(..., unit_map=unit_vocab_index)"
                )
        self._checked_buffer = buffer

    def _rebase(self, new_origin: float) -> None:
        """Move the origin to ``new_origin`` (LSL s) and recompute the live spike times: O(live)."""
        n = self._n_live
        if n:
            pos = self._slot_pos[:n]
            np.subtract(self._fifo_t[pos], new_origin, out=self._sp_ts[:n])
        if not math.isnan(self.origin_s):
            self.counters["rebase"] += 1
        self.origin_s = new_origin

    def _count_before(self, t_abs: float) -> int:
        """Live spikes with absolute time ``< t_abs`` (they are the oldest ones): O(log n)."""
        n = self._n_live
        if n == 0:
            return 0
        cap = self.max_spikes
        tail = self._tail
        seg1 = min(n, cap - tail)
        fifo = self._fifo_t
        if fifo[tail] >= t_abs:
            return 0
        k = int(fifo[tail : tail + seg1].searchsorted(t_abs, side="left"))
        if k == seg1 and seg1 < n:
            k += int(fifo[: n - seg1].searchsorted(t_abs, side="left"))
        return k

    def _remove_oldest(self, m: int) -> None:
        """Swap-remove the ``m`` oldest live spikes in one batch: O(m)."""
        n = self._n_live
        kept = n - m
        cap = self.max_spikes
        tail = self._tail
        if kept == 0:
            self._sp_mask[:n] = False
            self._tail = 0
            self._n_live = 0
            return
        if tail + m <= cap:
            dead_slots = self._fifo_slot[tail : tail + m]
        else:
            dead_slots = np.concatenate((self._fifo_slot[tail:], self._fifo_slot[: tail + m - cap]))
        dead = self._dead
        dead[dead_slots] = True
        tail_slots = self._arange[kept:n]
        movers = tail_slots[~dead[tail_slots]]  # live tokens at the end, to move down
        holes = dead_slots[dead_slots < kept]  # freed slots below the new end
        dead[dead_slots] = False
        if movers.shape[0]:
            self._sp_ts[holes] = self._sp_ts[movers]
            self._sp_unit[holes] = self._sp_unit[movers]  # types: both live spikes, already 0
            pos = self._slot_pos[movers]
            self._fifo_slot[pos] = holes
            self._slot_pos[holes] = pos
        self._sp_mask[kept:n] = False
        self._tail = (tail + m) % cap
        self._n_live = kept

    def _append(self, times: np.ndarray, units: np.ndarray, origin: float) -> None:
        """Write ``k`` new spikes (absolute LSL s, stream unit) at the end: O(k)."""
        k = times.shape[0]
        n = self._n_live
        cap = self.max_spikes
        np.subtract(times, origin, out=self._sp_ts[n : n + k])
        self._sp_unit[n : n + k] = self.unit_vocab_index[units]  # units are valid: the buffer checked
        self._sp_type[n : n + k] = _SPIKE_TYPE  # padding slots are never trusted
        self._sp_mask[n : n + k] = True
        head = (self._tail + n) % cap
        first = min(k, cap - head)
        slots = self._arange[n : n + k]
        self._fifo_t[head : head + first] = times[:first]
        self._fifo_slot[head : head + first] = slots[:first]
        self._slot_pos[n : n + first] = self._arange[head : head + first]
        if first < k:
            rest = k - first
            self._fifo_t[:rest] = times[first:]
            self._fifo_slot[:rest] = slots[first:]
            self._slot_pos[n + first : n + k] = self._arange[:rest]
        self._n_live = n + k

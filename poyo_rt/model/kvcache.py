"""Encoder key/value cache: POYO's per-token encoder work done once per token, not once per tick.

In POYO's encoder cross-attention the latents attend to the input tokens through keys and values
that each depend on ONE token only::

    k_i, v_i = to_kv(LayerNorm(unit_emb[u_i] + token_type_emb[type_i])),  both rotated by time t_i

and the latents that query them are constant (``latent_emb`` of fixed indices), so are their
projected queries before rotation. Rotary attention sees only time differences, so with the times on
a shared origin (the incremental tokenizer keeps one for 60 s) a spike's rotated key and value stay
the same for as long as it is in the window. This cache therefore keeps, per input slot, the
rotated ``k`` and ``v`` of the token in that slot, and a table of the unrotated ``k, v`` per
(unit, token type), computed the first time a unit is seen.

Each tick :meth:`EncoderKVCache.update` compares every slot's (unit, type, time) with what the cache
holds (vectorised memory compares: a few µs for 2,200 slots) and recomputes only the slots that
differ: the new spikes, the slots the tokenizer refilled by swap-remove, the 2U start/end tokens
(their times move every tick) and, after an origin rebase (once a minute), all of them. A recompute
is a table gather and one complex multiply per pair of channels. :meth:`EncoderKVCache.forward`
then runs the attention over the cached keys/values and the rest of the model as the fused forward
runs it (:meth:`FusedPOYO.process_and_decode <poyo_rt.model.fused.FusedPOYO.process_and_decode>`:
constant latent rotation tables, one rotation of q, k and v together). What it skips each tick: the embedding gathers, the LayerNorm and
the ``to_kv`` projection of every token, and the rotation of every key and value.

**Ahead of the tick** (:meth:`EncoderKVCache.prepare`): with a fixed tick rate the next window's start and
end, and so its latent times, are known a tick ahead. ``prepare`` runs, in the idle part of the period, the
encoder attention of the next latents over the spikes already cached that will still be in the next window
and over the START/END tokens (advanced to the next window's times in their slots), and keeps its output
with its log-sum-exp. At the tick, :meth:`forward` matches the window's tokens against that set (a
prepared token still in its slot pairs with itself; one moved by swap-remove is found by key) and attends
only to the rest (the new spikes), then merges the two partial softmaxes (exact up to rounding). A mismatch
(other latent times, a rebase, a prepared spike gone by overflow) falls back to the whole attention;
``counters`` count both.

Correct by construction for any change of the arrays (the comparison, not the tokenizer's
bookkeeping, decides what is recomputed); equal to the exact forward up to float32 rounding
(``tests/test_kvcache.py``: <= 1e-5 over a stream with rebases, overflow and resets). Batch 1,
inference only; after the model's weights change, build a new cache.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from poyo_rt.model.fused import FusedPOYO
from poyo_rt.model.poyo import POYO
from poyo_rt.model.rotary import Rotation, apply_rotation
from poyo_rt.model.tokens import TokenType

__all__ = ["EncoderKVCache"]


class EncoderKVCache:
    """Per-slot rotated encoder keys/values for one stream of windows (batch 1).

    Args:
        model: the POYO, in eval mode (its weights are read at construction and when a new unit
            appears; do not train it while the cache is in use).
        capacity: input slots (the tokenizer's ``N_in``).
        latent_index: (N_lat,) or (1, N_lat) int, the latent indices every window uses
            (``model.latent_tokens()[0]``, the tokenizer's ``latent_index``).
    """

    def __init__(self, model: POYO, capacity: int, latent_index: np.ndarray | Tensor):
        if model.training:
            raise ValueError("EncoderKVCache needs the model in eval mode (call model.eval())")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.model = model
        enc = model.enc_atn
        self.heads = enc.heads
        self.inner = enc.to_kv.out_features // 2
        self.head_dim = self.inner // self.heads
        self.capacity = int(capacity)
        device = model.rotary_emb.omega.device
        self.device = device
        self.k = torch.zeros((1, self.heads, self.capacity, self.head_dim), device=device)  # rotated keys
        self.v = torch.zeros_like(self.k)  # values (rotated when enc_atn.rotate_value)
        # what each slot holds; time NaN = nothing yet (NaN never compares equal, so it is filled)
        self._unit = np.full(self.capacity, -1, dtype=np.int64)
        self._type = np.full(self.capacity, -1, dtype=np.int64)
        self._time = np.full(self.capacity, np.nan, dtype=np.float64)
        # unrotated (k, v) per (unit, token type): row of a unit in the table, -1 = not computed yet
        self._n_vocab = int(model.unit_emb.weight.shape[0])
        self._row_of_unit = np.full(self._n_vocab, -1, dtype=np.int64)
        self._n_types = int(model.token_type_emb.weight.shape[0])
        self._table = torch.empty((0, self._n_types, 2 * self.inner), device=device)
        self.n = 0  # real tokens of the current tick (slots [0, n))
        self.last_attended = 0  # input tokens the last forward attended at the tick (all n without a preparation)
        self._dirty = np.zeros(self.capacity, dtype=bool)  # slots rewritten since the last prepare
        self.counters = {"recomputed": 0, "ticks": 0, "prepared": 0, "prepared_used": 0}
        self._ahead: _Ahead | None = None  # the next tick's encoder attention over cached tokens (prepare)
        self._tail = FusedPOYO(model, n_output=1, encoder=False)  # processor + decoder, any N_out
        self._latent_t0 = float(model.latent_tokens()[1][0])  # first latent's time in a window starting at 0

        index = torch.as_tensor(np.asarray(latent_index), dtype=torch.long, device=device).reshape(1, -1)
        self.latent_index = index.cpu().numpy()[0]
        with torch.inference_mode():
            self._latents = model.latent_emb(index)  # (1, N_lat, dim), constant
            q = enc.to_q(enc.norm(self._latents))  # (1, N_lat, h*H)
            self._q = q.unflatten(-1, (self.heads, -1)).transpose(1, 2).contiguous()  # (1, h, N_lat, H)

    # ------------------------------------------------------------------ per tick
    def update(self, unit_index: np.ndarray, token_type: np.ndarray, timestamps: np.ndarray, n_tokens: int) -> int:
        """Bring slots ``[0, n_tokens)`` up to date with the input arrays; returns how many were recomputed.
        May run more than once before a :meth:`forward` (the engine's pre-tick updates with the spikes in so
        far, the tick with the rest: each slot is computed once).

        Args:
            unit_index, token_type: (N,) int64 (or (1, N)); timestamps: (N,) float64 seconds on the
                same origin as the latent/output times given to :meth:`forward`. Slots
                ``[0, n_tokens)`` must all be real tokens (the tokenizer keeps them compact).
        """
        if not 0 < n_tokens <= self.capacity:
            raise ValueError(f"n_tokens must be in [1, capacity={self.capacity}], got {n_tokens}")
        u = np.asarray(unit_index).reshape(-1)[:n_tokens]
        ty = np.asarray(token_type).reshape(-1)[:n_tokens]
        t = np.asarray(timestamps).reshape(-1)[:n_tokens]
        changed = t != self._time[:n_tokens]
        changed |= u != self._unit[:n_tokens]
        changed |= ty != self._type[:n_tokens]
        idx = np.flatnonzero(changed)
        if idx.shape[0]:
            self._fill(idx, u[idx], ty[idx], t[idx])
        self.n = int(n_tokens)
        self.counters["recomputed"] += int(idx.shape[0])
        return int(idx.shape[0])

    def forward(self, latent_timestamps: Tensor, output_session_index: Tensor, output_timestamps: Tensor) -> Tensor:
        """Decode the current tick: ``(1, N_out, D_out)``. Times (1, N_lat) / (1, N_out) seconds, same
        origin as the input times."""
        if self.n == 0:
            raise RuntimeError("EncoderKVCache.forward before update(): no input tokens")
        self.counters["ticks"] += 1
        with torch.inference_mode():
            return self._forward(latent_timestamps, output_session_index, output_timestamps)

    def prepare(self, latent_timestamps: Tensor | np.ndarray, start_s: float | None = None,
                end_s: float | None = None) -> int:
        """Ahead of the next tick, whose latent times (1, N_lat) s are given: its encoder attention over the
        cached spikes that will still be in its window (time >= its start). Returns how many tokens that
        covered (0: nothing prepared). :meth:`forward` uses it when its latent times are these exactly.

        With the next window's start and end (s, the exact values the tokenizer will write), the START/END
        tokens are advanced to them here, in their slots, and covered too: the next :meth:`update` then
        finds them current and the tick recomputes and attends only its new spikes. Call :meth:`update`
        before the next :meth:`forward` (as every tick does)."""
        self._ahead = None
        lat = torch.as_tensor(latent_timestamps, dtype=torch.float64).reshape(1, -1)
        n = self.n
        if n == 0 or not _HAS_LSE_KERNEL:
            self._dirty[:] = False
            return 0
        # the next window's start (given, or from the latents; a spike within rounding of it: left out)
        start = float(lat[0, 0]) - self._latent_t0 if start_s is None else float(start_s)
        spike = self._type[:n] == _SPIKE
        if start_s is not None and end_s is not None:  # START/END tokens: same units, the next times
            se = np.flatnonzero(~spike)
            if se.shape[0]:
                types = self._type[se]
                self._fill(se, self._unit[se], types, np.where(types == _START, float(start_s), float(end_s)))
            keep = np.flatnonzero(~spike | (self._time[:n] >= start))
        else:
            keep = np.flatnonzero(spike & (self._time[:n] >= start))
        self._dirty[:] = False
        if keep.shape[0] == 0:
            return 0
        covered = np.zeros(self.capacity, dtype=bool)
        covered[keep] = True
        keys = np.empty(self.capacity, dtype=np.complex128)
        keys[keep] = _base_keys(self._time[keep], self._unit[keep], self._type[keep], self._n_types)
        slots = torch.from_numpy(keep)
        with torch.inference_mode():
            pos = self.model.rotary_emb.rotation(lat)
            q = apply_rotation(self._q, pos, 1)
            out, lse = _attention_lse(q, self.k.index_select(2, slots), self.v.index_select(2, slots))
        self._ahead = _Ahead(lat.numpy().copy(), pos, q, covered, keys, out, lse)
        self.counters["prepared"] += 1
        return int(keep.shape[0])

    def _encoder_attention(self, q: Tensor, ahead: "_Ahead | None") -> Tensor:
        """softmax(q k^T / sqrt(H)) v over slots [0, n): (1, h, N_lat, H), from :meth:`prepare`'s part
        (``ahead``, made for this tick's latent times) when every token it covered is still here (only the
        others are attended now), else in full. Sets :attr:`last_attended`."""
        rest = None if ahead is None else self._unprepared_slots(ahead)
        if rest is None:
            self.last_attended = self.n
            return torch.nn.functional.scaled_dot_product_attention(q, self.k[:, :, :self.n], self.v[:, :, :self.n])
        self.counters["prepared_used"] += 1
        self.last_attended = int(rest.shape[0])
        if rest.shape[0] == 0:
            return ahead.out
        slots = torch.from_numpy(rest)
        out, lse = _attention_lse(q, self.k.index_select(2, slots), self.v.index_select(2, slots))
        return _merge(ahead.out, ahead.lse, out, lse)

    def _unprepared_slots(self, ahead: "_Ahead") -> np.ndarray | None:
        """The slots of [0, n) whose tokens ``ahead`` did not cover, or None when a token it covered is gone.

        The prepared tokens are matched as a multiset: one still in its slot (not rewritten since
        :meth:`prepare`) pairs with itself; each of the others (moved by swap-remove)
        must be found, by key, among this tick's remaining tokens: O(slots rewritten), not O(n)."""
        n = self.n
        in_place = ahead.covered[:n] & ~self._dirty[:n]  # prepared tokens still in their slot
        others = np.flatnonzero(~in_place)  # this tick's tokens not paired that way
        moved = ahead.covered.copy()
        moved[:n] &= self._dirty[:n]  # prepared tokens whose slot was rewritten or is now past n
        if not moved.any():
            return others
        lost = np.sort(_number_copies(ahead.keys[moved]))
        here = _number_copies(_base_keys(self._time[others], self._unit[others], self._type[others], self._n_types))
        found = lost[np.minimum(np.searchsorted(lost, here), lost.shape[0] - 1)] == here
        if int(found.sum()) < lost.shape[0]:  # keys are unique after numbering: one match per prepared token
            return None
        return others[~found]

    def _forward(self, latent_timestamps: Tensor, output_session_index: Tensor, output_timestamps: Tensor) -> Tensor:
        model, enc = self.model, self.model.enc_atn
        ahead, self._ahead = self._ahead, None
        if ahead is not None and np.array_equal(ahead.latent_timestamps, latent_timestamps.numpy()):
            latent_pos, q = ahead.latent_pos, ahead.q  # rotated when it was prepared
        else:
            ahead = None
            latent_pos = model.rotary_emb.rotation(latent_timestamps)  # (1, N_lat, D)
            q = apply_rotation(self._q, latent_pos, 1)
        out = self._encoder_attention(q, ahead)  # (1, h, N_lat, H)
        if enc.rotate_value:
            out = apply_rotation(out, latent_pos.inverse(), 1)
        latents = self._latents + enc.to_out(out.transpose(1, 2).flatten(-2))
        window_start = latent_timestamps[0, 0] - self._latent_t0
        out_times = output_timestamps[0].to(torch.float64) - window_start
        return self._tail.process_and_decode(latents[0], output_session_index[0], out_times)[None]

    # ------------------------------------------------------------------ private
    def _rows(self, units: np.ndarray) -> np.ndarray:
        """Table rows of ``units`` (vocabulary indices), computing the rows of units not seen before."""
        if units.shape[0] and (units.min() < 0 or units.max() >= self._n_vocab):
            raise IndexError(f"unit index out of the model's vocabulary [0, {self._n_vocab})")
        rows = self._row_of_unit[units]
        if (rows < 0).any():
            new_units = np.unique(units[rows < 0])
            start = self._table.shape[0]
            with torch.inference_mode():
                enc = self.model.enc_atn
                ids = torch.from_numpy(new_units).to(self.device)
                emb = self.model.unit_emb.weight[ids][:, None, :] + self.model.token_type_emb.weight[None]
                kv = enc.to_kv(enc.norm_context(emb))  # (k, n_types, 2 * inner)
                self._table = torch.cat((self._table, kv), dim=0)
            self._row_of_unit[new_units] = np.arange(start, start + new_units.shape[0])
            rows = self._row_of_unit[units]
        return rows

    def _rotated_kv(self, units: np.ndarray, types: np.ndarray, times: np.ndarray) -> tuple[Tensor, Tensor]:
        """Rotated keys and values (1, h, m, H) of m tokens, from the table."""
        if types.shape[0] and (types.min() < 0 or types.max() >= self._n_types):
            raise IndexError(f"token type out of [0, {self._n_types})")
        rows = self._rows(units)
        m = rows.shape[0]
        with torch.inference_mode():
            flat = torch.from_numpy(rows * self._n_types + types).to(self.device)  # rows of the (unit, type) table
            kv = self._table.flatten(0, 1).index_select(0, flat).view(m, 2, self.heads, self.head_dim)  # (m, k|v, h, H)
            rot = self.model.rotary_emb.rotation(torch.from_numpy(times).to(self.device))  # (m, D)
            k = apply_rotation(kv[:, 0], rot, 1)  # (m, h, H)
            v = apply_rotation(kv[:, 1], rot, 1) if self.model.enc_atn.rotate_value else kv[:, 1]
        return k.transpose(0, 1)[None], v.transpose(0, 1)[None]

    def _fill(self, idx: np.ndarray, units: np.ndarray, types: np.ndarray, times: np.ndarray) -> None:
        """Recompute the rotated k, v of slots ``idx`` from the table: O(len(idx))."""
        k, v = self._rotated_kv(units, types, times)
        with torch.inference_mode():
            slots = torch.from_numpy(idx).to(self.device)
            self.k[0].index_copy_(1, slots, k[0])
            self.v[0].index_copy_(1, slots, v[0])
        self._unit[idx] = units
        self._type[idx] = types
        self._time[idx] = times
        self._dirty[idx] = True


_SPIKE, _START = int(TokenType.DEFAULT), int(TokenType.START_OF_SEQUENCE)
# the CPU flash-attention kernel that also returns the log-sum-exp (torch >= 2.2); without it, no prepare
_HAS_LSE_KERNEL = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


class _Ahead(NamedTuple):
    """What :meth:`EncoderKVCache.prepare` computed for the next tick."""

    latent_timestamps: np.ndarray  # (1, N_lat) float64 s: the tick it was made for
    latent_pos: Rotation  # their rotation
    q: Tensor  # (1, h, N_lat, H) the encoder's queries, rotated
    covered: np.ndarray  # (capacity,) bool: the slots whose tokens it covered
    keys: np.ndarray  # (capacity,) complex128: their keys (_base_keys; meaningful where covered)
    out: Tensor  # (1, h, N_lat, H) their attention output
    lse: Tensor  # (1, h, N_lat) its log-sum-exp


def _base_keys(times: np.ndarray, units: np.ndarray, types: np.ndarray, n_types: int) -> np.ndarray:
    """One complex128 key per token, equal for equal (time, unit, type): ``time + 1j * (unit * n_types + type)``
    (numpy orders complex numbers by real, then imaginary part)."""
    return times + 1j * (units * n_types + types).astype(np.float64)


def _number_copies(keys: np.ndarray) -> np.ndarray:
    """``keys`` made unique by numbering the copies of each value (chunk-stamped streams give a unit two
    spikes at one time): copy r gets ``1j * 2**32 * r`` added (the base keys' imaginary parts are far below)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new_run = np.ones(ordered.shape[0], dtype=bool)
    new_run[1:] = ordered[1:] != ordered[:-1]
    if new_run.all():
        return keys
    starts = np.flatnonzero(new_run)
    copy = np.arange(ordered.shape[0]) - np.repeat(starts, np.diff(np.append(starts, ordered.shape[0])))
    out = keys.copy()
    out[order] = ordered + 1j * float(2**32) * copy
    return out


def _attention_lse(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T / sqrt(H)) v`` (B, h, N_q, H) and its log-sum-exp (B, h, N_q) (CPU flash kernel)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    return out, lse


def _merge(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> Tensor:
    """The attention over two disjoint key sets from each one's output and log-sum-exp: the outputs
    weighted by their softmax mass, ``a`` with ``exp(lse_a) / (exp(lse_a) + exp(lse_b)) = sigmoid(lse_a - lse_b)``."""
    return torch.lerp(out_b, out_a, torch.sigmoid(lse_a - lse_b).unsqueeze(-1))

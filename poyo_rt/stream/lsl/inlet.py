"""The spike inlet: pulls spike events or binned counts from one LSL stream as ``(spike_times_s,
unit_index)`` on this machine's clock, drops and counts bad samples, and survives an outlet restart."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Sequence

import numpy as np
import pylsl
from pylsl.util import LostError as _LslLostError
from pylsl.util import TimeoutError as _LslTimeoutError

from poyo_rt.errors import StreamFormatError, StreamNotFoundError
from poyo_rt.stream.lsl.config import ensure_configured, require_positive
from poyo_rt.stream.lsl.discovery import resolve_stream, xpath_literal
from poyo_rt.stream.lsl.layout import FORMAT_NAMES, LAYOUTS, NP_DTYPES, Column, StreamSpec, parse_spec

log = logging.getLogger(__name__)

DROP_REASONS = (
    "nonfinite_time",  # NaN/inf timestamp
    "future_time",  # later than local_clock() + max_future_s after clock correction
    "out_of_order",  # earlier than the latest timestamp already seen
    "non_integer_unit",  # unit (or channel) value NaN/inf/fractional (float formats)
    "negative_unit",  # unit (or channel) value < 0
    "unit_out_of_range",  # unit index >= number of units
    "unknown_unit",  # (channel, unit) pair not in the unit list
    "non_integer_count",  # counts: NaN/inf/fractional count
    "negative_count",  # counts: count < 0
    "count_too_large",  # counts: count > max_count_per_bin
    "missed_samples",  # counts: bins missing from the timestamps (estimate; see SpikeInlet)
)
"""Keys of :attr:`SpikeInlet.drops`. Events: one sample = one spike. Counts: the time reasons count
bins (samples), the count reasons count channel values, ``missed_samples`` counts bins."""


_EMPTY_T = np.empty(0, dtype=np.float64)
_EMPTY_T.flags.writeable = False
_EMPTY_U = np.empty(0, dtype=np.int64)
_EMPTY_U.flags.writeable = False


class SpikeInlet:
    """Pulls spikes from one LSL stream as ``(spike_times_s, unit_index)`` arrays.

    Layouts (``layout="auto"`` picks ``events`` for an irregular stream or when a column is given,
    else ``counts``):

    - ``events``: one sample per spike, the sample's timestamp is the spike time (an irregular stream: a
      regular one carries bins, and is refused rather than have its counts read as unit indices). The unit is the only
      channel (default), or column ``unit_column`` (index or channel label) of a wider sample, or the
      pair (``channel_column``, ``unit_column``) looked up in the unit list by each unit's
      ``<channel>``/``<label>`` (or, without them, by an id of the form ``"{channel}_{unit}"``). Other
      columns (waveforms) are ignored. Examples: Neural Data Simulator ``[unit, 0, 48 x waveform]``:
      ``unit_column=0``; Blackrock SPK: ``channel_column="ch_id", unit_column="unit_id"``.
    - ``counts``: one channel per unit, a count per bin; a count c > 0 becomes c spikes at that
      sample's timestamp (the bin's LSL timestamp as pushed, clock-corrected; no half-bin shift).

    Units: ids from ``<desc><units>``; else, for counts, the channel labels; else ``unit_ids=``.
    ``unit_index`` indexes :attr:`unit_ids` (map to a model with :func:`match_units`).

    Clock: returned times are on this machine's :func:`local_clock`. With ``clock_correction="auto"``
    (default) a stream from this host keeps its timestamps as they are (one clock: the offset is exactly
    0, and measuring it would only add -10..-50 µs of estimation noise); a stream from another host is
    corrected with ``time_correction()``, measured once at open (blocks about 0.64 s) and refreshed every
    ``clock_refresh_s`` without blocking. ``"always"`` / ``"never"`` force either behaviour.

    Bad samples are dropped, counted in :attr:`drops` (keys :data:`DROP_REASONS`) and logged at most
    once per ``log_interval_s``. A wrong channel count/format raises StreamFormatError at open.

    Outlet lost: once liblsl reports it (3-6 ms after the outlet's process died, measured on one
    host; a silent network loss can take longer), :attr:`connected` turns False and
    :attr:`lost_count` grows; with ``reconnect=True`` a background resolver looks for a new outlet with
    the same source_id (or the same name and type when the stream has none); once seen (liblsl
    queries every 0.5 s: measured 0.4-0.5 s after the new outlet started), :meth:`pull` opens it
    (blocking info/open calls bounded by ``reconnect_timeout_s``, a few ms on one host), checks it
    has the same layout and units, and counts :attr:`reconnect_count`. Samples pushed while no inlet is connected
    are lost; for regular (counts) streams the gap shows in ``drops["missed_samples"]``, estimated from
    timestamps; for events streams it cannot be counted. A returned outlet with another layout or unit
    list is refused (logged, :attr:`rejected_reconnects`).

    One owner thread: :meth:`pull` is not thread-safe.
    """

    def __init__(
        self,
        info: pylsl.StreamInfo,
        *,
        layout: str = "auto",
        unit_column: Column = None,
        channel_column: Column = None,
        unit_ids: Sequence[str] | None = None,
        max_chunk: int = 4096,
        max_buffer_samples: int = 100_000,
        open_timeout_s: float = 5.0,
        clock_refresh_s: float = 5.0,
        clock_correction: str = "auto",
        max_future_s: float = 1.0,
        max_count_per_bin: int = 1000,
        reconnect: bool = True,
        reconnect_poll_s: float = 0.05,
        reconnect_timeout_s: float = 0.5,
        log_interval_s: float = 5.0,
    ):
        """Open an inlet on ``info`` (from :func:`resolve_stream`) and check its layout.

        Args:
            layout: ``"auto" | "events" | "counts"``.
            unit_column, channel_column: events columns (int index or channel label), see class doc.
            unit_ids: unit ids (U,) for streams that publish none (must equal the stream's if it does).
            max_chunk: most samples one :meth:`pull` takes from liblsl; more stay queued for the next
                call (:attr:`backlogged` tells).
            max_buffer_samples: liblsl's inlet queue, in samples (converted to liblsl's unit: seconds
                for regular streams, hundreds of samples for irregular ones); liblsl drops the oldest
                samples silently beyond it.
            open_timeout_s: bound on each blocking step of opening (info, open, first clock offset), s.
            clock_refresh_s: seconds between non-blocking clock-offset refreshes.
            clock_correction: ``"auto"`` (correct streams from other hosts only), ``"always"``, ``"never"``.
            max_future_s: samples more than this many seconds after local_clock() are dropped.
            max_count_per_bin: counts above this are dropped (a corrupt count must not allocate GBs).
            reconnect: look for the outlet again after it is lost.
            reconnect_poll_s: seconds between checks of the background resolver while disconnected.
            reconnect_timeout_s: bound on the blocking info/open calls of a reconnect, s.
            log_interval_s: at most one drop warning per this many seconds.
        """
        if not isinstance(info, pylsl.StreamInfo):
            raise TypeError(f"info must be a pylsl.StreamInfo (see resolve_stream), got {info!r}")
        if layout not in ("auto", *LAYOUTS):
            raise ValueError(f"layout must be 'auto', 'events' or 'counts', got {layout!r}")
        require_positive("max_chunk", max_chunk, integer=True)
        require_positive("max_buffer_samples", max_buffer_samples, integer=True)
        require_positive("max_count_per_bin", max_count_per_bin, integer=True)
        for field, value in (
            ("open_timeout_s", open_timeout_s),
            ("clock_refresh_s", clock_refresh_s),
            ("max_future_s", max_future_s),
            ("reconnect_poll_s", reconnect_poll_s),
            ("reconnect_timeout_s", reconnect_timeout_s),
            ("log_interval_s", log_interval_s),
        ):
            require_positive(field, value)
        if unit_ids is not None:
            if isinstance(unit_ids, str):
                raise TypeError(f"unit_ids must be a sequence of str, got a str {unit_ids!r}")
            unit_ids = [str(u) for u in unit_ids]
        self._layout_args = (layout, unit_column, channel_column, unit_ids)
        self.max_chunk = max_chunk
        self.max_buffer_samples = max_buffer_samples
        self.clock_refresh_s = float(clock_refresh_s)
        self.max_future_s = float(max_future_s)
        self.max_count_per_bin = max_count_per_bin
        self.reconnect = reconnect
        self.reconnect_poll_s = float(reconnect_poll_s)
        self.reconnect_timeout_s = float(reconnect_timeout_s)
        self.log_interval_s = float(log_interval_s)

        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        """Dropped samples per reason since open (see :data:`DROP_REASONS`)."""
        self.connected = False
        self.lost_count = 0
        self.reconnect_count = 0
        self.rejected_reconnects = 0
        self.last_disconnect_s: float | None = None  # duration of the latest outage, s
        self.n_samples = 0  # LSL samples pulled
        self.n_spikes = 0  # spikes returned
        self.backlogged = False  # the last pull filled max_chunk: more may be queued
        self.last_pull_local_s = math.nan  # local_clock() at the last pull, s

        self._closed = False
        self._inlet: pylsl.StreamInlet | None = None
        self._resolver: pylsl.ContinuousResolver | None = None
        self._gone_uids: set[str] = set()  # outlets lost or refused: never reconnect to them
        self._lost_at = math.nan
        self._next_resolve_check = 0.0
        self._offset_s = 0.0
        self._offset_valid = False
        self._next_clock_refresh = 0.0
        self._last_t = -math.inf  # latest accepted-in-order timestamp (local clock), s
        self._last_bin_t = math.nan  # counts: time of the latest accepted bin, s
        self._pending: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._next_log = -math.inf

        if clock_correction not in ("auto", "always", "never"):
            raise ValueError(f"clock_correction must be 'auto', 'always' or 'never', got {clock_correction!r}")
        ensure_configured()
        self._spec, self._inlet = self._open(info, float(open_timeout_s), first=True)
        # Same host = same clock: the offset is exactly 0, while time_correction() would read
        # -10..-50 µs of estimation noise (STREAMING-NOTES) and block 0.64 s at open.
        same_host = self._spec.hostname == socket.gethostname()
        self._measure_clock = clock_correction == "always" or (clock_correction == "auto" and not same_host)
        if self._measure_clock:
            try:
                self._offset_s = self._inlet.time_correction(timeout=float(open_timeout_s))
            except (_LslTimeoutError, _LslLostError) as exc:
                self._inlet = None
                raise StreamNotFoundError(
                    f"stream {self._spec.name!r}: no clock offset within {open_timeout_s:g} s ({exc})"
                ) from exc
        self._offset_valid = True
        self._next_clock_refresh = pylsl.local_clock() + self.clock_refresh_s if self._measure_clock else math.inf
        self.connected = True
        self._alloc_buffers()
        log.info(
            "opened %s stream %r (source_id %r, host %r): %d channels %s, %d units, clock offset %.1f µs",
            self._spec.layout,
            self._spec.name,
            self._spec.source_id,
            self._spec.hostname,
            self._spec.n_channels,
            FORMAT_NAMES[self._spec.channel_format],
            len(self._spec.unit_ids),
            self._offset_s * 1e6,
        )
        if not self._spec.source_id:
            log.warning(
                "stream %r has no source_id: a restarted outlet is found again by name and type only",
                self._spec.name,
            )

    # ---- opening -----------------------------------------------------------------------------

    def _max_buflen(self, info: pylsl.StreamInfo) -> int:
        srate = float(info.nominal_srate())
        if srate > 0:
            return max(1, math.ceil(self.max_buffer_samples / srate))  # seconds
        return max(1, math.ceil(self.max_buffer_samples / 100))  # hundreds of samples

    def _open(
        self, info: pylsl.StreamInfo, timeout_s: float, first: bool
    ) -> tuple[StreamSpec, pylsl.StreamInlet]:
        """Create an inlet, fetch the full info, check the layout, subscribe. Raises on failure."""
        inlet = pylsl.StreamInlet(
            info,
            max_buflen=self._max_buflen(info),
            max_chunklen=0,
            recover=False,
            processing_flags=pylsl.proc_none,
        )
        try:
            full = inlet.info(timeout=timeout_s)
        except (_LslTimeoutError, _LslLostError) as exc:
            raise StreamNotFoundError(
                f"stream {info.name()!r} (source_id {info.source_id()!r}) did not send its description "
                f"within {timeout_s:g} s ({exc})"
            ) from exc
        spec = parse_spec(full, *self._layout_args)
        if not first:
            change = self._spec.same_shape(spec)
            if change is not None:
                raise StreamFormatError(f"stream {spec.name!r} came back changed: {change}")
        try:
            inlet.open_stream(timeout=timeout_s)
        except (_LslTimeoutError, _LslLostError) as exc:
            raise StreamNotFoundError(
                f"stream {info.name()!r} could not be subscribed within {timeout_s:g} s ({exc})"
            ) from exc
        return spec, inlet

    def _alloc_buffers(self) -> None:
        spec = self._spec
        self._buf = np.empty((self.max_chunk, spec.n_channels), dtype=NP_DTYPES[spec.channel_format])
        self._is_float = np.issubdtype(self._buf.dtype, np.floating)
        if spec.layout == "counts":
            n_units = len(spec.unit_ids)
            # unit index of every value of a (max_chunk, U) chunk, flattened: repeated, never rebuilt
            self._unit_grid = np.tile(np.arange(n_units, dtype=np.int64), self.max_chunk)

    # ---- public state ------------------------------------------------------------------------

    @property
    def unit_ids(self) -> list[str]:
        """Unit ids (U,), in unit-index order."""
        return list(self._spec.unit_ids)

    @property
    def layout(self) -> str:
        """``"events"`` or ``"counts"``."""
        return self._spec.layout

    @property
    def stream_name(self) -> str:
        return self._spec.name

    @property
    def source_id(self) -> str:
        return self._spec.source_id

    @property
    def nominal_srate_hz(self) -> float:
        """The stream's nominal rate in Hz; 0 for irregular streams."""
        return self._spec.srate_hz

    @property
    def clock_offset_s(self) -> float:
        """Current time correction (s) added to the stream's timestamps."""
        return self._offset_s

    # ---- pulling -----------------------------------------------------------------------------

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the spikes that arrived since the last call, without blocking.

        Returns:
            spike_times_s: float64 (N,), seconds on this machine's :func:`local_clock`, non-decreasing.
            unit_index: int64 (N,), index into :attr:`unit_ids`.
            Empty (read-only) arrays when nothing arrived or the stream is disconnected.
        """
        if self._closed:
            raise RuntimeError(f"pull() on closed SpikeInlet of stream {self._spec.name!r}")
        now = pylsl.local_clock()
        self.last_pull_local_s = now
        self.backlogged = False
        if not self.connected:
            self._try_reconnect(now)
            if not self.connected:
                return _EMPTY_T, _EMPTY_U
        if not self._offset_valid or now >= self._next_clock_refresh:
            self._refresh_offset(now)
            if not self.connected or not self._offset_valid:
                return _EMPTY_T, _EMPTY_U  # samples wait in liblsl's queue until the offset is known
        try:
            data, stamps = self._inlet.pull_chunk(
                timeout=0.0, max_samples=self.max_chunk, dest_obj=self._buf, as_numpy=True
            )
        except _LslLostError:
            self._on_lost(now)
            return _EMPTY_T, _EMPTY_U
        n = stamps.shape[0]
        if n == 0:
            return _EMPTY_T, _EMPTY_U
        self.n_samples += n
        self.backlogged = n == self.max_chunk
        times = stamps + self._offset_s  # (n,) local clock, s
        ok = self._check_times(times, now)
        if self._spec.layout == "counts":
            spike_t, spike_u = self._counts_to_spikes(data, times, ok)
        else:
            spike_t, spike_u = self._events_to_spikes(data, times, ok)
        self.n_spikes += spike_t.shape[0]
        if self._next_log <= now and any(self._pending.values()):
            self._log_drops(now)
        return spike_t, spike_u

    def _drop(self, ok: np.ndarray, bad: np.ndarray, reason: str) -> None:
        """Clear ``ok`` where ``bad`` (only for samples still ok) and count them under ``reason``."""
        newly = bad & ok
        k = int(np.count_nonzero(newly))
        if k:
            ok &= ~newly
            self.drops[reason] += k
            self._pending[reason] += k

    def _check_times(self, times: np.ndarray, now: float) -> np.ndarray:
        """Mask (n,) of samples with finite, not-future, in-order times; updates the order state."""
        ok = np.ones(times.shape[0], dtype=bool)
        first, last = float(times[0]), float(times[-1])
        if (
            math.isfinite(first)
            and first >= self._last_t
            and last <= now + self.max_future_s
            and bool((times[1:] >= times[:-1]).all())
        ):  # the usual case: all finite (sorted between two finite ends) and in order
            self._last_t = last
            return ok
        with np.errstate(invalid="ignore"):
            self._drop(ok, ~np.isfinite(times), "nonfinite_time")
            self._drop(ok, times > now + self.max_future_s, "future_time")
        candidate = np.where(ok, times, -np.inf)
        running_max = np.maximum.accumulate(candidate)
        prior = np.empty_like(running_max)  # latest earlier timestamp, per sample
        prior[0] = self._last_t
        np.maximum(running_max[:-1], self._last_t, out=prior[1:])
        self._drop(ok, times < prior, "out_of_order")
        self._last_t = max(self._last_t, float(running_max[-1]))
        return ok

    def _check_index_values(self, values: np.ndarray, ok: np.ndarray) -> None:
        """Drop non-integer and negative unit/channel values (any numeric dtype)."""
        if self._is_float:
            with np.errstate(invalid="ignore"):
                self._drop(ok, ~np.isfinite(values) | (values != np.floor(values)), "non_integer_unit")
        with np.errstate(invalid="ignore"):
            self._drop(ok, values < 0, "negative_unit")

    def _events_to_spikes(
        self, data: np.ndarray, times: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self._spec
        unit_vals = data[:, spec.unit_col]  # (n,) stream dtype
        if spec.channel_col is None and not self._is_float and ok.all():
            if unit_vals.min() >= 0 and unit_vals.max() < len(spec.unit_ids):  # the usual case
                return times, unit_vals.astype(np.int64)  # times is fresh: stamps + offset
        self._check_index_values(unit_vals, ok)
        if spec.channel_col is None:
            with np.errstate(invalid="ignore"):
                self._drop(ok, unit_vals >= len(spec.unit_ids), "unit_out_of_range")
            return times[ok], unit_vals[ok].astype(np.int64)
        chan_vals = data[:, spec.channel_col]
        self._check_index_values(chan_vals, ok)
        with np.errstate(invalid="ignore"):
            self._drop(ok, (chan_vals > spec.max_channel) | (unit_vals > spec.max_unit), "unknown_unit")
        keys = chan_vals[ok].astype(np.int64) * (spec.max_unit + 1) + unit_vals[ok].astype(np.int64)
        pos = np.searchsorted(spec.pair_keys, keys)
        pos_c = np.minimum(pos, spec.pair_keys.shape[0] - 1)
        found = spec.pair_keys[pos_c] == keys
        if not found.all():
            missing = np.zeros_like(ok)
            missing[np.flatnonzero(ok)[~found]] = True
            self._drop(ok, missing, "unknown_unit")
        return times[ok], spec.pair_index[pos_c[found]]

    def _counts_to_spikes(
        self, data: np.ndarray, times: np.ndarray, ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self._spec
        bin_t = times[ok]  # (m,) accepted bins
        if spec.srate_hz > 0 and bin_t.shape[0]:
            self._count_missed(bin_t)
        counts = data[ok]  # (m, U) copy, stream dtype
        if self._is_float:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(counts) | (counts != np.floor(counts))
            self._count_values(bad, counts, "non_integer_count")
        self._count_values(counts < 0, counts, "negative_count")
        self._count_values(counts > self.max_count_per_bin, counts, "count_too_large")
        flat = counts.ravel().astype(np.int64)  # (m*U,)
        n_units = len(spec.unit_ids)
        units = np.repeat(self._unit_grid[: flat.shape[0]], flat)
        spike_t = np.repeat(bin_t, flat.reshape(-1, n_units).sum(axis=1))
        return spike_t, units

    def _count_values(self, bad: np.ndarray, counts: np.ndarray, reason: str) -> None:
        k = int(np.count_nonzero(bad))
        if k:
            counts[bad] = 0
            self.drops[reason] += k
            self._pending[reason] += k

    def _count_missed(self, bin_t: np.ndarray) -> None:
        """Estimate bins missing between accepted bins of a regular stream (gaps > 1.5 periods)."""
        prev = bin_t[0] if math.isnan(self._last_bin_t) else self._last_bin_t
        steps = np.diff(bin_t, prepend=prev) * self._spec.srate_hz  # (m,) in bin periods
        gaps = steps[steps > 1.5]
        if gaps.shape[0]:
            k = int(np.rint(gaps).sum()) - gaps.shape[0]
            self.drops["missed_samples"] += k
            self._pending["missed_samples"] += k
        self._last_bin_t = float(bin_t[-1])

    def _log_drops(self, now: float) -> None:
        recent = {k: v for k, v in self._pending.items() if v}
        log.warning(
            "stream %r: dropped %s since the last report; totals %s",
            self._spec.name,
            recent,
            {k: v for k, v in self.drops.items() if v},
        )
        for k in recent:
            self._pending[k] = 0
        self._next_log = now + self.log_interval_s

    # ---- clock, loss, reconnect ------------------------------------------------------------

    def _refresh_offset(self, now: float) -> None:
        """Non-blocking time_correction(): liblsl returns its latest background estimate."""
        if not self._measure_clock:
            self._offset_valid = True
            self._next_clock_refresh = math.inf
            return
        try:
            self._offset_s = self._inlet.time_correction(timeout=0.0)
            self._offset_valid = True
        except _LslTimeoutError:
            pass  # no estimate yet (fresh connection): keep the old one, or wait if none is valid
        except _LslLostError:
            self._on_lost(now)
            return
        self._next_clock_refresh = now + self.clock_refresh_s

    def _on_lost(self, now: float) -> None:
        self.connected = False
        self.lost_count += 1
        self._lost_at = now
        self._gone_uids.add(self._spec.uid)
        self._inlet = None
        log.warning(
            "stream %r (source_id %r) lost (%d so far)%s",
            self._spec.name,
            self._spec.source_id,
            self.lost_count,
            "; looking for it again" if self.reconnect else "; reconnect disabled",
        )
        if self.reconnect:
            ensure_configured()
            spec = self._spec
            if spec.source_id:
                self._resolver = pylsl.ContinuousResolver(prop="source_id", value=spec.source_id)
            else:
                pred = f"name={xpath_literal('name', spec.name)}"
                if spec.stream_type:
                    pred += f" and type={xpath_literal('type', spec.stream_type)}"
                self._resolver = pylsl.ContinuousResolver(pred=pred)
            self._next_resolve_check = now

    def _try_reconnect(self, now: float) -> None:
        if self._resolver is None or now < self._next_resolve_check:
            return
        self._next_resolve_check = now + self.reconnect_poll_s
        for info in self._resolver.results():
            if info.uid() in self._gone_uids:
                continue
            try:
                spec, inlet = self._open(info, self.reconnect_timeout_s, first=False)
            except StreamNotFoundError as exc:
                log.debug("reconnect attempt failed, will retry: %s", exc)
                continue
            except StreamFormatError as exc:
                self._gone_uids.add(info.uid())
                self.rejected_reconnects += 1
                log.error("not reconnecting: %s", exc)
                continue
            same_host = spec.hostname == self._spec.hostname
            self._spec, self._inlet = spec, inlet
            self._resolver = None
            self.connected = True
            self.reconnect_count += 1
            self.last_disconnect_s = now - self._lost_at
            # The same host keeps its clock: the old offset stays right until the refresh.
            self._offset_valid = same_host
            self._next_clock_refresh = now if same_host else 0.0
            log.warning(
                "stream %r reconnected after %.2f s (reconnect %d); samples pushed meanwhile are lost",
                spec.name,
                self.last_disconnect_s,
                self.reconnect_count,
            )
            return

    # ---- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Unsubscribe and release the inlet. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:  # noqa: BLE001 - closing a lost inlet must not raise
                log.debug("close_stream failed", exc_info=True)
        self._inlet = None
        self._resolver = None
        self.connected = False

    def __enter__(self) -> SpikeInlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SpikeInlet(stream={self._spec.name!r}, layout={self._spec.layout!r}, "
            f"units={len(self._spec.unit_ids)}, connected={self.connected}, "
            f"lost={self.lost_count}, reconnects={self.reconnect_count})"
        )


def open_spike_inlet(
    name: str | None = None,
    type: str | None = None,  # noqa: A002 - LSL's own word for the content type
    source_id: str | None = None,
    timeout_s: float = 5.0,
    unique_wait_s: float = 0.6,
    **inlet_kwargs: object,
) -> SpikeInlet:
    """:func:`resolve_stream` then :class:`SpikeInlet` (keyword arguments go to the inlet)."""
    info = resolve_stream(name, type, source_id, timeout_s, unique_wait_s)
    return SpikeInlet(info, **inlet_kwargs)  # type: ignore[arg-type]

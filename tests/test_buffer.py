"""SpikeBuffer: ring append/read across the wrap, every drop reason counted, no silent loss."""

from __future__ import annotations

import numpy as np
import pytest

from poyo_rt.stream.buffer import DROP_REASONS, SpikeBuffer


def _accounting_holds(buf: SpikeBuffer, consumed: int) -> bool:
    return buf.next_seq == consumed + buf.drops["overflow"] + buf.n_pending


def test_append_and_read_in_order():
    buf = SpikeBuffer(capacity=16, n_units=4)
    assert buf.append(np.array([1.0, 1.5, 2.0]), np.array([0, 3, 1])) == 3
    times, units, first = buf.read(0)
    np.testing.assert_array_equal(times, [1.0, 1.5, 2.0])
    np.testing.assert_array_equal(units, [0, 3, 1])
    assert first == 0 and buf.next_seq == 3 and buf.oldest_seq == 0
    assert units.dtype == np.int64 and times.dtype == np.float64
    assert not times.flags.writeable  # views of the ring are read-only
    assert buf.append(np.array([]), np.array([], dtype=np.int64)) == 0
    assert all(v == 0 for v in buf.drops.values())


def test_equal_timestamps_are_accepted():
    buf = SpikeBuffer(capacity=16, n_units=4)
    assert buf.append(np.full(4, 3.0), np.arange(4)) == 4
    assert buf.append(np.array([3.0, 3.0]), np.array([1, 2], dtype=np.int32)) == 2
    assert buf.drops["out_of_order"] == 0 and buf.next_seq == 6


@pytest.mark.parametrize(
    ("times", "units", "reason", "n_ok"),
    [
        ([1.0, np.nan, 2.0, np.inf, -np.inf], [0, 0, 0, 0, 0], "nan_time", 2),
        ([1.0, 2.0, 3.0, 4.0], [0, -1, 4, 3], "unknown_unit", 2),
        ([1.0, 0.5, 2.0, 1.9, 2.0], [0, 0, 0, 0, 0], "out_of_order", 3),
    ],
)
def test_each_drop_reason_is_counted(times, units, reason, n_ok):
    buf = SpikeBuffer(capacity=16, n_units=4)
    n = buf.append(np.array(times), np.array(units))
    assert n == n_ok
    assert buf.drops[reason] == len(times) - n_ok
    assert sum(buf.drops.values()) == len(times) - n_ok
    got, _, _ = buf.read(0)
    assert np.all(np.isfinite(got)) and np.all(np.diff(got) >= 0)


def test_out_of_order_against_previous_chunk():
    buf = SpikeBuffer(capacity=16, n_units=2)
    buf.append(np.array([5.0]), np.array([0]))
    assert buf.append(np.array([4.0, 5.0, 6.0]), np.array([1, 1, 1])) == 2
    assert buf.drops["out_of_order"] == 1
    np.testing.assert_array_equal(buf.read(0)[0], [5.0, 5.0, 6.0])


def test_unmapped_units_dropped_in_buffer():
    unit_map = np.array([10, -1, 12, -1])
    buf = SpikeBuffer(capacity=16, n_units=4, unit_map=unit_map)
    n = buf.append(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0, 1, 2, 3, 7]))
    assert n == 2
    assert buf.drops["unmapped_unit"] == 2 and buf.drops["unknown_unit"] == 1
    np.testing.assert_array_equal(buf.read(0)[1], [0, 2])  # stream indices are kept


def test_reason_precedence_counts_once():
    buf = SpikeBuffer(capacity=8, n_units=2, unit_map=np.array([0, -1]))
    buf.append(np.array([10.0]), np.array([0]))
    # NaN + bad unit -> nan_time; bad unit + early -> unknown_unit; unmapped + early -> unmapped_unit
    buf.append(np.array([np.nan, 1.0, 2.0, 3.0]), np.array([9, 9, 1, 0]))
    want = {"nan_time": 1, "unknown_unit": 1, "unmapped_unit": 1, "out_of_order": 1, "overflow": 0}
    assert buf.drops == want


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="capacity"):
        SpikeBuffer(capacity=0, n_units=2)
    with pytest.raises(ValueError, match="n_units"):
        SpikeBuffer(capacity=4, n_units=-1)
    with pytest.raises(ValueError, match="unit_map"):
        SpikeBuffer(capacity=4, n_units=2, unit_map=np.array([0, 1, 2]))
    buf = SpikeBuffer(capacity=4, n_units=2)
    with pytest.raises(ValueError, match="units"):
        buf.append(np.array([1.0, 2.0]), np.array([0]))
    with pytest.raises(TypeError, match="units"):
        buf.append(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="since_seq"):
        buf.read(5)


def test_wrap_read_and_consume_match_reference():
    rng = np.random.default_rng(0)
    cap = 37
    buf = SpikeBuffer(capacity=cap, n_units=5)
    all_t: list[float] = []
    all_u: list[int] = []
    t = 100.0
    consumed_t: list[float] = []
    consumed_u: list[int] = []
    for step in range(300):
        k = int(rng.integers(0, 9))
        times = t + np.cumsum(rng.exponential(0.01, size=k))
        if k:
            t = float(times[-1])
        units = rng.integers(0, 5, size=k)
        assert buf.append(times, units) == k
        all_t.extend(times)
        all_u.extend(units)
        # random read of a retained range matches the reference (views or wrap copy)
        lo = int(rng.integers(buf.oldest_seq, buf.next_seq + 1))
        got_t, got_u, first = buf.read(lo)
        assert first == lo
        np.testing.assert_array_equal(got_t, all_t[lo:])
        np.testing.assert_array_equal(got_u, all_u[lo:])
        if step % 3 == 0:  # consume up to a time just behind the newest spike
            cut = t - 0.02
            ct, cu = buf.consume(cut)
            assert np.all(ct < cut)
            consumed_t.extend(ct)
            consumed_u.extend(cu)
            assert buf.n_pending == 0 or buf.read(buf.read_seq)[0][0] >= cut
    assert buf.drops["overflow"] == 0
    np.testing.assert_array_equal(consumed_t, all_t[: len(consumed_t)])
    np.testing.assert_array_equal(consumed_u, all_u[: len(consumed_u)])
    assert _accounting_holds(buf, len(consumed_t))


def test_read_is_a_view_without_wrap_and_only_returned_spikes_with_wrap():
    buf = SpikeBuffer(capacity=10, n_units=1)
    buf.append(np.arange(8, dtype=float), np.zeros(8, dtype=np.int64))
    buf.consume(100.0)
    buf.append(np.arange(8, 13, dtype=float), np.zeros(5, dtype=np.int64))  # wraps at seq 10
    t, _, _ = buf.read(3, 7)  # no wrap: a view of the ring, no copy
    assert np.shares_memory(t, buf._times) and t.shape == (4,)
    t, _, first = buf.read(8)  # wraps: a copy of exactly the 5 returned spikes
    assert first == 8 and t.shape == (5,)
    np.testing.assert_array_equal(t, np.arange(8, 13))
    assert buf.drops["overflow"] == 0  # overwritten spikes had been consumed
    t, _, first = buf.read(0)  # seqs 0..2 are gone: the caller sees where it resumed
    assert first == buf.oldest_seq == 3


def test_overflow_counts_unread_overwrites():
    buf = SpikeBuffer(capacity=8, n_units=2)
    buf.append(np.arange(6, dtype=float), np.zeros(6, dtype=np.int64))
    t, _ = buf.consume(2.0)  # consumes seq 0, 1
    assert t.shape == (2,)
    buf.append(np.arange(6, 12, dtype=float), np.zeros(6, dtype=np.int64))  # 12 accepted, ring 8
    assert buf.oldest_seq == 4
    assert buf.drops["overflow"] == 2  # seq 2, 3 overwritten unread
    assert buf.read_seq == 4
    t, _ = buf.consume(np.inf)
    np.testing.assert_array_equal(t, np.arange(4, 12))
    assert _accounting_holds(buf, 2 + 8)


def test_chunk_larger_than_capacity():
    buf = SpikeBuffer(capacity=4, n_units=1)
    assert buf.append(np.arange(10, dtype=float), np.zeros(10, dtype=np.int64)) == 10
    assert buf.drops["overflow"] == 6
    t, _ = buf.consume(np.inf)
    np.testing.assert_array_equal(t, [6.0, 7.0, 8.0, 9.0])
    assert _accounting_holds(buf, 4)
    assert set(buf.drops) == set(DROP_REASONS)


def test_consume_leaves_later_spikes_pending():
    buf = SpikeBuffer(capacity=8, n_units=1)
    buf.append(np.array([1.0, 2.0, 2.0, 3.0]), np.zeros(4, dtype=np.int64))
    t, _ = buf.consume(2.0)
    np.testing.assert_array_equal(t, [1.0])
    assert buf.n_pending == 3
    t, _ = buf.consume(2.0)  # nothing new before 2.0
    assert t.shape == (0,)
    t, _ = buf.consume(3.5)
    np.testing.assert_array_equal(t, [2.0, 2.0, 3.0])

"""Wire format v1: round trips, the documented byte layout, and strict decode errors."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from poyo_rt.stream import wire
from poyo_rt.stream.wire import (
    TickFlags,
    UnsupportedVersionError,
    WireFormatError,
    decode_tick,
    encode_tick,
    tick_from_record,
    tick_to_record,
)


def _tick(n_out: int = 2, dim: int = 3, **kw):
    rng = np.random.default_rng(n_out * 10 + dim)
    args = dict(
        topic="poyo", seq=7, window_end_s=1234.5, newest_spike_s=1234.499,
        output_times_s=1234.5 - np.arange(n_out)[::-1] * 0.01,
        values=rng.standard_normal((n_out, dim)).astype(np.float32),
        counters={"nan_time": 1, "out_of_order": 2, "unknown_unit": 3, "overflow": 0},
        stages_us={"pull": 12.5, "tokenize": 30.0, "forward": 812.25},
        flags=TickFlags.TOKEN_OVERFLOW | TickFlags.STREAM_DISCONNECTED,
        t_send_s=1234.5012,
    )
    args.update(kw)
    return args


@pytest.mark.parametrize("n_out", [0, 1, 2, 5, 17])
@pytest.mark.parametrize("dim", [1, 2, 3, 8])
def test_round_trip_shapes(n_out: int, dim: int) -> None:
    args = _tick(n_out, dim)
    msg = decode_tick(encode_tick(**args), t_recv_s=1234.5)
    assert msg.topic == "poyo" and msg.seq == 7 and msg.version == wire.VERSION
    assert (msg.n_out, msg.dim) == (n_out, dim)
    assert msg.values.dtype == np.float32 and msg.values.shape == (n_out, dim)
    np.testing.assert_array_equal(msg.values, args["values"])
    assert msg.output_times_s.dtype == np.float64
    np.testing.assert_array_equal(msg.output_times_s, args["output_times_s"])
    assert msg.window_end_s == 1234.5 and msg.newest_spike_s == 1234.499 and msg.t_send_s == 1234.5012
    assert msg.counters == args["counters"] and msg.stages_us == args["stages_us"]
    assert msg.has_flag(TickFlags.TOKEN_OVERFLOW) and not msg.has_flag(TickFlags.DEADLINE_MISSED)
    assert msg.t_recv_s == 1234.5
    assert msg.recv_latency_us == pytest.approx(1000.0, rel=1e-6)
    assert not msg.values.flags.writeable  # frozen message, read-only arrays


def test_empty_counters_and_stages_and_nan_spike() -> None:
    frames = encode_tick(**_tick(1, 2, counters={}, stages_us={}, newest_spike_s=math.nan))
    assert len(frames[1]) == wire.FIXED_BYTES + 8
    msg = decode_tick(frames)
    assert msg.counters == {} and msg.stages_us == {}
    assert math.isnan(msg.newest_spike_s) and math.isnan(msg.recv_latency_us) and math.isnan(msg.t_recv_s)


def test_uint64_limits_and_nan_stage() -> None:
    big = 2**64 - 1
    msg = decode_tick(encode_tick(**_tick(seq=big, counters={"x": big}, stages_us={"d2h": math.nan})))
    assert msg.seq == big and msg.counters["x"] == big and math.isnan(msg.stages_us["d2h"])


def test_documented_byte_layout() -> None:
    """The fixed part, the sections and the payload sit where docs/wire-format.md says."""
    args = _tick(2, 3)
    topic, header, payload = encode_tick(**args)
    assert topic == b"poyo"
    magic, version, flags, seq = struct.unpack_from("<4sHHQ", header, 0)
    assert (magic, version, flags, seq) == (b"PYRT", 1, 0b101, 7)
    assert struct.unpack_from("<ddd", header, 16) == (1234.5, 1234.499, 1234.5012)
    n_out, dim, n_c, n_s, hbytes = struct.unpack_from("<IIHHI", header, 40)
    assert (n_out, dim, n_c, n_s) == (2, 3, 4, 3)
    assert hbytes == len(header) == 56 + 8 * 2 + 24 * (4 + 3)
    assert struct.unpack_from("<2d", header, 56) == tuple(args["output_times_s"])
    name, value = struct.unpack_from("<16sQ", header, 72)
    assert (name, value) == (b"nan_time".ljust(16, b"\0"), 1)
    name, value = struct.unpack_from("<16sd", header, 72 + 24 * 4)
    assert (name, value) == (b"pull".ljust(16, b"\0"), 12.5)
    np.testing.assert_array_equal(np.frombuffer(payload, "<f4").reshape(2, 3), args["values"])


def test_values_are_cast_to_float32_c_order() -> None:
    vals = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    msg = decode_tick(encode_tick(**_tick(2, 3, values=vals)))
    np.testing.assert_array_equal(msg.values, vals.astype(np.float32))


def test_accepts_memoryview_frames() -> None:
    frames = [memoryview(f) for f in encode_tick(**_tick())]
    assert decode_tick(frames).seq == 7


@pytest.mark.parametrize("version", [0, 2, 65535])
def test_unknown_version_rejected(version: int) -> None:
    topic, header, payload = encode_tick(**_tick())
    bad = header[:4] + struct.pack("<H", version) + header[6:]
    with pytest.raises(UnsupportedVersionError, match=f"version {version}") as info:
        decode_tick([topic, bad, payload])
    assert info.value.version == version
    assert isinstance(info.value, ValueError)


def test_decode_errors_name_the_problem() -> None:
    topic, header, payload = encode_tick(**_tick(2, 3))
    cases = [
        ([topic, header], "expected 3"),
        ([topic, b"XXXX" + header[4:], payload], "magic"),
        ([topic, header[:5], payload], "too short"),
        ([topic, header[:40], payload], "fixed part"),
        ([topic, header[:-1], payload], "header_bytes|expected"),
        ([topic, header + b"\0" * 24, payload], "header"),
        ([topic, header, payload[:-4]], "payload"),
        ([topic, header, payload + b"\0\0\0\0"], "payload"),
        ([b"\xff\xfe", header, payload], "topic"),
    ]
    for frames, pattern in cases:
        with pytest.raises(WireFormatError, match=pattern):
            decode_tick(frames)
    # header_bytes field inconsistent with the counts
    bad = header[:52] + struct.pack("<I", len(header) + 24) + header[56:]
    with pytest.raises(WireFormatError, match="header_bytes"):
        decode_tick([topic, bad, payload])
    # duplicate stage names
    dup = _tick(counters={}, stages_us={"a": 1.0, "b": 2.0})
    t, h, p = encode_tick(**dup)
    off = 56 + 16 + 24  # second stage entry
    h = h[:off] + b"a".ljust(16, b"\0") + h[off + 16:]
    with pytest.raises(WireFormatError, match="duplicate"):
        decode_tick([t, h, p])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"values": np.zeros(3)}, "values"),
        ({"output_times_s": np.zeros(5)}, "output_times_s"),
        ({"counters": {"x" * 17: 1}}, "counter name"),
        ({"counters": {"": 1}}, "counter name"),
        ({"stages_us": {"é": 1.0}}, "ASCII"),
        ({"counters": {"x": -1}}, "uint64"),
        ({"seq": -1}, "seq"),
        ({"flags": 1 << 16}, "flags"),
        ({"topic": ""}, "topic"),
    ],
)
def test_encode_validation(override: dict, pattern: str) -> None:
    with pytest.raises(WireFormatError, match=pattern):
        encode_tick(**_tick(2, 3, **override))


def test_record_round_trip_through_json() -> None:
    msg = decode_tick(encode_tick(**_tick(3, 2, newest_spike_s=math.nan, stages_us={"h2d": math.nan})),
                      t_recv_s=99.0)
    line = json.dumps(tick_to_record(msg), allow_nan=False)  # strict JSON: NaN written as null
    back = tick_from_record(json.loads(line))
    np.testing.assert_array_equal(back.values, msg.values)
    np.testing.assert_array_equal(back.output_times_s, msg.output_times_s)
    assert back.seq == msg.seq and back.counters == msg.counters and back.t_recv_s == 99.0
    assert math.isnan(back.newest_spike_s) and math.isnan(back.stages_us["h2d"])
    with pytest.raises(WireFormatError, match="seq"):
        rec = tick_to_record(msg)
        del rec["seq"]
        tick_from_record(rec)


def _doc() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "docs" / "wire-format.md").read_text(encoding="utf-8")


def test_doc_decoding_snippet_decodes_encoder_output() -> None:
    """The plain struct/numpy snippet in docs/wire-format.md decodes what encode_tick writes."""
    doc = _doc()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12
    ns: dict = {}
    exec(compile(code, "docs/wire-format.md", "exec"), ns)
    for n_out, dim in [(0, 1), (1, 2), (4, 8)]:
        args = _tick(n_out, dim)
        got = ns["decode"](*encode_tick(**args))
        assert got["seq"] == 7 and got["flags"] == int(args["flags"]) and got["topic"] == "poyo"
        assert got["counters"] == args["counters"] and got["stages_us"] == args["stages_us"]
        np.testing.assert_array_equal(got["values"], args["values"])
        np.testing.assert_array_equal(got["output_times_s"], args["output_times_s"])
    topic, header, payload = encode_tick(**_tick())
    with pytest.raises(ValueError, match="version 2"):
        ns["decode"](topic, header[:4] + b"\x02\x00" + header[6:], payload)


def test_doc_worked_example_bytes() -> None:
    frames = encode_tick(topic="poyo", seq=42, window_end_s=1000.25, newest_spike_s=1000.2493,
                         t_send_s=1000.2508, output_times_s=[1000.25], values=[[0.5, -1.25]],
                         counters={"overflow": 3}, stages_us={"forward": 812.5}, flags=TickFlags.DEADLINE_MISSED)
    block = _doc().split("## Worked example", 1)[1].split("```\n", 2)[1]
    hex_bytes = "".join(line[5:28].replace(" ", "") for line in block.splitlines()[1:])
    assert bytes.fromhex(hex_bytes) == frames[1]
    assert frames[2].hex(" ") in _doc()

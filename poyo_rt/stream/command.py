"""``poyo-rt streams``: the LSL streams this machine sees, and whether ``poyo-rt run`` can decode one.

Setting up a rig, the first questions are which stream to name in the config, whether the decoder reads
it as spikes (events or binned counts, a unit list) and whether the checkpoint knows its units. This
command answers all three before a decoder starts: it lists every visible stream, checks each one's
description exactly as the decoder's inlet does at open (no samples are pulled), marks the stream the
config's ``input`` section selects, and with a checkpoint counts the units the model knows.

Exit codes: 0 the stream ``run`` would decode is visible, unique and readable (and, with a checkpoint,
``run`` would accept its units); 1 otherwise (the reason is printed); 2 a bad config or option.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poyo_rt.config import InputConfig, RunConfig, load_config, with_overrides
from poyo_rt.errors import ConfigError

if TYPE_CHECKING:  # pylsl (loaded by poyo_rt.stream.lsl) is imported only once the command runs
    from poyo_rt.stream.lsl import StreamReport

log = logging.getLogger(__name__)

__all__ = ["add_parser", "cmd_streams"]

EXIT_OK, EXIT_FAILURE = 0, 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``streams`` on ``subparsers``; its handler (``args.func``) is :func:`cmd_streams`."""
    p = subparsers.add_parser(
        "streams",
        help="list the visible LSL streams and check the one `run` would decode",
        description="List every LSL stream visible in the configured scope (by default this machine only), "
        "read each one's description as the decoder would (events or counts, its unit list; no samples are "
        "pulled) and mark with * the stream CONFIG's input section selects. With a checkpoint, count the "
        "stream's units the model knows. Exit codes: 0 the selected stream is there, unique and decodable; "
        "1 it is not (the reason is printed); 2 a bad config or option.",
        epilog="example:  poyo-rt streams configs/default.yaml --checkpoint model.ckpt",
    )
    p.add_argument("config", nargs="?", help="YAML run configuration (default: built-in defaults)")
    p.add_argument("--stream", help="override input.name (LSL stream name)")
    p.add_argument("--checkpoint", help="override model.checkpoint: count the stream units the model knows")
    p.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="listen this long for streams, seconds (liblsl asks every 0.5 s; default: %(default)g)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.set_defaults(func=cmd_streams)
    return p


@dataclass
class _Row:
    report: StreamReport
    selected: bool
    known_units: int | None = None  # units in the checkpoint's vocabulary, when one was given


def _selects(inp: InputConfig, name: str, type_: str, source_id: str) -> bool:
    """Whether ``run`` would resolve this stream (its name, type and source_id filters, those that are set)."""
    return all(want is None or want == got for want, got in
               ((inp.name, name), (inp.type, type_), (inp.source_id, source_id)))


def _verdict(config: RunConfig, rows: list[_Row], vocab_size: int | None) -> tuple[bool, str]:
    """(ok, one sentence) for the stream the config selects."""
    inp = config.input
    asked = ", ".join(f"{k}={v!r}" for k, v in (("name", inp.name), ("type", inp.type),
                                                   ("source_id", inp.source_id)) if v is not None) or "any stream"
    chosen = [r for r in rows if r.selected]
    if not chosen:
        return False, f"no visible stream matches the config's input ({asked})"
    if len(chosen) > 1:
        return False, f"{len(chosen)} streams match the config's input ({asked}); set input.source_id to pick one"
    row = chosen[0]
    rep = row.report
    if rep.problem is not None:
        return False, f"stream {rep.name!r} cannot be decoded: {rep.problem}"
    if row.known_units is None:
        return True, f"stream {rep.name!r} is decodable ({rep.layout}, {len(rep.unit_ids)} units)"
    n = len(rep.unit_ids)
    unknown = n - row.known_units
    if row.known_units == 0:
        return False, (f"stream {rep.name!r}: none of its {n} units is in the checkpoint's vocabulary of {vocab_size}; "
                       "calibrate the checkpoint to this session first (poyo-rt calibrate)")
    if unknown and inp.on_unknown_unit == "error":
        return False, (f"stream {rep.name!r}: {unknown} of its {n} units are not in the checkpoint's vocabulary; "
                       "`run` refuses them (input.on_unknown_unit: error): calibrate (poyo-rt calibrate) or set "
                       "input.on_unknown_unit: drop")
    dropped = f", {unknown} dropped (input.on_unknown_unit: drop)" if unknown else ""
    return True, f"stream {rep.name!r} is decodable ({rep.layout}): {row.known_units} of {n} units known{dropped}"


def _rate(hz: float) -> str:
    return "irregular" if hz <= 0 else f"{hz:g} Hz"


def _read_as(row: _Row) -> str:
    rep = row.report
    if rep.problem is not None:
        return f"not as spikes: {rep.problem}"
    known = "" if row.known_units is None else f", {row.known_units} known to the checkpoint"
    return f"{rep.layout}, {len(rep.unit_ids)} units{known}"


def _print_table(rows: list[_Row], scope: str, wait_s: float) -> None:
    print(f"{len(rows)} LSL stream{'s' if len(rows) != 1 else ''} visible (scope: {scope}; listened {wait_s:g} s)")
    if not rows:
        return
    head = ("", "name", "type", "source_id", "host", "channels", "format", "rate", "read as")
    table = [head] + [("*" if r.selected else "", r.report.name, r.report.type, r.report.source_id, r.report.hostname,
                       str(r.report.n_channels), r.report.channel_format, _rate(r.report.srate_hz), _read_as(r))
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


def cmd_streams(args: argparse.Namespace) -> int:
    from poyo_rt.stream import lsl

    if not 0 < args.wait <= 60:
        raise ConfigError("--wait", f"must be more than 0 and at most 60 seconds, got {args.wait:g}")
    config = with_overrides(load_config(args.config), model={"checkpoint": args.checkpoint},
                            input={"name": args.stream})
    inp = config.input
    lsl.configure_lsl(inp.lsl_scope, inp.lsl_config)
    layout_args = inp.layout_args()
    vocab = None
    if config.model.checkpoint is not None:
        from poyo_rt.train.evaluate import load_decoder

        model, _, _ = load_decoder(config.model.checkpoint)
        vocab = set(model.unit_emb.vocab)
    rows = []
    for info in lsl.list_streams(args.wait):
        selected = _selects(inp, info.name(), info.type(), info.source_id())
        if selected:  # read with the config's settings, exactly as `run` will
            try:
                probe = lsl.inspect_stream(info, **layout_args)
            except ValueError as err:
                raise ConfigError("input", str(err)) from None
        else:  # what the stream is, whatever the config says
            probe = lsl.inspect_stream(info)
        known = None if vocab is None or probe.problem else sum(u in vocab for u in probe.unit_ids)
        rows.append(_Row(probe, selected, known))
    ok, verdict = _verdict(config, rows, None if vocab is None else len(vocab - {"NA"}))  # NA: the padding row
    if args.json:
        print(json.dumps({"scope": inp.lsl_scope, "wait_s": args.wait, "ok": ok, "verdict": verdict,
                          "streams": [{**r.report.to_dict(), "selected": r.selected, "known_units": r.known_units}
                                      for r in rows]}, indent=2))
    else:
        _print_table(rows, inp.lsl_scope, args.wait)
        print(("ok: " if ok else "not ready: ") + verdict)
    return EXIT_OK if ok else EXIT_FAILURE

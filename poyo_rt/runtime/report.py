"""Turns an engine run's latency JSON into a PNG figure and an HTML page a lab can file with a rig.

The JSON is what :meth:`LatencyStats.to_json` writes (schema ``poyo-rt.latency/1``): a summary per stage,
sparse log-spaced histograms, optionally the last raw samples per stage, and run metadata (config, code
version, the engine's misses by cause and missed ticks). The figure shows: per-stage latency histograms,
latency over the last ticks with the deadline, the drop counters, and every missed tick the engine kept over
the whole run; the HTML page adds the percentile table, the deadline misses by cause, the missed ticks' stages
and the resolved configuration.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "poyo-rt.latency/1"
PIPELINE = ("start", "pull", "buffer", "tokenize", "h2d", "forward", "d2h", "publish")
SPANS = ("runner", "e2e", "tick")  # stages that span others (runner: h2d + forward + d2h and the host work around them)
INPUT = ("spike_age",)  # not a stage: the newest spike's age at the window end (e2e = spike_age + input delay + tick)
ACCOUNTING = ("cpu", "cpu_wait", "off_cpu")  # where the loop thread's time went from a tick's start to its send
HOST = ("pack", "launch", "overlap", "sync")  # CUDA: the host's side of the runner call (ForwardResult.host_us)
TABLE_HEAD = ("stage", "ticks", "median ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "deadline misses")

#: What a missed tick is blamed on (:func:`miss_cause`): the stage that exceeded its median the most -> the cause.
MISS_CAUSES = {"start": "late_start", "cpu": "cpu_time", "cpu_wait": "cpu_wait", "off_cpu": "off_cpu",
               "publish": "publish"}
#: Deadline-miss causes (``Engine.miss_causes``) in words.
MISS_CAUSE_NAMES = {"stolen": "stolen by the hypervisor", "late_start": "late start",
                    "cpu_time": "slow work (CPU time)", "cpu_wait": "waiting for a core",
                    "off_cpu": "off the CPU (blocked, or stolen by a hypervisor)", "publish": "publish",
                    "unknown": "unknown"}


def miss_cause(stages: Mapping[str, float], typical: Mapping[str, float], stolen_us: float = -1.0) -> str:
    """The cause of a missed tick. ``"stolen"`` when a hypervisor took the loop's core for at least half of
    the time the tick ran over its median (``typical["tick"]``; ``stolen_us``: steal time since the previous
    tick ended, -1 = unknown, :class:`~poyo_rt.runtime.threads.StealClock`); else, of its stages (µs) that
    have a typical value (µs, a median), the one that exceeded it the most (:data:`MISS_CAUSES`);
    ``"unknown"`` when none can be compared."""
    over = stages.get("tick", math.nan) - typical.get("tick", math.nan)
    if stolen_us > 0 and not math.isnan(over) and stolen_us >= 0.5 * over:
        return "stolen"
    excess = {cause: stages[st] - typical[st] for st, cause in MISS_CAUSES.items()
              if st in typical and not math.isnan(stages.get(st, math.nan))}
    return max(excess, key=excess.__getitem__) if excess else "unknown"


def miss_timeline(doc: dict) -> list[tuple[int, float, str]]:
    """``(index, tick µs, cause)`` of each missed tick among a latency log's last raw samples (``recent_us``):
    the cause the engine logged for that tick (``meta.missed_ticks``, which knows the steal time), else judged
    against the whole run's medians; empty when the log has no deadline, no raw samples, or samples of unequal
    length (a stage not recorded at every tick)."""
    summary, recent, meta = doc["summary"], doc.get("recent_us") or {}, doc.get("meta") or {}
    deadline = summary.get("deadline_us")
    stages = [st for st in ("tick", *MISS_CAUSES) if recent.get(st)]
    if not deadline or "tick" not in stages or len({len(recent[st]) for st in stages}) != 1:
        return []
    typical = {st: summary["stages"][st]["median_us"] for st in stages if st in MISS_CAUSES}
    first = meta.get("ticks", 0) - len(recent["tick"])  # the engine's index of the first raw sample
    logged = {m.get("index"): m.get("cause") for m in meta.get("missed_ticks") or []} if first >= 0 else {}
    out = []
    for i, tick_us in enumerate(recent["tick"]):
        if tick_us is not None and tick_us > deadline:
            values = {st: math.nan if recent[st][i] is None else recent[st][i] for st in stages}
            out.append((i, float(tick_us), logged.get(first + i) or miss_cause(values, typical)))
    return out


def describe_miss_causes(causes: dict[str, int]) -> str:
    """``"late start 2, slow work (CPU time) 40"``: the misses by cause, most first ("" when none)."""
    ranked = sorted(((n, c) for c, n in causes.items() if n), key=lambda nc: (-nc[0], nc[1]))
    return ", ".join(f"{MISS_CAUSE_NAMES.get(c, c)} {n}" for n, c in ranked)


MISSED_HEAD = ("tick #", "at s", "tick ms", "cause", "start", "cpu", "cpu_wait", "off_cpu", "publish", "stolen",
               "prev tick", "prepare", "pre-tick")


def missed_ticks_table(doc: dict) -> list[list[str]]:
    """Rows of the missed ticks the engine logged (``meta.missed_ticks``, the last ``MISS_LOG``): tick index, seconds
    since the run began, tick ms, cause in words, the stages a cause is judged on and the steal time, then what
    ran between the previous tick's send and this tick (that tick, the preparation, the pre-tick), ms (columns
    :data:`MISSED_HEAD`; "-" where a value was not recorded or did not run)."""
    rows = []
    for miss in (doc.get("meta") or {}).get("missed_ticks") or []:
        ms = lambda key: "-" if miss.get(key) is None else f"{miss[key] / 1e3:.2f}"  # noqa: E731
        rows.append([str(miss.get("index", "-")), f"{miss.get('at_s', math.nan):.3f}", ms("tick"),
                     MISS_CAUSE_NAMES.get(miss.get("cause"), str(miss.get("cause"))),
                     *(ms(st) for st in MISS_CAUSES), ms("stolen_us"), ms("prev_tick_us"), ms("prepare_us"),
                     ms("pre_tick_us")])
    return rows


def load_run(path: str | Path) -> dict[str, Any]:
    """Read and check a latency JSON file; a clear ``ValueError`` if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a poyo-rt latency report (expected schema {SCHEMA!r}, "
                         f"got {doc.get('schema') if isinstance(doc, dict) else type(doc).__name__!r})")
    return doc


def histogram_arrays(doc: dict, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """``(bin centres µs, counts)`` of a stage's in-range histogram bins (empty arrays if none)."""
    meta = doc["summary"]["histogram"]
    sparse = doc.get("histograms", {}).get(stage, {})
    n_bins = int(round(math.log10(meta["hi_us"] / meta["lo_us"]) * meta["bins_per_decade"]))
    idx = np.array([int(i) for i in sparse if 1 <= int(i) <= n_bins], dtype=np.int64)
    if idx.size == 0:
        return np.empty(0), np.empty(0)
    counts = np.array([sparse[str(i)] for i in idx], dtype=np.float64)
    centres = meta["lo_us"] * 10 ** ((idx - 0.5) / meta["bins_per_decade"])
    order = np.argsort(centres)
    return centres[order], counts[order]


#: Marker colours of the miss causes, the same in every panel (C0-C4 draw the latency lines).
_CAUSE_COLOURS = dict(zip(MISS_CAUSE_NAMES, ("C5", "C6", "C7", "C8", "C9", "k", "gold")))


def _mark_misses(ax: Any, points: Sequence[tuple[float, float, str]], label: str = "{}") -> None:
    """Scatter missed ticks ``(x, latency ms, cause)`` on ``ax``, one colour and legend entry per cause."""
    for cause in sorted({c for _, _, c in points}):
        xy = [(x, y) for x, y, c in points if c == cause]
        ax.scatter(*zip(*xy), s=18, marker="x", color=_CAUSE_COLOURS.get(cause, "k"), zorder=3,
                   label=label.format(MISS_CAUSE_NAMES.get(cause, cause)))


def plot_run(doc: dict, png_path: str | Path, title: str | None = None) -> Path:
    """Write the four-panel latency figure as PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    stages = [s for s in (*PIPELINE, *SPANS, *INPUT, *ACCOUNTING, *HOST) if summary["stages"].get(s, {}).get("count")]
    fig, grid = plt.subplots(2, 2, figsize=(14, 9))
    axes = grid.ravel()

    ax = axes[0]
    for stage in stages:  # re-binned to 20 bins a decade, zeros included, so shapes read right
        centres, counts = histogram_arrays(doc, stage)
        if centres.size:
            lo, hi = np.floor(np.log10(centres.min()) * 20), np.ceil(np.log10(centres.max()) * 20) + 1
            edges = 10 ** (np.arange(lo, hi + 1) / 20)
            coarse, _ = np.histogram(centres, bins=edges, weights=counts)
            # spans and the input's age dashed, the thread's accounting dotted, the CUDA call's host side
            # dash-dotted: more stages than colours
            style = "-" if stage in PIPELINE else ":" if stage in ACCOUNTING else "-." if stage in HOST else "--"
            ax.stairs(coarse / counts.sum(), edges / 1e3, label=stage, linestyle=style)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of ticks")
    ax.set_title("latency per stage")
    ax.legend(fontsize=8)

    ax = axes[1]
    recent = doc.get("recent_us", {})
    for stage in ("tick", "e2e", "spike_age", "forward", "start"):
        samples = np.asarray(recent.get(stage) or [], dtype=np.float64)
        if samples.size:
            ax.plot(np.arange(samples.size), samples / 1e3, lw=0.8, label=stage)
    if summary.get("deadline_us"):
        ax.axhline(summary["deadline_us"] / 1e3, color="k", ls="--", lw=1, label="deadline")
    _mark_misses(ax, [(i, t / 1e3, c) for i, t, c in miss_timeline(doc)], label="missed: {}")
    ax.set_xlabel("tick (most recent run of ticks)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("latency over the last ticks")
    ax.legend(fontsize=7, framealpha=0.6)

    ax = axes[2]
    counters = summary.get("counters", {})
    names = sorted(counters)
    ax.barh(names, [counters[n] for n in names], color="tab:red")
    ax.set_xlim(0, max([1, *counters.values()]) * 1.05)  # all zero: an axis from 0, not around it
    if not any(counters.values()):
        ax.text(0.5, 0.5, "nothing dropped", ha="center", va="center", transform=ax.transAxes)
    misses = summary["stages"].get("tick", {}).get("deadline_misses")
    ax.set_title(f"drops and counters (deadline misses: {misses if misses is not None else 'n/a'})")
    ax.set_xlabel("count")

    ax = axes[3]  # every missed tick the engine kept, over the whole run
    missed = (doc.get("meta") or {}).get("missed_ticks") or []
    _mark_misses(ax, [(m["at_s"], m["tick"] / 1e3, m.get("cause", "unknown")) for m in missed
                      if m.get("at_s") is not None and m.get("tick") is not None])
    if summary.get("deadline_us"):
        ax.axhline(summary["deadline_us"] / 1e3, color="k", ls="--", lw=1, label="deadline")
    if missed:
        ax.legend(fontsize=7, framealpha=0.6)
    else:
        ax.text(0.5, 0.5, "no missed ticks logged", ha="center", va="center", transform=ax.transAxes)
    duration = (doc.get("meta") or {}).get("duration_s")
    ax.set_xlim(0, max([float(duration or 0), *(m.get("at_s") or 0 for m in missed)]) * 1.02 or 1)
    ax.set_xlabel("time since the run began (s)")
    ax.set_ylabel("tick latency (ms)")
    ax.set_title(f"missed ticks over the run ({len(missed)} logged)")
    fig.suptitle(title or f"poyo-rt run: {summary.get('ticks', 0)} ticks")
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def percentile_table(doc: dict) -> list[list[str]]:
    """Rows of stage, count, median, p90, p99, p99.9, max (ms), misses (columns: :data:`TABLE_HEAD`)."""
    rows = []
    for stage, st in doc["summary"]["stages"].items():
        if not st.get("count"):
            continue
        rows.append([stage, str(st["count"])] + [
            f"{st[k] / 1e3:.3f}" if st.get(k) is not None else "-"
            for k in ("median_us", "p90_us", "p99_us", "p99_9_us", "max_us")
        ] + [str(st.get("deadline_misses", "-"))])
    return rows


COMPARE_HEAD = ("stage", "median ms", "base median", "x base", "p99 ms", "base p99", "x base")


def compare_table(doc: dict, base: dict) -> list[list[str]]:
    """Rows of stage, median and p99 (ms) of ``doc`` beside ``base``'s, each with ``base / doc`` (above 1: this run
    is faster; columns :data:`COMPARE_HEAD`), for the stages both runs recorded."""
    rows = []
    ours, theirs = doc["summary"]["stages"], base["summary"]["stages"]
    for stage, st in ours.items():
        other = theirs.get(stage, {})
        if not st.get("count") or not other.get("count"):
            continue
        row = [stage]
        for key in ("median_us", "p99_us"):
            a, b = st.get(key), other.get(key)
            ratio = f"{b / a:.2f}" if a and b and a > 0 else "-"
            row += [f"{a / 1e3:.3f}" if a is not None else "-", f"{b / 1e3:.3f}" if b is not None else "-", ratio]
        rows.append(row)
    return rows


def describe_misses(doc: dict) -> str:
    """``"130 of 29,995 ticks (0.43 %)"``: a run's deadline misses ("no deadline" when it had none)."""
    tick = doc["summary"]["stages"].get("tick", {})
    n, count = tick.get("deadline_misses"), tick.get("count") or 0
    if n is None:
        return "no deadline"
    return f"{n} of {count:,} ticks ({100 * n / count:.2f} %)" if count else f"{n} of 0 ticks"


def describe_preparation(counters: dict[str, int]) -> str:
    """One line on the preparation between ticks from :meth:`Runner.counters` ("" when none was made)."""
    if not counters.get("prepared"):
        return ""
    return (f"the next tick's encoder attention prepared between ticks {counters['prepared']} times, used by "
            f"{counters.get('prepared_used', 0)} of {counters.get('ticks', 0)} ticks")


def _runner_section(runner: dict) -> str:
    """HTML for the forward path's counters (``meta.runner``: the CPU key/value cache's, or the CUDA graphs
    launched ahead), or nothing."""
    if not runner:
        return ""
    line = describe_preparation(runner)
    line = f"<p>{html.escape(line)}</p>" if line else ""
    return f"<h2>Forward path</h2>{line}<pre>{html.escape(json.dumps(runner, indent=1))}</pre>\n"


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of a header row and text rows (escaped)."""
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)  # noqa: E731
    return f"<table><tr>{cells(head, 'th')}</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) + "</table>"


def describe_steal(doc: dict) -> str:
    """``"hypervisor steal on the loop's cores: 110 ms over the run"`` ("" where the log has none)."""
    stolen = (doc.get("meta") or {}).get("stolen_ms")
    return "" if stolen is None else f"hypervisor steal on the loop's cores: {stolen:.0f} ms over the run"


def _misses_section(doc: dict) -> str:
    """HTML for the deadline misses by cause (``meta.miss_causes``) and the missed ticks the engine logged
    (``meta.missed_ticks``), or nothing (logs of older versions)."""
    meta = doc.get("meta", {})
    causes = meta.get("miss_causes")
    if causes is None:
        return ""
    misses = doc["summary"]["stages"].get("tick", {}).get("deadline_misses", sum(causes.values()))
    line = describe_miss_causes(causes) or "none"
    steal = describe_steal(doc)
    out = (f"<h2>Deadline misses by cause</h2><p>{misses} missed: {html.escape(line)}. Each miss is counted as "
           "stolen when the hypervisor took the loop's core for at least half the time the tick ran over its "
           "median (Linux's steal time, in 10 ms steps), else under what exceeded its median the most: the "
           "tick's start, the loop thread's CPU time, its wait for a core, its time off the CPU, or the "
           f"publish.{' ' + html.escape(steal.capitalize()) + '.' if steal else ''}</p>\n")
    rows = missed_ticks_table(doc)
    if rows:
        out += (f"<h3>The missed ticks ({len(rows)}, the most recent the engine kept), ms</h3>"
                f"{_html_table(MISSED_HEAD, rows)}\n")
    return out


def _baseline_section(doc: dict, base: dict | None, base_name: str) -> str:
    """HTML for the run against a baseline run (:func:`compare_table`), or nothing."""
    if base is None:
        return ""
    table = _html_table(COMPARE_HEAD, compare_table(doc, base))
    causes = describe_miss_causes((base.get("meta") or {}).get("miss_causes") or {})
    line = f"<p>Deadline misses: {describe_misses(doc)}, against {describe_misses(base)} in the baseline"
    line += f" (by cause: {html.escape(causes)}).</p>" if causes else ".</p>"
    return (f"<h2>Against the baseline {html.escape(base_name)}</h2><p>x base: the baseline's latency over this "
            f"run's (above 1: this run is faster).</p>{table}{line}\n")


def write_html(doc: dict, html_path: str | Path, png_path: str | Path, base: dict | None = None,
               base_name: str = "") -> Path:
    """A self-contained HTML page: the figure (embedded), the percentile table, the misses by cause, the run
    against a baseline run (``base``, a latency log too; named ``base_name``) if given, counters, the forward
    path's counters (when the run log has them), config."""
    png = base64.b64encode(Path(png_path).read_bytes()).decode()
    table = _html_table(TABLE_HEAD, percentile_table(doc))
    meta = doc.get("meta", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>poyo-rt latency report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} pre{{background:#f6f6f6;padding:1em}}</style>
</head><body><h1>poyo-rt latency report</h1>
<p>code version {html.escape(str(meta.get('code_version', 'unknown')))}, device {html.escape(str(meta.get('device', '?')))},
{doc['summary'].get('ticks', 0)} ticks</p>
<img src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Percentiles</h2>{table}
{_misses_section(doc)}{_baseline_section(doc, base, base_name)}<h2>Counters</h2><pre>{html.escape(json.dumps(doc['summary'].get('counters', {}), indent=1))}</pre>
{_runner_section(meta.get('runner') or {})}<h2>Configuration</h2><pre>{html.escape(json.dumps(meta.get('config', {}), indent=1))}</pre>
</body></html>"""
    html_path = Path(html_path)
    html_path.write_text(page)
    return html_path

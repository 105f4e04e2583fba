"""Two "sessions" cut from the real M1 recording, for calibration experiments (tools/calibrate_m1.sh).

A lab meets a new session with units the decoder has never seen: electrodes drift, units appear and vanish, and
spike sorting names them afresh. The one real recording here (../shared/data/m1_stevenson_2011.mat, 171 units,
776 s) is cut to stand in for that:

* session A: the first ``--split-a`` of the recording, a random ``--units`` of the 171 units, their ids as read;
* session B: the rest of the recording, another random ``--units`` (most of them also in A, as on a following
  day), every id renamed (``m1_dayB/n000`` ...) in a shuffled order, so nothing ties a B unit to an A unit, and
  its own session id.

Spikes are placed inside their 50 ms bins with ``--spike-seed`` (the MAT reader's placement), and each file keeps
the bin layout, so training redraws them every epoch as it does for the MAT file itself.

    python tools/m1_two_sessions.py --out runs/cal      # writes runs/cal/dayA.npz and runs/cal/dayB.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from poyo_rt.replay import read_session
from poyo_rt.replay.session import Session


def unit_subset(session: Session, keep: np.ndarray, unit_ids: list[str], session_id: str) -> Session:
    """``session`` restricted to the units ``keep`` (indices into its unit list), renamed ``unit_ids``."""
    new_index = np.full(session.n_units, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    mapped = new_index[session.spike_units]
    kept = mapped >= 0
    return Session(session_id=session_id, unit_ids=unit_ids, spike_times_s=session.spike_times_s[kept],
                   spike_units=mapped[kept], behavior_times_s=session.behavior_times_s, behavior=session.behavior,
                   behavior_labels=session.behavior_labels,
                   metadata={**session.metadata, "derived": "tools/m1_two_sessions.py"})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/m1_stevenson_2011.mat", help="the M1 MAT file")
    p.add_argument("--out", default="runs/cal", help="folder for dayA.npz and dayB.npz")
    p.add_argument("--split-a", type=float, default=0.6, help="fraction of the recording that is session A")
    p.add_argument("--units", type=int, default=128, help="units in each session (of 171)")
    p.add_argument("--seed", type=int, default=0, help="seed of the unit subsets and of B's renaming")
    p.add_argument("--spike-seed", type=int, default=0, help="seed of the spike placement inside bins")
    args = p.parse_args()

    full = read_session(args.data, seed=args.spike_seed)
    if not 0 < args.units <= full.n_units:
        p.error(f"--units must be in 1..{full.n_units}, got {args.units}")
    rng = np.random.default_rng(args.seed)
    first, second = full.split(args.split_a)
    keep_a = np.sort(rng.choice(full.n_units, args.units, replace=False))
    keep_b = rng.permutation(rng.choice(full.n_units, args.units, replace=False))  # shuffled: order says nothing
    day_a = unit_subset(first, keep_a, [full.unit_ids[i] for i in keep_a], "m1_dayA")
    day_b = unit_subset(second, keep_b, [f"m1_dayB/n{k:03d}" for k in range(args.units)], "m1_dayB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for session in (day_a, day_b):
        path = session.to_npz(out / f"{session.session_id.removeprefix('m1_')}.npz")
        print(f"{path}: {session}")
    shared = len(set(keep_a) & set(keep_b))
    print(f"{shared} of B's {args.units} units are also recorded in A (under other ids)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

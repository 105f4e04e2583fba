#!/usr/bin/env bash
# How long a calibration block does a lab need? `poyo-rt calibrate` (defaults: the new units' and session's
# embeddings, 600 steps) on the first SECONDS of session B only, each scored on the same held-out range (B's
# second half), against the uncalibrated model. Needs tools/calibrate_m1.sh's base checkpoint and sessions.
# Results: docs/training.md ("How long a calibration block?").
#
#   nohup bash tools/calibrate_amount.sh > /tmp/calibrate_amount.log 2>&1 &
#   SECONDS_LIST="30 60" OUT=runs/cal bash tools/calibrate_amount.sh
#
# The whole block trains (--split 1 --val-fraction 0: no validation slice cut from a 15-second block; the last
# step is kept), so the rows differ from calibrate_m1.sh's, which validated on the last 10 % of its 155 s.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/cal}
SECONDS_LIST=${SECONDS_LIST:-"15 30 60 120"}
THREADS=${THREADS:-2}
for f in "$OUT/base.ckpt" "$OUT/dayB.npz"; do
  [ -f "$f" ] || { echo "calibrate_amount: $f missing: run tools/calibrate_m1.sh first" >&2; exit 2; }
done

for s in $SECONDS_LIST; do
  python - "$OUT/dayB.npz" "$s" "$OUT/dayB_${s}s.npz" <<'EOF'
import sys
from poyo_rt.replay import read_session
session = read_session(sys.argv[1])
first = session.slice(session.start_s, session.start_s + float(sys.argv[2]))
first.to_npz(sys.argv[3])
print(f"{sys.argv[3]}: {first!r}")
EOF
  t=$(date +%s)
  poyo-rt calibrate "$OUT/base.ckpt" "$OUT/dayB_${s}s.npz" --out "$OUT/cal_${s}s.ckpt" --json "$OUT/cal_${s}s.json" \
      --split 1 --val-fraction 0 --threads "$THREADS" --end-weight 5
  echo "calibrate on ${s} s: $(( $(date +%s) - t )) s"
  poyo-rt evaluate "$OUT/cal_${s}s.ckpt" "$OUT/dayB.npz" --split 0.5 --threads "$THREADS" \
      --json "$OUT/eval_${s}s.json"
done

python - "$OUT" $SECONDS_LIST <<'EOF'
import json, os, sys
out, amounts = sys.argv[1], sys.argv[2:]
print(f"{'calibration block':20s} causal R² (x / y / mean)      offline   calibrate wall s")
if os.path.exists(f"{out}/uncalibrated.json"):  # written by calibrate_m1.sh
    print(f"{'none (uncalibrated)':20s} {json.load(open(f'{out}/uncalibrated.json'))['heldout_r2_mean']:.4f}")
for s in amounts:
    ev, cal = json.load(open(f"{out}/eval_{s}s.json")), json.load(open(f"{out}/cal_{s}s.json"))
    c = ev["causal"]
    off = ev.get("offline", {}).get("r2_mean", float("nan"))
    print(f"{s + ' s':20s} {c['r2'][0]:.4f} / {c['r2'][1]:.4f} / {c['r2_mean']:.4f}   {off:.4f}   {cal['wall_s']:.0f}")
EOF

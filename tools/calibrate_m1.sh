#!/usr/bin/env bash
# Calibration on real data: a POYO trained on one "session" of the M1 recording decodes another session, whose
# units it has never seen, after `poyo-rt calibrate` learns their embeddings from its first half; against the
# same model before calibration, fine-tuned whole, and trained from scratch on the same data. Results:
# docs/training.md ("Calibrating to a new session").
#
#   nohup bash tools/calibrate_m1.sh > /tmp/calibrate_m1.log 2>&1 &
#   OUT=runs/calx BASE_MIN=40 bash tools/calibrate_m1.sh
#
# Sessions (tools/m1_two_sessions.py): A = the first 60 % of the recording (466 s), 128 random units under their
# own ids; B = the last 40 % (311 s), another 128 random units (98 of them also in A), all renamed and shuffled.
# Base model: train_m1.sh's recipe on A (all of it; its last 10 % validates), BASE_MIN minutes.
# On B: the first half (155 s, its last 10 % validating) calibrates or trains; the second half (155 s) is held
# out and scored causally, one query at each window end, as the engine decodes.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/m1_stevenson_2011.mat}
OUT=${OUT:-runs/cal}
BASE_MIN=${BASE_MIN:-20}        # base training budget, minutes
SCRATCH_MIN=${SCRATCH_MIN:-10}  # the from-scratch baseline's budget on B, minutes (more than calibration takes)
THREADS=${THREADS:-2}
mkdir -p "$OUT"
stamp() { date +%s; }
recipe=(--dim 64 --depth 4 --dim-head 32 --cross-heads 1 --self-heads 4 --latents-per-step 16 --latent-step 0.125
        --window 1.0 --batch-size 32 --lr 2e-3 --warmup-steps 100 --weight-decay 1e-4 --grad-clip 1.0
        --loss-targets all --end-weight 5 --val-tick-hz 5 --log-every 100 --threads "$THREADS" --seed 0)

python tools/m1_two_sessions.py --data "$DATA" --out "$OUT"

if [ ! -f "$OUT/base.ckpt" ]; then
  t=$(stamp)
  poyo-rt train "$OUT/dayA.npz" --out "$OUT/base.ckpt" --json "$OUT/base.json" "${recipe[@]}" \
      --steps 5000 --split 1 --val-fraction 0.1 --val-every 500 --time-budget-min "$BASE_MIN"
  echo "base: $(( $(stamp) - t )) s"
fi

echo "before calibration (the new rows as initialised):"
python - "$OUT" <<'EOF'
import json, sys
import torch
from poyo_rt.replay import read_session
from poyo_rt.train import evaluate_causal
from poyo_rt.train.calibrate import warm_start
torch.manual_seed(0)
out = sys.argv[1]
session = read_session(f"{out}/dayB.npz")
start = warm_start(f"{out}/base.ckpt", [session])
t_split = session.start_s + 0.5 * session.duration_s
res = evaluate_causal(start.model, session, norm=start.norm, t_start_s=t_split)
print(f"held-out causal R² {res['r2_mean']:.4f} ({', '.join(f'{l} {r:.4f}' for l, r in zip(res['labels'], res['r2']))})")
json.dump({"heldout_r2_mean": res["r2_mean"], "r2": list(res["r2"])}, open(f"{out}/uncalibrated.json", "w"))
EOF

t=$(stamp)
poyo-rt calibrate "$OUT/base.ckpt" "$OUT/dayB.npz" --out "$OUT/cal_new.ckpt" --json "$OUT/cal_new.json" \
    --split 0.5 --val-tick-hz 5 --threads "$THREADS" --end-weight 5
echo "calibrate (embeddings of the new units and session, defaults): $(( $(stamp) - t )) s"

t=$(stamp)
poyo-rt calibrate "$OUT/base.ckpt" "$OUT/dayB.npz" --out "$OUT/cal_all.ckpt" --json "$OUT/cal_all.json" \
    --trainable all --lr 2e-3 --split 0.5 --val-tick-hz 5 --threads "$THREADS" --end-weight 5
echo "calibrate --trainable all (every weight): $(( $(stamp) - t )) s"

t=$(stamp)
poyo-rt train "$OUT/dayB.npz" --out "$OUT/scratch.ckpt" --json "$OUT/scratch.json" "${recipe[@]}" \
    --steps 5000 --split 0.5 --val-fraction 0.1 --val-every 250 --time-budget-min "$SCRATCH_MIN"
echo "from scratch on B's calibration half: $(( $(stamp) - t )) s"

python - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
print(f"{'model on B (held-out half)':44s} causal R²   steps  wall s")
for name, what in (("uncalibrated", "base, new rows as initialised"), ("cal_new", "calibrate (new embeddings)"),
                   ("cal_all", "calibrate --trainable all"), ("scratch", "trained from scratch on B")):
    d = json.load(open(f"{out}/{name}.json"))
    steps = len(d.get("losses", [])) or "-"
    wall = f"{d['wall_s']:.0f}" if "wall_s" in d else "-"
    print(f"{what:44s} {d['heldout_r2_mean']:9.4f}  {steps!s:>6}  {wall:>6}")
EOF

#!/usr/bin/env bash
# How poyo_rt/assets/default.ckpt is made (see poyo_rt/assets/README.md): a small POYO trained on the synthetic
# reaching session generate_session(n_units=64, duration_s=300, seed=0). The first 80 % (0..240 s) trains it (the
# last 10 % of that validates), the last 20 % (240..300 s) is held out: a demo that replays that tail of the SAME
# generate_session call decodes neurons the model knows, on movements it never saw. About 2 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-poyo_rt/assets/default.ckpt}
start=$(date +%s)
python -m poyo_rt.train.command train synthetic \
    --synthetic-seed 0 --synthetic-duration 300 --synthetic-units 64 \
    --out "$OUT" --json "${JSON:-runs/default/train.json}" --seed 0 \
    --dim 64 --depth 2 --dim-head 32 --cross-heads 1 --self-heads 2 --latents-per-step 8 --latent-step 0.125 \
    --window 1.0 --steps 1200 --batch-size 16 --lr 3e-3 --warmup-steps 50 --weight-decay 1e-4 --grad-clip 1.0 \
    --loss-targets all --end-weight 3 --split 0.8 --val-fraction 0.1 --val-every 200 --val-tick-hz 10 \
    --log-every 100 --threads 2 --device cpu
echo "wall time: $(( $(date +%s) - start )) s"
ls -l "$OUT"

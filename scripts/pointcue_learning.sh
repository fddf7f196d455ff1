#!/usr/bin/env bash
# The PointCue learning recipe from the command line (the same as
# tests/eval/test_pointcue_learning.py): collect expert demos, train a TTM policy and the
# memory-less TTM on them with the same budget, roll each out 50 times, print the success
# rates with 95% Wilson intervals.
#
#   bash scripts/pointcue_learning.sh [OUT_DIR] [SEED]      # default runs/pointcue_learning 0
#
# SEED seeds training (torch init and data order); the demos and rollout episodes are fixed.
# While the point is held the expert's labels already point to the cued pad (PointCueExpert).
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
OUT="${1:-runs/pointcue_learning}"
SEED="${2:-0}"
PY=.venv/bin/python
DATA="$OUT/point_cue.hdf5"

.venv/bin/ttm-collect --task PointCue --episodes 200 --image-size 32 --out "$DATA" --overwrite


for policy in ttm ttm-memoryless; do
  rm -rf "$OUT/$policy"
  /usr/bin/time -f "$policy training: %e s wall, %U s user CPU" \
    .venv/bin/ttm-train --dataset "$DATA" --out "$OUT/$policy" --policy "$policy" \
    --steps 500 --seed "$SEED" --threads 1 --valid-every 0 --save-every 500 --log-every 50
done

"$PY" - "$OUT" "$DATA" <<'EOF'
import json, sys
import h5py
import torch
from envs.rollout import format_result, rollout
from ttm_policy import TTMPolicy
torch.set_num_threads(1)
out, data = sys.argv[1], sys.argv[2]
with h5py.File(data, "r") as f:
    env_args = json.loads(f["data"].attrs["env_args"])
results = {}
for policy in ("ttm", "ttm-memoryless"):
    trained = TTMPolicy.from_pretrained(f"{out}/{policy}/checkpoints/last")
    r = rollout(trained, env_args, episodes=50, seed=0)
    results[policy] = {k: v for k, v in r.items() if k != "episodes"}
    print(format_result(policy, r), flush=True)
with open(f"{out}/results.json", "w") as f:
    json.dump(results, f, indent=2)
EOF

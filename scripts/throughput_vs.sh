#!/usr/bin/env bash
# Training throughput of this tree against another commit, in one run on this machine:
#
#   bash scripts/throughput_vs.sh COMMIT DATASET [OUT]
#
# Unpacks COMMIT (git archive) beside OUT and runs each tree's `ttm-bench train-throughput`
# on DATASET, alternating old / new twice so that load on a shared machine hits both, with
# one torch thread, TTM core only:
#   - "default": each tree's default training configuration (what `ttm-train` with no flags
#     trains there);
#   - "same model": the paper-sized model at batch 16 in both (`--preset gpu --batch-size 16
#     --crop 1`: no crop; in a tree from before presets, such as ed09243, its default model
#     is that model), so the ratio is the trainer's and the code's, not the model's.
# Prints frames/s (real time steps trained on per second) of each and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT="$1"
DATA="$(realpath "$2")"
OUT="$(realpath -m "${3:-runs/throughput_vs}")"
OLD="$OUT/tree_$COMMIT"
PY="$PWD/.venv/bin/python"
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
mkdir -p "$OLD"
git archive "$COMMIT" | tar -x -C "$OLD"

bench() {  # tree label extra-args...
  local tree="$1" label="$2"
  shift 2
  (cd "$tree" && "$PY" -m eval.bench train-throughput --dataset "$DATA" --cores ttm \
    --steps 6 --threads 1 --out "$OUT/$label" "$@" > "$OUT/$label.log" 2>&1)
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))['results']['ttm']; print(r['frames_per_s'])" \
    "$OUT/$label/train_throughput.json"
}

SAME=(--preset gpu --batch-size 16 --crop 1)
OLD_SAME=("${SAME[@]}")
if ! grep -q "preset" "$OLD/eval/bench/train_throughput.py"; then
  OLD_SAME=()  # before presets: the default model was the paper-sized one
fi
declare -A fps
for round in 1 2; do
  fps[old_default_$round]=$(bench "$OLD" "old_default_$round")
  fps[new_default_$round]=$(bench "$PWD" "new_default_$round")
  fps[old_same_$round]=$(bench "$OLD" "old_same_$round" "${OLD_SAME[@]}")
  fps[new_same_$round]=$(bench "$PWD" "new_same_$round" "${SAME[@]}")
done

"$PY" - "$COMMIT" "$OUT" "${fps[old_default_1]}" "${fps[old_default_2]}" "${fps[new_default_1]}" \
  "${fps[new_default_2]}" "${fps[old_same_1]}" "${fps[old_same_2]}" "${fps[new_same_1]}" \
  "${fps[new_same_2]}" <<'EOF'
import json, statistics, sys
commit, out, *v = sys.argv[1:]
v = [float(x) for x in v]
rows = {"default": (v[0:2], v[2:4]), "same model": (v[4:6], v[6:8])}
report = {}
for name, (old, new) in rows.items():
    o, n = statistics.mean(old), statistics.mean(new)
    report[name] = {"old_frames_per_s": old, "new_frames_per_s": new, "ratio": n / o}
    print(f"{name:>10}: {commit} {o:7.1f} frames/s, this tree {n:7.1f} frames/s, ratio {n / o:.2f}x")
json.dump({"against": commit, **report}, open(f"{out}/throughput_vs.json", "w"), indent=2)
EOF

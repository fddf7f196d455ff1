#!/usr/bin/env bash
# The Meta-World MT10 table of docs/results.md, resumable (finished cells are reused):
#
#   bash scripts/mt10.sh [OUT]            # default OUT: runs/mt10
#
# For each of the ten MT10 tasks (envs.registry.METAWORLD_MT10): Meta-World's own scripted policy
# collects EPISODES demonstrations (the task's recipe: the `corner` and `behindGripper`
# cameras at 64 px, hand position and gripper as proprioception), and every core of CORES
# trains on them at the same STEPS and is evaluated over 50 seeded episodes
# (`ttm-bench results --task MW-<task> --delays`; the single-task table is OUT/results.md).
# Then one multi-task TTM trains on all the tasks' files together (a learned per-task FiLM)
# for MULTI_STEPS, by default STEPS times the number of tasks: the same total training as
# the single-task TTMs at the same batch, and `ttm-eval` with no --task evaluates it on every task
# (OUT/multitask/eval/eval.json: per-task success and their mean).
#
# Environment: STEPS (default: the recipe's), EPISODES (default 100), CORES (default "ttm
# ttm-memoryless lstm"), MULTI_STEPS, THREADS (torch threads per job, default 1),
# EVAL_EPISODES (default 50), TASKS (default the ten; a smoke run: TASKS="reach push"
# EPISODES=4 STEPS=2 EVAL_EPISODES=1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/mt10}"
EPISODES="${EPISODES:-100}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
read -r -a CORES <<< "${CORES:-ttm ttm-memoryless lstm}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" WANDB_MODE="${WANDB_MODE:-offline}"
export OMP_NUM_THREADS="${THREADS:-1}"
BIN=.venv/bin
TASKS="${TASKS:-$("$BIN/python" -c "from envs.registry import METAWORLD_MT10; print(' '.join(METAWORLD_MT10))")}"
STEPS_FLAG=()
[ -n "${STEPS:-}" ] && STEPS_FLAG=(--steps "$STEPS")

for t in $TASKS; do
  "$BIN/ttm-bench" results --task "MW-$t" --delays --cores "${CORES[@]}" \
    --episodes "$EPISODES" --eval-episodes "$EVAL_EPISODES" "${STEPS_FLAG[@]}" --out "$OUT"
done

# The multi-task TTM: the ten demonstration files, one policy told the task by name.
STEPS_ONE="${STEPS:-$("$BIN/python" -c "from train.presets import preset; print(preset('cpu').steps)")}"
N_TASKS=$(wc -w <<< "$TASKS")
MULTI_STEPS="${MULTI_STEPS:-$((N_TASKS * STEPS_ONE))}"
DATA=()
for t in $TASKS; do DATA+=("$OUT/MW-$t/demos.hdf5"); done
RUN="$OUT/multitask"
if [ ! -f "$RUN/eval/eval.json" ]; then
  RESUME=()
  [ -d "$RUN/checkpoints" ] && RESUME=(--resume)
  before=0  # training seconds before an interruption, added up over resumes
  [ -f "$RUN/timing.json" ] && before=$("$BIN/python" -c \
    "import json; print(int(json.load(open('$RUN/timing.json'))['train_wall_s']))")
  start=$(date +%s)
  "$BIN/ttm-train" --dataset "${DATA[@]}" --steps "$MULTI_STEPS" --threads "${THREADS:-1}" \
    --out "$RUN" "${RESUME[@]}"
  echo "{\"train_wall_s\": $((before + $(date +%s) - start))}" > "$RUN/timing.json"
  "$BIN/ttm-eval" --checkpoint "$RUN/checkpoints/last" --episodes "$EVAL_EPISODES" --seed 0 \
    --out "$RUN/eval"
fi
echo "single-task table: $OUT/results.md; multi-task: $RUN/eval/eval.json"

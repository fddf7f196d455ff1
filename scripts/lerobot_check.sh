#!/usr/bin/env bash
# The LeRobot check (issue: LeRobot datasets and --policy.type=ttm): build the LeRobot venv,
# record Meta-World demonstrations with our expert, convert them with ttm-convert, train a tiny
# TTM with `lerobot-train --policy.type=ttm`, evaluate it with `lerobot-eval` in LeRobot's own
# Meta-World env, then convert the same checkpoint to ours (`ttm-convert lerobot-policy`) and
# evaluate it with `ttm-eval` in our Meta-World env's LeRobot view, and write what it measured
# to $OUT/summary.json. Figures: docs/lerobot.md.
#
#   bash scripts/lerobot_check.sh                       # defaults below
#   TASK=reach EPISODES=30 STEPS=1000 bash scripts/lerobot_check.sh
#
# Needs the main venv (scripts/setup.sh: Meta-World 3.1.1, our env and expert) for the demos.
# The LeRobot venv ($LEROBOT_VENV, default ../lerobot_venv beside this repository) is built
# once (a stamp file; rebuilt when this script or a pyproject.toml changes): lerobot[metaworld]
# 0.4.4 (torch 2.10 from PyPI, a CUDA build: ~8 GB), our package and the plugin beside it.
# Slow on a CPU: LeRobot's Meta-World env renders 480x480 with shadows and lerobot-eval renders
# a video frame too, ~1.4 s per step on a loaded 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${LEROBOT_VENV:-$REPO/../lerobot_venv}
OUT=${OUT:-$REPO/runs/lerobot_check}
TASK=${TASK:-drawer-close}     # a Meta-World task (without -v3), in ours and in LeRobot's env
EPISODES=${EPISODES:-12}       # expert episodes recorded (failed ones are dropped)
STEPS=${STEPS:-300}            # lerobot-train steps
BATCH=${BATCH:-8}
WINDOW=${WINDOW:-32}           # --policy.n_obs_steps: frames per training sample
EVAL_EPISODES=${EVAL_EPISODES:-3}
export HF_HUB_OFFLINE=1 MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export WANDB_MODE=disabled
mkdir -p "$OUT"
now() { date +%s; }

# 1. The LeRobot venv. pip's resolver alone takes a very long time on lerobot + our extras, so
#    the pins it would need are given: numpy < 2 (robosuite's mink) means pandas < 3,
#    pyarrow < 24 and opencv < 4.12; mujoco < 3.4 for robosuite (metaworld 3.0.0 takes any).
stamp=$VENV/.ttm_lerobot_installed
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] ||
    [ lerobot_policy_ttm/pyproject.toml -nt "$stamp" ]; then
    t=$(now)
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "lerobot[metaworld]==0.4.4"
    "$VENV/bin/python" -m pip install -q "mujoco>=3.2,<3.4" "robosuite==1.5.2" "h5py>=3.10" \
        "tyro>=0.8" "onnx>=1.16" "onnxruntime>=1.18" "safetensors>=0.4" "matplotlib>=3.8" \
        "pandas>=2.2,<3" "pyarrow>=15,<24" "opencv-python-headless>=4.9,<4.12"
    # ours and the plugin: their dependencies are all in by now (torch is LeRobot's 2.10)
    "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO" -e "$REPO/lerobot_policy_ttm"
    echo "venv_build_s=$(($(now) - t))" >"$OUT/venv_build.txt"
    touch "$stamp"
fi
LR=$VENV/bin

# 2. Demonstrations: our env and expert, as LeRobot's Meta-World env shows them.
if [ ! -f "$OUT/demos.hdf5" ]; then
    t=$(now)
    .venv/bin/python scripts/lerobot_demos.py --task "$TASK" --episodes "$EPISODES" \
        --out "$OUT/demos.hdf5"
    echo "demos_s=$(($(now) - t))" >"$OUT/demos_time.txt"
fi

# 3. To LeRobotDataset v3 with LeRobot's writer: PNG frames (lossless; LeRobot 0.4.4 decodes
#    videos with torchcodec, which needs FFmpeg's shared libraries from the system), named as
#    LeRobot's Meta-World env names its observation (observation.image, observation.state).
t=$(now)
rm -rf "$OUT/dataset"
"$LR/ttm-convert" hdf5-to-lerobot --path "$OUT/demos.hdf5" --root "$OUT/dataset" \
    --repo-id "local/ttm_mw_$TASK" --images image --state-keys agent_pos \
    --rename observation.images.corner2=observation.image --task "$TASK"
convert_s=$(($(now) - t))

# 4. lerobot-train with the plugin's policy type.
t=$(now)
rm -rf "$OUT/train"
"$LR/lerobot-train" --policy.type=ttm --dataset.repo_id="local/ttm_mw_$TASK" \
    --dataset.root="$OUT/dataset" --policy.device=cpu --policy.push_to_hub=false \
    --policy.n_obs_steps="$WINDOW" --steps="$STEPS" --batch_size="$BATCH" --num_workers=0 \
    --save_freq="$STEPS" --eval_freq=0 --log_freq=25 --wandb.enable=false --seed=0 \
    --output_dir="$OUT/train"
train_s=$(($(now) - t))

# 5. lerobot-eval in LeRobot's Meta-World env.
t=$(now)
rm -rf "$OUT/eval"
"$LR/lerobot-eval" --policy.path="$OUT/train/checkpoints/last/pretrained_model" \
    --env.type=metaworld --env.task="$TASK-v3" --eval.n_episodes="$EVAL_EPISODES" \
    --eval.batch_size=1 --policy.device=cpu --seed=1000 --output_dir="$OUT/eval"
eval_s=$(($(now) - t))

# 6. The same checkpoint in ttm-eval: converted to our checkpoint format (no LeRobot needed),
#    in our Meta-World env's LeRobot view (the env_args of the demos: corner2 moved, 480 px,
#    Meta-World's rendering, area-resized as the plugin resizes, agent_pos), other layouts than
#    the demos' (seed 1000).
t=$(now)
.venv/bin/ttm-convert lerobot-policy --path "$OUT/train/checkpoints/last/pretrained_model" \
    --out "$OUT/ours" --overwrite --dataset "$OUT/demos.hdf5" \
    --rename observation.image=corner2_image observation.state=agent_pos
.venv/bin/ttm-eval --checkpoint "$OUT/ours" --episodes "$EVAL_EPISODES" --seed 1000 \
    --out "$OUT/ours_eval"
ours_s=$(($(now) - t))

"$LR/python" - "$OUT" "$convert_s" "$train_s" "$eval_s" "$ours_s" <<'EOF'
import json, subprocess, sys
from pathlib import Path

out, convert_s, train_s, eval_s, ours_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
info = json.loads((out / "eval/eval_info.json").read_text())
overall = info.get("overall", info.get("aggregated", {}))
ours = json.loads((out / "ours_eval/eval.json").read_text())
du = lambda p: int(subprocess.run(["du", "-sm", str(p)], capture_output=True, text=True).stdout.split()[0])
summary = {
    "convert_s": convert_s,
    "train_s": train_s,
    "eval_s": eval_s,
    "eval": overall,
    "ttm_eval_s": ours_s,
    "ttm_eval_same_checkpoint": {
        k: ours[k] for k in ("success_rate", "successes", "episodes_run", "ci95_wilson") if k in ours
    },
    "dataset_mb": du(out / "dataset"),
    "lerobot_venv_mb": du(Path(sys.executable).parents[1]),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF

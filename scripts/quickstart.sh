#!/usr/bin/env bash
# Create .venv (if needed), install, and run the main job: collect PointCue demonstrations,
# train a TTM policy, evaluate it, export it, and write runs/quickstart/report.md.
# Arguments go to `python -m eval.quickstart` (e.g. --force, --steps 800, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/python -m eval.quickstart "$@"

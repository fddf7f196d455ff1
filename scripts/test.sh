#!/usr/bin/env bash
# Create .venv if needed, then run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}" WANDB_MODE=offline
exec .venv/bin/python -m pytest -q --timeout=900 "$@"

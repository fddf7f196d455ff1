#!/usr/bin/env bash
# Create .venv (if needed), install, and run the main job.
# Until the end-to-end quickstart lands, the main job is the streaming-latency benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/ttm-bench step-latency "$@"

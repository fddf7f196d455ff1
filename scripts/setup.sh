#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install the package with everything:
# the `train` extra (torch, simulators, training and export), the `dev` extra (tests) and the
# `lerobot` extra (ttm-convert's parquet and video readers), then
# Meta-World without its dependencies (see below).
# A robot computer needs neither: `pip install .` alone installs the runtime (see README).
# torch is pinned to 2.13.0 first: on a CPU-only machine that is the CPU wheel; on Linux
# with NVIDIA drivers PyPI serves the CUDA build of the same release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.ttm_installed
# Reinstall when pyproject.toml or this script changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==${TTM_TORCH_VERSION:-2.13.0}"
    # lerobot: pyarrow and PyAV for ttm-convert (LeRobotDataset v3 <-> our HDF5); LeRobot itself
    # lives in its own venv (scripts/lerobot_check.sh), see docs/lerobot.md.
    .venv/bin/python -m pip install -q -e ".[train,dev,lerobot]"
    # Meta-World (the MW-* tasks, envs/metaworld_tasks.py). --no-deps: metaworld 3.1.1 pins
    # mujoco==3.3.0 exactly, and letting pip resolve that would replace the mujoco 3.3.x that
    # robosuite needs (<3.4; 3.3.7 tested, and Meta-World's envs and scripted policies work on
    # it). Its other requirements (gymnasium, numpy, scipy, imageio, and typing_extensions,
    # which it imports undeclared) come with the train extra. pip may print that metaworld
    # "requires mujoco==3.3.0": expected. Not in pyproject.toml for the same reason.
    .venv/bin/python -m pip install -q --no-deps "metaworld==3.1.1"
    touch "$stamp"
fi

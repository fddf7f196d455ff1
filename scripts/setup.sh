#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install the package with its dev extra.
# torch is pinned to 2.13.0 first: on a CPU-only machine that is the CPU wheel; on Linux
# with NVIDIA drivers PyPI serves the CUDA build of the same release.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.ttm_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==${TTM_TORCH_VERSION:-2.13.0}"
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch "$stamp"
fi

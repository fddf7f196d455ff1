import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")

# A real robomimic Lift file (3 demos, 84x84 images), kept in the repository so that a fresh
# clone runs every test; tests/fixtures/README.md says how robomimic's tools made it.
ROBOMIMIC_FIXTURE = (
    Path(__file__).resolve().parent / "fixtures" / "robomimic_lift_image84_3demos.hdf5"
)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)


def pytest_configure(config):
    import torch

    # Small models on a 2-core machine that other jobs use too: one intra-op thread avoids
    # oversubscription (measured: a 50-step TTM unroll took 0.05 s with 1 thread, 9.5 s with 2 under load).
    torch.set_num_threads(1)

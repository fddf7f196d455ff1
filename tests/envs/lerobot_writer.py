"""A small LeRobotDataset v3 written by LeRobot's own writer, with values known in advance.

Not a test module: `test_lerobot_convert.py` imports `expected_episode` (numpy only) and runs
this file as a script under a Python that has LeRobot 0.4.4 (the venv that
scripts/lerobot_check.sh builds) to write a fresh dataset:

    python tests/envs/lerobot_writer.py tests/fixtures/lerobot_v3_tiny   # the stored fixture
    python tests/envs/lerobot_writer.py --round-trips DIR   # what the round-trip tests run

The stored fixture (tests/fixtures/lerobot_v3_tiny) was written by the second command; the
tests that read it need neither LeRobot nor torchvision.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

FPS = 10
EPISODES = (6, 9)  # frames per episode
SIZE = (24, 32)  # image (height, width): not square, so a transposed image would show
STATE_NAMES = ["eef_pos_0", "eef_pos_1", "eef_pos_2", "gripper_qpos_0", "gripper_qpos_1"]
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]
TASKS = ("reach the goal", "push the block")


def expected_episode(e: int) -> dict[str, np.ndarray]:
    """Episode e's values: images uint8 (N, H, W, 3), state (N, 5) and action (N, 4) float32,
    reward (N, 1) float32, done (N, 1) bool, the task string of each frame."""
    n = EPISODES[e]
    rng = np.random.default_rng(100 + e)
    t = np.arange(n)[:, None]
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    # Smooth images (gradients that move with t) survive a video codec nearly unchanged;
    # the noise image is exact only where the storage is lossless (PNG).
    smooth = np.stack(
        [
            np.stack([30 + 5 * x + 4 * i, 30 + 6 * y + 20 * e, 60 + 2 * x + 2 * y + 5 * i], -1)
            for i in range(n)
        ]
    ).astype(np.uint8)
    return {
        "observation.images.front": smooth,
        "observation.images.wrist": rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8),
        "observation.state": (rng.normal(size=(n, 5)) + t).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        "next.reward": (t == n - 1).astype(np.float32),
        "next.done": t == n - 1,
        "task": np.array([TASKS[e % 2]] * n, dtype=object),
    }


def features() -> dict:
    H, W = SIZE
    return {
        "observation.images.front": {
            "dtype": "video",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.images.wrist": {
            "dtype": "image",
            "shape": (H, W, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (5,), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (4,), "names": ACTION_NAMES},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }


def write(root: str) -> None:
    """Write the dataset at `root` (which must not exist) with LeRobot's writer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(
        repo_id="local/ttm_fixture",
        fps=FPS,
        features=features(),
        root=root,
        robot_type="test_robot",
        use_videos=True,
        image_writer_threads=0,
        vcodec="h264",
    )
    for e in range(len(EPISODES)):
        ep = expected_episode(e)
        for i in range(EPISODES[e]):
            ds.add_frame({k: v[i] for k, v in ep.items()})
        ds.save_episode()
    ds.finalize()


def round_trips(work: Path) -> None:
    """Everything the round-trip tests need LeRobot for, in one process (LeRobot takes ~20 s
    to import on a loaded 2-core machine): in `work`,
    - ours.hdf5 (made by the test) -> lr_ours (PNG images, float64), then LeRobot's own
      LeRobotDataset loads it and its sizes go to lr_ours.loaded.json;
    - lr_fresh, a dataset fresh from LeRobot's writer -> fresh.hdf5 (our reader) -> lr_fresh2
      (LeRobot's writer again, each camera stored as it came)."""
    from envs import lerobot_convert as lc

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    lc.hdf5_to_lerobot(
        work / "ours.hdf5", work / "lr_ours", repo_id="local/rt", images="image", dtype="float64"
    )
    d = LeRobotDataset("local/rt", root=work / "lr_ours")
    x = d[3]
    loaded = {
        "frames": len(d),
        "episodes": d.num_episodes,
        "image": list(x["observation.images.corner"].shape),
        "image_dtype": str(x["observation.images.corner"].dtype),
    }
    (work / "lr_ours.loaded.json").write_text(json.dumps(loaded))
    write(str(work / "lr_fresh"))
    lc.lerobot_to_hdf5(work / "lr_fresh", work / "fresh.hdf5")
    lc.hdf5_to_lerobot(work / "fresh.hdf5", work / "lr_fresh2", repo_id="local/rt2")


if __name__ == "__main__":
    if sys.argv[1] == "--round-trips":
        round_trips(Path(sys.argv[2]))
    else:
        write(sys.argv[1])

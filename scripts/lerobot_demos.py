"""Demonstrations of a Meta-World task as LeRobot's Meta-World env shows them, for
scripts/lerobot_check.sh (run with the main venv, which has Meta-World 3.1.1):

    python scripts/lerobot_demos.py --task drawer-close --episodes 20 --out demos.hdf5

Our env (`ttm/MW-<task>-v0`) and scripted expert (`envs.collect.run_episode`) and our writer,
with the observation LeRobot 0.4.4's `MetaworldEnv` gives a policy, so that a policy trained on
these demos through `lerobot-train` meets the same images in `lerobot-eval`:
- camera corner2 moved where LeRobot puts it (cam_pos [0.75, 0.075, 0.7]), Meta-World's own
  render settings, 480x480, upright (LeRobot flips corner2 by 180 degrees, as we do), then
  area-averaged to `--image-size` exactly as the TTM plugin resizes LeRobot's 480x480 frames;
- `agent_pos` = Meta-World's observation [0:4] (hand xyz, gripper opening), LeRobot's state.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import envs
from envs import gl
from envs.collect import episode_seed, run_episode
from envs.hdf5 import DemoWriter

LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)  # lerobot/envs/metaworld.py, MetaworldEnv._make_envs_task
LEROBOT_SIZE = 480  # MetaworldEnv's observation_width / observation_height


def area_resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3): the plugin's resize (TTMPolicy._images)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # LeRobot's [0, 1] CHW
    x = F.interpolate(x, size=(size, size), mode="area")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="drawer-close", help="Meta-World task without -v3")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    gl.setup()
    env = gym.make(
        envs.task_id(f"MW-{a.task}"),
        cameras=("corner2",),
        image_size=LEROBOT_SIZE,
        render_quality="metaworld",
    )
    model = env.unwrapped.mw.model
    cam = model.camera("corner2").id
    assert cam == 2, f"LeRobot moves camera 2 and means corner2; here corner2 is camera {cam}"
    model.cam_pos[cam] = LEROBOT_CORNER2_POS
    env_args = env.unwrapped.env_args()
    env_args["lerobot_corner2_pos"] = list(LEROBOT_CORNER2_POS)  # not an env kwarg of ours
    kept = tried = steps = 0
    start = time.perf_counter()
    with DemoWriter(a.out, env_args) as w:
        for i in tqdm(range(a.episodes), desc=f"MW-{a.task} demos", unit="ep"):
            ep = run_episode(env, episode_seed(a.seed, i), a.noise)
            tried += 1
            steps += len(ep["actions"])
            if not ep["success"]:
                continue
            obs = ep["obs"]
            ep["obs"] = {
                "corner2_image": area_resize(obs["corner2_image"], a.image_size),
                "agent_pos": obs["object"][:, :4],
            }
            w.add(ep, ep["model_xml"], seed=ep["seed"], success=True)
            kept += 1
        w.finish(valid_fraction=0.1, seed=a.seed)
    env.close()
    s = time.perf_counter() - start
    print(f"kept {kept}/{tried} episodes, {steps} steps in {s:.0f} s ({steps / s:.1f} steps/s)")


if __name__ == "__main__":
    main()

"""Demonstrations of a Meta-World task as LeRobot's Meta-World env shows them, for
scripts/lerobot_check.sh (run with the main venv, which has Meta-World 3.1.1):

    python scripts/lerobot_demos.py --task drawer-close --episodes 20 --out demos.hdf5

Our env (`ttm/MW-<task>-v0`) in its LeRobot view (`view="lerobot"`, envs/metaworld_tasks.py:
camera corner2 where LeRobot 0.4.4's `MetaworldEnv` puts it, 480x480 with Meta-World's render
settings, area-averaged to `--image-size` as the TTM plugin resizes LeRobot's frames, and
`agent_pos`, LeRobot's 4-D state), our scripted expert (`envs.collect.run_episode`) and our
writer. The file keeps the two observations LeRobot's env gives (`corner2_image`, `agent_pos`)
and the env_args of that view, so `ttm-eval` re-creates it for a checkpoint converted from
LeRobot (`ttm-convert lerobot-policy --dataset`).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
from tqdm import tqdm

import envs
from envs.collect import episode_seed, run_episode
from envs.hdf5 import DemoWriter

KEYS = ("corner2_image", "agent_pos")  # what LeRobot's env gives a policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="drawer-close", help="Meta-World task without -v3")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    env = gym.make(envs.task_id(f"MW-{a.task}"), view="lerobot", image_size=a.image_size)
    kept = tried = steps = 0
    start = time.perf_counter()
    with DemoWriter(a.out, env.unwrapped.env_args()) as w:
        for i in tqdm(range(a.episodes), desc=f"MW-{a.task} demos", unit="ep"):
            ep = run_episode(env, episode_seed(a.seed, i), a.noise)
            tried += 1
            steps += len(ep["actions"])
            if not ep["success"]:
                continue
            ep["obs"] = {k: ep["obs"][k] for k in KEYS}
            w.add(ep, ep["model_xml"], seed=ep["seed"], success=True)
            kept += 1
        w.finish(valid_fraction=0.1, seed=a.seed)
    env.close()
    s = time.perf_counter() - start
    print(f"kept {kept}/{tried} episodes, {steps} steps in {s:.0f} s ({steps / s:.1f} steps/s)")


if __name__ == "__main__":
    main()

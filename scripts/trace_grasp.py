"""Where a PickPlaceCan policy fails: roll a checkpoint out in its dataset's env for N seeded
episodes and print, per episode, the outcome, how many steps commanded "close" (and the first),
the closest the end-effector came to the can, and the final gripper opening.

    MUJOCO_GL=egl .venv/bin/python scripts/trace_grasp.py runs/can_ttm/checkpoints/last 3

The can's position comes from the simulator (the policy never sees it); PickPlaceCan only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(checkpoint: str, episodes: int) -> None:
    from envs import gl

    gl.setup()
    from envs.env_args import make_from_env_args
    from ttm_policy import TTMPolicy

    torch.set_num_threads(1)
    policy = TTMPolicy.from_pretrained(checkpoint).eval()
    env = make_from_env_args(json.loads((Path(checkpoint) / "env_args.json").read_text()))
    suite = env.unwrapped.suite
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        policy.reset()
        closes, first, closest, info, t = 0, None, np.inf, {}, 0
        for t in range(env.unwrapped.horizon):
            action = policy.select_action(obs)
            if action[6] > 0:  # the gripper command: > 0 closes
                closes += 1
                first = t if first is None else first
            can = suite.sim.data.body_xpos[suite.obj_body_id[suite.obj_to_use]]
            closest = min(closest, float(np.linalg.norm(obs["robot0_eef_pos"] - can)))
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        print(
            f"episode {ep}: {t + 1} steps, success {info.get('success')}, close commands "
            f"{closes} (first at step {first}), closest eef-can distance {closest * 100:.1f} cm, "
            f"final gripper qpos {obs['robot0_gripper_qpos'][0]:.3f}"
        )
    env.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)

"""Where a grasping policy fails: roll a checkpoint out in its dataset's env on the given
seeded episodes (ttm-eval's episode i is seed i at `--seed 0`) and print, per episode, the
outcome, how many steps commanded "close" (the first, and how often it re-opened), the
closest the end-effector came to the object, how high the object rose, the policy's
probability of "close" at every 5th step spent within 3 cm of the object (the hover), and how
much the core's state (the TTM's memory, the LSTM's h and c, ...) changes per step there:
the median of |s_t - s_(t-1)| / |s_(t-1)| over those steps (all of the state's tensors as one
vector).

    MUJOCO_GL=egl .venv/bin/python scripts/trace_grasp.py runs/can_ttm/checkpoints/last 0 1 2
    MUJOCO_GL=egl .venv/bin/python scripts/trace_grasp.py runs/stack_ttm/checkpoints/last 15 20

The object's position comes from the simulator (the policy never sees it); PickPlaceCan (the
can) and Stack (the cube to pick up) only. Open/close is drawn from p(close) as in ttm-eval,
from a generator seeded per episode (1000 + episode; ttm-eval seeds once per run, so its
draws differ), so a re-run repeats the trace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ttm_policy.state import flatten


def object_position(suite) -> np.ndarray:
    """The object to grasp: PickPlaceCan's can or Stack's cube A."""
    if hasattr(suite, "cubeA_body_id"):
        return suite.sim.data.body_xpos[suite.cubeA_body_id]
    return suite.sim.data.body_xpos[suite.obj_body_id[suite.obj_to_use]]


def main(checkpoint: str, episodes: list[int]) -> None:
    from envs import gl

    gl.setup()
    from envs.env_args import make_from_env_args
    from ttm_policy import TTMPolicy

    torch.set_num_threads(1)
    policy = TTMPolicy.from_pretrained(checkpoint).eval()
    env = make_from_env_args(json.loads((Path(checkpoint) / "env_args.json").read_text()))
    suite = env.unwrapped.suite
    for ep in episodes:
        obs, _ = env.reset(seed=ep)
        policy.reset()
        torch.manual_seed(1000 + ep)
        z0 = float(object_position(suite)[2])
        closes, reopen, first, closest, rise, hover, info, t = 0, 0, None, np.inf, 0.0, [], {}, 0
        prev_close, drift = False, []
        for t in range(env.unwrapped.horizon):
            with torch.no_grad():  # p(close) from the state select_action is about to use
                x, _ = policy._obs_tensors(obs)
                state = policy._state if policy._state is not None else policy.init_state(1)
                _, _, p = policy.step(x, state, None, sample=False, gripper_probability=True)
            action = policy.select_action(obs)
            before, after = flatten(state), flatten(policy._state)
            step_change = float((after - before).norm() / before.norm().clamp_min(1e-12))
            close = bool(action[-1] > 0)  # the gripper command: > 0 closes
            reopen += int(prev_close and not close)
            closes += int(close)
            first = t if close and first is None else first
            prev_close = close
            distance = float(np.linalg.norm(obs["robot0_eef_pos"] - object_position(suite)))
            closest = min(closest, distance)
            if distance < 0.03 and p is not None:
                hover.append(f"{t}:{float(p[0, 0]):.2f}")
                drift.append(step_change)
            obs, _, terminated, truncated, info = env.step(action)
            rise = max(rise, float(object_position(suite)[2]) - z0)
            if terminated or truncated:
                break
        print(
            f"episode {ep}: {t + 1} steps, success {info.get('success')}, close commands "
            f"{closes} (first at step {first}, {reopen} re-openings), closest eef-object "
            f"{closest * 100:.1f} cm, object raised {rise * 100:.1f} cm; state change per step "
            f"within 3 cm (median) {np.median(drift) if drift else float('nan'):.1e}; p(close) "
            f"within 3 cm (step:p): {' '.join(hover[::5])}",
            flush=True,
        )
    env.close()


if __name__ == "__main__":
    main(sys.argv[1], [int(e) for e in sys.argv[2:]] or [0, 1, 2])

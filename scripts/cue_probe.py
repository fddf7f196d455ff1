"""Does a policy's state still hold the cue? Roll a checkpoint out on one seeded scene once
per cue (a task with `cues`: LiftCued, PlaceCued, ...) and print, at chosen steps, how far
apart the core's states are (|s(cue a) - s(cue b)| / |s(cue a)|, all of the state's tensors as
one vector: the TTM's memory, the LSTM's h and c, ...) and the first three action
components under each cue; then each episode's outcome and its hand path after the hold.

    MUJOCO_GL=egl .venv/bin/python scripts/cue_probe.py runs/lc100/LiftCued_delay100/ttm/checkpoints/last 0 1

A state difference of 0.000 from some step on means the two cues are no longer told apart
there: what follows cannot depend on the cue. The gripper draw is seeded per scene, so both
cues see the same draws and a re-run repeats the printout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ttm_policy.state import flatten

PROBE_STEPS = (5, 12, 25, 50, 100, 150, 200, 250)


def rollout(policy, env, seed: int, cue: int) -> dict:
    """One episode under `cue`: the state after every step, the actions, the hand positions."""
    obs, info = env.reset(seed=seed, options={"cue": cue})
    policy.reset()
    torch.manual_seed(seed)
    states, actions, eef = [], [], []
    while True:
        action = policy.select_action(obs)
        states.append(flatten(policy._state).numpy() if policy._state is not None else None)
        actions.append(np.asarray(action, dtype=np.float64).copy())
        obs, _, terminated, truncated, info = env.step(action)
        eef.append(np.asarray(obs.get("robot0_eef_pos", [np.nan] * 3)))
        if terminated or truncated:
            break
    return {"states": states, "actions": actions, "eef": np.array(eef), "info": info}


def main(checkpoint: str, seeds: list[int]) -> None:
    from envs import gl

    gl.setup()
    from envs.env_args import make_from_env_args
    from eval.memory_plot import _task_attr
    from ttm_policy import TTMPolicy

    torch.set_num_threads(1)
    policy = TTMPolicy.from_pretrained(checkpoint).eval()
    env = make_from_env_args(json.loads((Path(checkpoint) / "env_args.json").read_text()))
    cues = _task_attr(env, "cues")
    if not cues:
        raise SystemExit(f"{type(env.unwrapped).__name__}: not a cued task (no `cues`)")
    moving_from = (_task_attr(env, "cue_steps") or 0) + (_task_attr(env, "delay_steps") or 0)
    a, b = 0, cues - 1
    for seed in seeds:
        runs = {cue: rollout(policy, env, seed, cue) for cue in (a, b)}
        ra, rb = runs[a], runs[b]
        for t in PROBE_STEPS:
            if t >= min(len(ra["actions"]), len(rb["actions"])):
                break
            if ra["states"][t] is None:
                gap = "no state (memory-less core)"
            else:
                den = max(float(np.linalg.norm(ra["states"][t])), 1e-12)
                gap = f"{float(np.linalg.norm(ra['states'][t] - rb['states'][t])) / den:.3f}"
            print(
                f"seed {seed} step {t}: state gap {gap}; action[:3] cue {a} "
                f"{np.round(ra['actions'][t][:3], 2)} cue {b} {np.round(rb['actions'][t][:3], 2)}"
            )
        for cue, r in runs.items():
            after = r["eef"][moving_from:]
            path = float(np.abs(np.diff(after, axis=0)).sum()) if len(after) > 1 else 0.0
            print(
                f"seed {seed} cue {cue}: {len(r['actions'])} steps, success "
                f"{r['info'].get('success')}; hand path after the hold {path:.2f} m, lowest "
                f"{float(after[:, 2].min()) if len(after) else float('nan'):.3f} m",
                flush=True,
            )
    env.close()


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2:]] or [0])

"""Does a policy's state still hold the cue? Roll a checkpoint out on one seeded scene once
per cue (a task with `cues`: LiftCued, PlaceCued, ...) and print, at chosen steps, how far
apart the core's states are (|s(cue a) - s(cue b)| / |s(cue a)|, all of the state's tensors as
one vector: the TTM's memory, the LSTM's h and c, ...) and the first three action
components under each cue; then each episode's outcome and its hand path after the hold.

    MUJOCO_GL=egl .venv/bin/python scripts/cue_probe.py runs/lc100/LiftCued_delay100/ttm/checkpoints/last 0 1

Several checkpoints (arguments that are not integers) are probed in turn; with `--plot
PATH.png` the gap at every step of the first seed is drawn for each of them, on a log scale,
the hold shaded (a checkpoint given as `LABEL=PATH` is labelled LABEL, else by its run
directory).

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
        flat = flatten(policy._state) if policy._state is not None else torch.empty(0)
        states.append(flat.numpy() if flat.numel() else None)  # None: the core keeps nothing
        actions.append(np.asarray(action, dtype=np.float64).copy())
        obs, _, terminated, truncated, info = env.step(action)
        eef.append(np.asarray(obs.get("robot0_eef_pos", [np.nan] * 3)))
        if terminated or truncated:
            break
    return {"states": states, "actions": actions, "eef": np.array(eef), "info": info}


def state_gaps(ra: dict, rb: dict) -> np.ndarray:
    """|s_a - s_b| / |s_a| at every step both episodes reached (NaN for a stateless core)."""
    n = min(len(ra["states"]), len(rb["states"]))
    if n == 0 or ra["states"][0] is None:
        return np.full(n, np.nan)
    return np.array(
        [
            np.linalg.norm(ra["states"][t] - rb["states"][t])
            / max(float(np.linalg.norm(ra["states"][t])), 1e-12)
            for t in range(n)
        ]
    )


def probe(checkpoint: str, seeds: list[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Print the probe for one checkpoint; return the first seed's gap curve and the hold
    (first and last held step)."""
    from envs.env_args import make_from_env_args
    from eval.memory_plot import _task_attr
    from ttm_policy import TTMPolicy

    policy = TTMPolicy.from_pretrained(checkpoint).eval()
    env = make_from_env_args(json.loads((Path(checkpoint) / "env_args.json").read_text()))
    cues = _task_attr(env, "cues")
    if not cues:
        raise SystemExit(f"{type(env.unwrapped).__name__}: not a cued task (no `cues`)")
    cue_steps = _task_attr(env, "cue_steps") or 0
    moving_from = cue_steps + (_task_attr(env, "delay_steps") or 0)
    a, b = 0, cues - 1
    curve = None
    for seed in seeds:
        runs = {cue: rollout(policy, env, seed, cue) for cue in (a, b)}
        ra, rb = runs[a], runs[b]
        gaps = state_gaps(ra, rb)
        curve = gaps if curve is None else curve
        for t in PROBE_STEPS:
            if t >= len(gaps):
                break
            gap = "no state (memory-less core)" if np.isnan(gaps[t]) else f"{gaps[t]:.3f}"
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
    return curve, (cue_steps, moving_from)


def plot(curves: dict[str, np.ndarray], hold: tuple[int, int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axvspan(*hold, color="0.9", label="hold (cue gone, arm held)")
    for label, curve in curves.items():
        if not np.isnan(curve).all():
            ax.plot(np.arange(len(curve)), np.maximum(curve, 1e-5), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|s(cue 0) - s(cue 1)| / |s(cue 0)|")
    ax.set_title("How far apart the two cues leave the core's state (one scene)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv: list[str]) -> None:
    from envs import gl

    gl.setup()
    torch.set_num_threads(1)
    out = None
    if "--plot" in argv:
        i = argv.index("--plot")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    checkpoints = [x for x in argv if not x.lstrip("-").isdigit()]
    seeds = [int(x) for x in argv if x.lstrip("-").isdigit()] or [0]
    if not checkpoints:
        raise SystemExit(__doc__)
    curves, hold = {}, (0, 0)
    for arg in checkpoints:
        label, _, checkpoint = arg.rpartition("=")
        path = Path(checkpoint)
        label = label or (path.parent.parent.name if path.parent.name == "checkpoints" else arg)
        print(f"== {label} ({checkpoint})", flush=True)
        curves[label], hold = probe(checkpoint, seeds)
    if out:
        plot(curves, hold, out)


if __name__ == "__main__":
    main(sys.argv[1:])

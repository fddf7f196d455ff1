"""A reference controller loop: an exported policy at a fixed rate against a robot interface.

    ttm-export --checkpoint runs/x/checkpoints/1000 --out exports/x
    python examples/robot_loop.py --export exports/x --steps 200 --hz 20

`Robot` is the small interface a real robot driver implements: read an observation, send an
action, and say when an episode starts (the policy's memory is reset then). `SimRobot`
implements it over one of this repository's gymnasium envs (PointCue, or Lift when the policy
wants robosuite's observations), so the same loop runs against the simulator. The loop needs
numpy, onnxruntime (through `ttm_policy.runtime`) and the driver; not torch.

Each tick i starts at t0 + i / hz: read the observation, run the policy, send the action,
sleep until the next tick. A tick whose work overruns its period is a deadline miss; the next
tick then starts at once and the schedule is re-anchored (no burst of ticks to catch up,
which a real robot would feel as a jerk). The policy never raises inside the loop: a bad
observation gives its safe action and a fault, counted in the report.

Report: latency percentiles (p50/p90/p99/max) of the policy call and of the whole tick,
deadline misses, late starts, policy faults, episodes and successes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ttm_policy.runtime import OnnxPolicy  # noqa: E402


class Robot(Protocol):
    """What the control loop needs from a robot driver."""

    episode_start: bool
    """True when the observation last read begins an episode (after a reset of the scene)."""

    def read_observation(self) -> dict[str, np.ndarray]:
        """The latest sensor readings, keyed as the policy's spec names them (images uint8
        (H, W, 3), low-dim vectors); must not block for long."""
        ...

    def send_action(self, action: np.ndarray) -> None:
        """Command the robot with a (A,) action in the spec's units and bounds."""
        ...


class SimRobot:
    """`Robot` over a gymnasium env: `send_action` steps the simulation; an episode that ends
    is reset at once (next seed) and the next observation starts a new episode."""

    def __init__(self, env, seed: int = 0):
        self.env, self.seed = env, seed
        self._obs, _ = env.reset(seed=seed)
        self.episode_start = True
        self.episodes = self.successes = 0

    def read_observation(self) -> dict[str, np.ndarray]:
        return self._obs

    def send_action(self, action: np.ndarray) -> None:
        obs, _, terminated, truncated, info = self.env.step(action)
        self.episode_start = False
        if terminated or truncated:
            self.episodes += 1
            self.successes += bool(info.get("success", False))
            self.seed += 1
            obs, _ = self.env.reset(seed=self.seed)
            self.episode_start = True
        self._obs = obs


def make_sim_robot(policy: OnnxPolicy, task: str | None, seed: int) -> SimRobot:
    """The env the policy was trained in (the spec's `env_args`, from ttm-train), or, without
    one, the env whose observations the spec asks for: PointCue for its two keys, else Lift
    with the spec's cameras and image size."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import envs

    env_args = policy.spec.get("env_args")
    if task is None and env_args and env_args.get("env_name") in gym.registry:
        return SimRobot(gym.make(env_args["env_name"], **env_args.get("env_kwargs", {})), seed)
    keys = set(policy.obs_specs)
    cameras = [
        k.removesuffix("_image") for k, o in policy.obs_specs.items() if o["kind"] == "image"
    ]
    size = next((o["shape"][0] for o in policy.obs_specs.values() if o["kind"] == "image"), 84)
    if task is None:
        task = "PointCue" if keys <= {"agentview_image", "robot0_eef_pos"} else "Lift"
    if task == "PointCue":
        env = gym.make(envs.task_id(task), image_size=size)
    else:
        env = gym.make(envs.task_id(task), cameras=cameras, image_size=size)
    return SimRobot(env, seed)


def run_loop(robot: Robot, policy: OnnxPolicy, *, steps: int, hz: float) -> dict[str, Any]:
    """Run `steps` ticks at `hz`; returns the timing and fault report."""
    period = 1.0 / hz
    policy_s, tick_s = [], []
    misses = late = 0
    next_tick = time.perf_counter()
    for _ in range(steps):
        start = time.perf_counter()
        if start - next_tick > 0.1 * period:
            late += 1  # woke up later than 10% of a period (the OS, or the previous overrun)
        obs = robot.read_observation()
        if robot.episode_start:
            policy.reset()
        t0 = time.perf_counter()
        action = policy(obs)
        policy_s.append(time.perf_counter() - t0)
        robot.send_action(action)
        done = time.perf_counter()
        tick_s.append(done - start)
        next_tick += period
        if done > next_tick:  # overran its period: start the next tick now, re-anchor
            misses += 1
            next_tick = done
        else:
            time.sleep(next_tick - done)

    def pct(xs: list[float]) -> dict[str, float]:
        ms = 1e3 * np.asarray(xs)
        return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)} | {
            "max_ms": float(ms.max())
        }

    return {
        "steps": steps,
        "hz": hz,
        "policy_latency": pct(policy_s),
        "tick_latency": pct(tick_s),
        "deadline_misses": misses,
        "late_starts": late,
        "policy_faults": policy.fault_count,
        "last_error": policy.last_error,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="directory from ttm-export")
    parser.add_argument("--steps", type=int, default=200, help="control ticks to run")
    parser.add_argument("--hz", type=float, default=None, help="control rate (default: spec's)")
    parser.add_argument("--task", choices=["PointCue", "Lift"], default=None, help="sim task")
    parser.add_argument("--safe-action", choices=["zeros", "hold"], default="zeros")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    policy = OnnxPolicy(args.export, safe_action=args.safe_action, threads=args.threads)
    hz = args.hz or policy.control_hz
    robot = make_sim_robot(policy, args.task, args.seed)
    report = run_loop(robot, policy, steps=args.steps, hz=hz)
    report |= {"episodes": robot.episodes, "successes": robot.successes}
    robot.env.close()
    p, t = report["policy_latency"], report["tick_latency"]
    print(
        f"{args.steps} ticks at {hz:g} Hz ({policy.spec['temporal_core']} policy): policy "
        f"p50/p90/p99/max {p['p50_ms']:.2f}/{p['p90_ms']:.2f}/{p['p99_ms']:.2f}/"
        f"{p['max_ms']:.2f} ms; whole tick p50/p99 {t['p50_ms']:.2f}/{t['p99_ms']:.2f} ms; "
        f"deadline misses {report['deadline_misses']}, late starts {report['late_starts']}, "
        f"policy faults {report['policy_faults']}; episodes {report['episodes']}, "
        f"successes {report['successes']}"
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()

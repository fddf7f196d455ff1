"""Success rate and speed of a scripted expert, images off.

    python -m envs.expert_eval --task Lift --episodes 100 [--noise 0.05] [--seed 0] [--images]

Episode i is reset with seed `seed + i` (and the expert seeded the same), so a run is
reproducible and failures can be replayed one by one.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym

import envs
from envs import gl


def evaluate(
    task: str,
    episodes: int = 100,
    *,
    noise: float = 0.0,
    seed: int = 0,
    images: bool = False,
    verbose: bool = False,
) -> dict:
    """Run `episodes` expert episodes; returns success rate, steps/s and failed seeds."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    kwargs = {} if images else {"cameras": ()}
    env = gym.make(envs.task_id(task), **kwargs)
    successes, steps, failed = 0, 0, []
    t0 = time.perf_counter()
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        expert = env.unwrapped.make_expert(noise=noise, seed=seed + i)
        ok, done, n = False, False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            n += 1
            ok = ok or info["success"]
            done = terminated or truncated
        steps += n
        successes += ok
        if not ok:
            failed.append(seed + i)
        if verbose:
            print(f"episode {i} seed {seed + i}: {'ok' if ok else 'FAIL'} in {n} steps", flush=True)
    seconds = time.perf_counter() - t0
    env.close()
    return {
        "task": task,
        "episodes": episodes,
        "noise": noise,
        "images": images,
        "success_rate": successes / episodes,
        "steps": steps,
        "steps_per_s": steps / seconds,
        "failed_seeds": failed,
    }


def main() -> None:
    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", required=True, choices=[t for t in envs.TASKS if t != "PointCue"])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian action noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", action="store_true", help="render the default cameras too")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    r = evaluate(a.task, a.episodes, noise=a.noise, seed=a.seed, images=a.images, verbose=a.verbose)
    print(
        f"{r['task']}: success {r['success_rate']:.1%} over {r['episodes']} episodes "
        f"(noise {r['noise']}, images {'on' if r['images'] else 'off'}), "
        f"{r['steps_per_s']:.1f} steps/s"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()

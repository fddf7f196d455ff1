"""Roll a policy out in a task env and count successes: sequential, one process, seeded.

    from eval.rollout import rollout
    from ttm_policy import TTMPolicy

    policy = TTMPolicy.from_pretrained("runs/point_cue/checkpoints/last")
    result = rollout(policy, "ttm/PointCue-v0", episodes=50, env_kwargs={"image_size": 32})
    print(result["success_rate"], result["ci95"])

The env is named by its gymnasium id (`ttm/PointCue-v0`), a short task name (`PointCue`), or
robomimic's `env_args` dict (`{"env_name": ..., "env_kwargs": {...}}`, as stored in a dataset's
`data` attrs). Episode i is reset with `episode_seed(seed, i)`, so a result is reproducible
and episode i sees the same start whatever policy runs it; the policy gets `reset()` before
every episode. An episode counts as a success if any step's `info["success"]` is True.

This is the loop the parallel evaluator (`ttm-eval`: vector envs, videos) will reuse: one
episode is `run_episode`, the statistics are `summarise` and `wilson`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

import envs
from envs.env_args import make_from_env_args

SEED_STRIDE = 100003  # a prime: the seeds of base seeds s and s+1 never overlap for < 1e5 episodes


class Policy(Protocol):
    """What `rollout` needs of a policy (TTMPolicy and every baseline provide it)."""

    def reset(self) -> None: ...

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


def episode_seed(seed: int, index: int) -> int:
    """Reset seed of rollout episode `index` under base `seed`."""
    return seed * SEED_STRIDE + index


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% for z = 1.96): (low, high)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n and n > 0; got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def make_env(
    env_id_or_env_args: str | dict[str, Any], env_kwargs: dict[str, Any] | None = None
) -> gym.Env:
    """A gymnasium id, a short task name or a dataset's robomimic env_args -> the env;
    `env_kwargs` override the kwargs that env_args carry."""
    if isinstance(env_id_or_env_args, dict):  # rebuilt the way ttm-eval rebuilds it
        return make_from_env_args(env_id_or_env_args, **(env_kwargs or {}))
    env_id = env_id_or_env_args
    if env_id in envs.TASKS:
        env_id = envs.task_id(env_id)
    return gym.make(env_id, **(env_kwargs or {}))


def run_episode(
    policy: Policy, env: gym.Env, seed: int, max_steps: int | None = None
) -> dict[str, Any]:
    """One episode from `env.reset(seed=seed)` until terminated, truncated or `max_steps`."""
    policy.reset()
    obs, info = env.reset(seed=seed)
    ret, length, success, terminated, truncated = 0.0, 0, False, False, False
    while not (terminated or truncated) and (max_steps is None or length < max_steps):
        action = np.asarray(policy.select_action(obs), dtype=np.float64)  # (A,)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(reward)
        length += 1
        success = success or bool(info.get("success", False))
    return {
        "seed": seed,
        "success": success,
        "outcome": outcome(success, bool(terminated)),
        "return": ret,
        "length": length,
    }


def outcome(success: bool, terminated: bool) -> str:
    """How an episode ended: "success"; "failure" when the env ended it without success (a
    cued task's wrong choice); "timeout" when it ran out of steps."""
    return "success" if success else "failure" if terminated else "timeout"


def summarise(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-episode results -> success rate with its 95% Wilson interval, failures (ended
    without success) and timeouts, mean return/length."""
    n = len(episodes)
    k = sum(e["success"] for e in episodes)
    return {
        "episodes": episodes,
        "n": n,
        "successes": k,
        "failures": sum(e.get("outcome") == "failure" for e in episodes),
        "timeouts": sum(e.get("outcome") == "timeout" for e in episodes),
        "success_rate": k / n,
        "ci95": wilson(k, n),
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "mean_length": float(np.mean([e["length"] for e in episodes])),
    }


def rollout(
    policy: Policy,
    env_id_or_env_args: str | dict[str, Any],
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run `episodes` seeded episodes one after another; returns `summarise`'s dict plus
    `seconds`. `max_steps` caps an episode below the env's own truncation (None: the env's)."""
    if episodes < 1:
        raise ValueError(f"rollout needs episodes >= 1; got {episodes}")
    env = make_env(env_id_or_env_args, env_kwargs)
    start = time.perf_counter()
    try:
        results = [
            run_episode(policy, env, episode_seed(seed, i), max_steps) for i in range(episodes)
        ]
    finally:
        env.close()
    return {**summarise(results), "seconds": time.perf_counter() - start}


def format_result(name: str, result: dict[str, Any]) -> str:
    """One line: `name: 47/50 = 94% (95% Wilson CI 84-98%; 2 failed, 1 timed out)`."""
    lo, hi = result["ci95"]
    ends = (
        f"; {result['failures']} failed, {result['timeouts']} timed out"
        if "failures" in result
        else ""
    )
    return (
        f"{name}: {result['successes']}/{result['n']} = {result['success_rate']:.0%} "
        f"(95% Wilson CI {lo:.0%}-{hi:.0%}{ends})"
    )

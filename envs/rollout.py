"""The rollout loop: a policy acts in seeded episodes of a task env; outcomes and statistics.

    from envs.rollout import rollout
    from ttm_policy import TTMPolicy

    policy = TTMPolicy.from_pretrained("runs/point_cue/checkpoints/last")
    result = rollout(policy, "ttm/PointCue-v0", episodes=50, env_kwargs={"image_size": 32})
    print(result["success_rate"], result["ci95"])

One loop, `run_episodes`, serves every caller: `ttm-eval` (`eval/evaluate.py`, through
`run_rollouts`: parallel envs, videos, the eval.json fields), training-time evaluation
(`train/train.py`, the same `run_rollouts`) and the sequential Python API `rollout` (one env,
a policy that takes one observation). This module sits in `envs/` so that the trainer gets
it without importing `eval/`; it imports nothing from `ttm_policy/`, `train/` or `eval/`.

Episodes run in a gymnasium vector env (one process per env when there are several, each
with its own EGL context); the policy acts for all envs in one batch and is reset per env at
every episode start. Episode i is always reset with seed `episode_seed(seed, i)` and env
slots take episodes in order, so a result is reproducible, the same seed and number of envs
give the same per-episode outcomes, and episode i sees the same start whatever policy runs
it. An episode counts as a success if any step's `info["success"]` is True; it ends when the
env terminates or truncates it, or at `max_steps`.

Statistics live here too: `summarise` (success rate with a 95% `wilson` interval, failures,
timeouts, mean return and length) and `format_result` (one line).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import envs
from envs import gl
from envs.env_args import ROBOSUITE_TYPE, make_from_env_args, make_on_egl_device

SEED_STRIDE = 100003  # a prime: the seeds of base seeds s and s+1 never overlap for < 1e5 episodes


class Policy(Protocol):
    """What the loop needs of a policy acting in E envs at once (TTMPolicy and every
    baseline provide it). Optional: a `cfg` naming `obs_keys`, `camera_keys`, `image_size`,
    `lowdim_keys`, `lowdim_dims` (checked against the env's first observation, and the
    default video camera) and a torch `device` (a CUDA one makes the envs render there)."""

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start new episodes: in every env (mask None), or where mask (E,) is True."""

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Observations, each (E, ...) -> actions (E, A)."""


class SingleEnvPolicy(Protocol):
    """What `rollout` takes: a policy of one env (`reset()`, one observation -> (A,))."""

    def reset(self) -> None: ...

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


class RolloutError(ValueError):
    """A policy and an environment that cannot be rolled out together; says why."""


# ----------------------------------------------------------------------------- statistics


def episode_seed(seed: int, index: int) -> int:
    """Reset seed of rollout episode `index` under base `seed`."""
    return seed * SEED_STRIDE + index


def outcome(success: bool, terminated: bool) -> str:
    """How an episode ended: "success"; "failure" when the env ended it without success (a
    cued task's wrong choice); "timeout" when it ran out of steps."""
    return "success" if success else "failure" if terminated else "timeout"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% for z = 1.96): (low, high)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n and n > 0; got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
        # episodes per partial-progress value, for tasks that report one (SequenceCue)
        **(
            {
                "progress": {
                    str(p): sum(e["progress"] == p for e in episodes)
                    for p in sorted({e["progress"] for e in episodes})
                }
            }
            if episodes and all("progress" in e for e in episodes)
            else {}
        ),  # fmt: skip
    }


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


# ----------------------------------------------------------------------------- envs


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


def check_compatible(policy: Any, obs: dict[str, np.ndarray], where: str) -> None:
    """Fail at once, with one message, when the envs' first observations (E, ...) do not fit
    what the policy's `cfg` declares (nothing to check for a policy without one)."""
    cfg = getattr(policy, "cfg", None)
    if cfg is None:
        return
    missing = [k for k in cfg.obs_keys if k not in obs]
    if missing:
        raise RolloutError(
            f"{where} gives no {missing} (it has {sorted(obs)}); the policy needs {list(cfg.obs_keys)}"
        )
    for key in cfg.camera_keys:
        shape = tuple(obs[key].shape[1:])
        if shape != (cfg.image_size, cfg.image_size, 3):
            raise RolloutError(
                f"{where}: {key} is {shape}, the policy was trained on "
                f"{(cfg.image_size, cfg.image_size, 3)}; pass --env-kwargs '{{\"image_size\": {cfg.image_size}}}'"
            )
    for key in cfg.lowdim_keys:
        if obs[key].shape[1:] != (cfg.lowdim_dims[key],):
            raise RolloutError(
                f"{where}: {key} has shape {obs[key].shape[1:]}, the policy expects ({cfg.lowdim_dims[key]},)"
            )


def cameras_read(
    cfg: Any, env_args: dict[str, Any], overrides: dict[str, Any], video_key: str | None
) -> dict[str, Any]:
    """`overrides` with a robosuite env rendering only the cameras the policy reads (and the
    video's): a policy trained on one camera of a two-camera dataset does not pay for the
    other's frames. Each camera renders on its own, so the frames are the same either way.
    Unchanged where the caller chose `cameras`, for other envs, or a policy without a `cfg`."""
    keys = tuple(getattr(cfg, "camera_keys", ()) or ())
    if not keys or "cameras" in overrides or env_args.get("type") != ROBOSUITE_TYPE:
        return overrides
    keys += (video_key,) if video_key and video_key not in keys else ()
    suffix = "_image"
    return {**overrides, "cameras": [k[: -len(suffix)] for k in keys if k.endswith(suffix)]}


def _cuda_devices(policy: Any) -> int:
    """CUDA devices to render on: all of them for a policy on CUDA, none otherwise."""
    device = getattr(policy, "device", None)
    if getattr(device, "type", None) != "cuda":
        return 0
    import torch  # loaded already: the policy lives on a torch device

    return torch.cuda.device_count()


# ----------------------------------------------------------------------------- the loop


def run_episodes(
    policy: Policy,
    env_fns: Sequence[Callable[[], gym.Env]],
    *,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    video: int = 0,
    camera: str | None = None,
    check: Callable[[dict[str, np.ndarray]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `episodes` seeded episodes in E = len(env_fns) envs (a vector env; processes when
    E > 1). Returns `per_episode` (episode, seed, success, outcome, return, length, and
    `progress` where the task reports one in `info`, in episode order), `frames` ({i: [(image, step, success), ...]} of `camera` for the first
    `video` episodes), `wall_s`, `policy_s` and `env_steps`. `check(obs)` sees the first
    observations before the policy acts."""
    E = len(env_fns)
    vec_cls = gym.vector.AsyncVectorEnv if E > 1 else gym.vector.SyncVectorEnv
    # forkserver: workers fork from a clean server process, never from this one, which may
    # already hold a GL context (a collection run in the same process) or CUDA; a plain fork
    # then hangs the worker's EGL set-up. The server imports our modules once, so workers start fast.
    kw = {"context": "forkserver"} if E > 1 and sys.platform == "linux" else {}
    # A policy that draws its actions (the recipe's open/close) draws from torch's generator:
    # seeded with `seed` for the run, the caller's state restored after (every caller alike).
    with _seeded_torch(seed):
        venv = vec_cls(list(env_fns), autoreset_mode=gym.vector.AutoresetMode.DISABLED, **kw)
        try:
            # Env slot e runs episodes in the order they are handed out; idle slots run a dummy episode.
            next_ep = min(E, episodes)
            slot_ep = np.array([e if e < episodes else -1 for e in range(E)])
            seeds = [episode_seed(seed, int(i)) if i >= 0 else 0 for i in slot_ep]
            obs, _ = venv.reset(seed=seeds)
            if check is not None:
                check(obs)
            policy.reset()
            ret, length, success = np.zeros(E), np.zeros(E, int), np.zeros(E, bool)
            frames: dict[int, list[tuple]] = {i: [] for i in range(min(video, episodes))}
            results: dict[int, dict] = {}
            t0, policy_time, env_steps = time.perf_counter(), 0.0, 0
            bar = tqdm(
                total=episodes,
                desc="eval",
                unit="ep",
                dynamic_ncols=True,
                leave=False,
                disable=not progress,
            )
            while len(results) < episodes:
                tp = time.perf_counter()
                actions = policy.select_action(obs)  # (E, A)
                policy_time += time.perf_counter() - tp
                obs, reward, terminated, truncated, info = venv.step(
                    np.asarray(actions, dtype=np.float64)
                )
                env_steps += int((slot_ep >= 0).sum())
                ret += reward
                length += 1
                success |= np.asarray(info.get("success", np.zeros(E, bool)), bool)
                for e in range(E):
                    if slot_ep[e] in frames and camera is not None:
                        frames[slot_ep[e]].append(
                            (np.array(obs[camera][e]), int(length[e]), bool(success[e]))
                        )
                done = terminated | truncated
                if max_steps:
                    done |= length >= max_steps
                if not done.any():
                    continue
                for e in np.flatnonzero(done):
                    if slot_ep[e] >= 0:
                        i = int(slot_ep[e])
                        results[i] = {
                            "episode": i,
                            "seed": episode_seed(seed, i),
                            "success": bool(success[e]),
                            "outcome": outcome(bool(success[e]), bool(terminated[e])),
                            "return": float(ret[e]),
                            "length": int(length[e]),
                        }
                        if (
                            "progress" in info
                        ):  # a task's partial progress (SequenceCue: items visited in order)
                            results[i]["progress"] = int(info["progress"][e])
                        bar.update(1)
                        bar.set_postfix(
                            success=f"{np.mean([r['success'] for r in results.values()]):.2f}"
                        )
                    slot_ep[e] = next_ep if next_ep < episodes else -1
                    next_ep += slot_ep[e] >= 0
                if len(results) == episodes:
                    break  # every episode is in: no reset for the dummy ones
                seeds = [episode_seed(seed, int(i)) if i >= 0 else 0 for i in slot_ep]
                obs, _ = venv.reset(seed=seeds, options={"reset_mask": done})
                policy.reset(done)
                ret[done], length[done], success[done] = 0, 0, False
            bar.close()
            wall = time.perf_counter() - t0
        finally:
            venv.close()
        return {
            "per_episode": [results[i] for i in range(episodes)],
            "frames": frames,
            "wall_s": wall,
            "policy_s": policy_time,
            "env_steps": env_steps,
        }


# ----------------------------------------------------------------------------- callers


def run_rollouts(
    policy: Policy,
    env_args: dict[str, Any],
    *,
    episodes: int,
    envs: int = 1,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    video: int = 0,
    video_camera: str | None = None,
    max_steps: int | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Roll `policy` out for `episodes` seeded episodes in `envs` parallel envs built from
    `env_args` (robomimic's, as a dataset or checkpoint stores them); returns the eval.json
    fields (videos go to `out` when `video` > 0). Env i renders on the EGL device of CUDA
    device i % (CUDA devices) for a policy on CUDA (through CUDA_VISIBLE_DEVICES)."""
    cfg = getattr(policy, "cfg", None)
    camera = video_camera or (cfg.camera_keys[0] if cfg is not None and cfg.camera_keys else None)
    overrides = cameras_read(cfg, env_args, overrides or {}, camera)
    n_gpu = _cuda_devices(policy)
    egl = [gl.egl_device(i % n_gpu) if n_gpu else None for i in range(envs)]
    fns = [functools.partial(make_on_egl_device, d, env_args, overrides) for d in egl]
    where = f"env {env_args.get('env_name')}"
    run = run_episodes(
        policy,
        fns,
        episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        video=video,
        camera=camera,
        check=lambda obs: check_compatible(policy, obs, where),
    )
    per_episode = run["per_episode"]
    summary = summarise(per_episode)
    lo, hi = summary["ci95"]
    report = {
        "env": env_args.get("env_name"),
        "env_overrides": overrides,
        "env_kwargs": {**env_args.get("env_kwargs", {}), **overrides},
        "core": cfg.core if cfg is not None else None,
        "seed": seed,
        "envs": envs,
        "success_rate": summary["success_rate"],
        "successes": summary["successes"],
        "failures": summary["failures"],
        "timeouts": summary["timeouts"],
        "episodes_run": summary["n"],
        "ci95_wilson": [lo, hi],
        "mean_return": summary["mean_return"],
        "mean_length": summary["mean_length"],
        **({"progress": summary["progress"]} if "progress" in summary else {}),
        "lengths": [e["length"] for e in per_episode],
        "wall_time_s": run["wall_s"],
        "policy_steps_per_s": run["env_steps"] / max(run["policy_s"], 1e-9),
        "env_steps_per_s": run["env_steps"] / run["wall_s"],
        "per_episode": per_episode,
        "videos": write_videos(run["frames"], out) if out is not None else [],
        # What really rendered (read from a context on env 0's device): a GPU machine that
        # fell back to llvmpipe shows here. Per env: the EGL device asked for (None: EGL's choice).
        "gl": {**gl.renderer_info(egl[0]), "egl_devices": egl},
    }
    return report


class _OneEnv:
    """A one-env policy (`reset()`, one observation -> (A,)) seen as a policy of E = 1 envs."""

    def __init__(self, policy: SingleEnvPolicy):
        self.policy = policy

    def reset(self, mask: np.ndarray | None = None) -> None:
        if mask is None or bool(np.asarray(mask).reshape(-1)[0]):
            self.policy.reset()

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        one = {k: v[0] for k, v in obs.items()}
        return np.asarray(self.policy.select_action(one), dtype=np.float64)[None]  # (1, A)


@contextlib.contextmanager
def _seeded_torch(seed: int):
    """torch's generators seeded with `seed` inside, the caller's state back after (CUDA's
    too once CUDA is in use); nothing when torch is not loaded (a torch-free policy)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    cuda = torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.manual_seed(seed)
        yield


def rollout(
    policy: SingleEnvPolicy,
    env_id_or_env_args: str | dict[str, Any],
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run `episodes` seeded episodes one after another in one env (`make_env`), the policy
    seeing one observation at a time and `reset()` before every episode; returns
    `summarise`'s dict plus `seconds`. `max_steps` caps an episode below the env's own
    truncation (None: the env's).

    The draws of a policy that samples are seeded with `seed` (`run_episodes`), so the same
    call gives the same episodes."""
    if episodes < 1:
        raise ValueError(f"rollout needs episodes >= 1; got {episodes}")
    start = time.perf_counter()
    run = run_episodes(
        _OneEnv(policy),
        [functools.partial(make_env, env_id_or_env_args, env_kwargs)],
        episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        progress=False,
    )
    results = [{k: v for k, v in e.items() if k != "episode"} for e in run["per_episode"]]
    return {**summarise(results), "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- videos


def _frame(image: np.ndarray, step: int, success: bool, scale: int = 4) -> np.ndarray:
    """Upscaled camera frame with the step and success written on it."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, 14), fill=(0, 0, 0))
    draw.text(
        (3, 1),
        f"step {step:3d}   success {'yes' if success else 'no'}",
        fill=(0, 255, 0) if success else (255, 255, 255),
    )
    return np.asarray(img)


def write_videos(frames: dict[int, list[tuple]], out: Path) -> list[str]:
    """`run_episodes`' frames -> out/video_<i>.mp4 (step and success overlaid); the paths."""
    paths = []
    if not any(frames.values()):
        return paths
    import imageio.v2 as imageio

    out.mkdir(parents=True, exist_ok=True)
    for i, fr in frames.items():
        if fr:
            path = out / f"video_{i}.mp4"
            imageio.mimwrite(path, [_frame(*f) for f in fr], fps=20, macro_block_size=1)
            paths.append(str(path))
    return paths

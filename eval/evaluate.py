"""`ttm-eval`: how good is this checkpoint? Parallel seeded rollouts, eval.json, videos.

    ttm-eval --checkpoint runs/pointcue/checkpoints/last --episodes 50 --envs 2 --video 2

The environment comes from the checkpoint's `env_args.json` (written by `ttm-train` from
the dataset's `data.attrs["env_args"]`), with `--task` / `--env-kwargs` overrides. Episodes
run in a gymnasium vector env (one process per env when `--envs` > 1, each with its own EGL
context); the policy acts for all envs in one batch and is reset per env at every episode
start. Episode i always gets reset seed `episode_seed(seed, i)` and env slots take episodes
in order, so the same seed and `--envs` give the same per-episode outcomes.

Writes into `--out`: eval.json (success rate with a 95% Wilson interval, mean return,
episode lengths, per-episode seed and outcome, wall time, policy and env steps/s) and
`video_<i>.mp4` for the first `--video` episodes (camera view, step and success overlaid).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro
from tqdm import tqdm

from envs import gl
from envs.env_args import make_on_egl_device
from eval.rollout import episode_seed, format_result, outcome, summarise
from ttm_policy import TTMPolicy

ENV_ARGS_NAME = "env_args.json"


class EvalError(ValueError):
    """A checkpoint and an environment that cannot be evaluated together; says why."""


@dataclass
class EvalConfig:
    checkpoint: Path
    """Checkpoint directory (config.json + model.safetensors [+ env_args.json])."""
    episodes: int = 50
    """Episodes to run."""
    envs: int = 1
    """Parallel environments (processes when > 1)."""
    video: int = 0
    """Record mp4 videos of the first K episodes."""
    seed: int = 0
    """Base seed: episode i is reset with seed * 100003 + i."""
    out: Path | None = None
    """Output directory; default: <run>/eval/<name> for <run>/checkpoints/<name> (so `best` and
    `last` do not overwrite each other), else <checkpoint>/eval."""
    task: str | None = None
    """Evaluate on this task (envs.TASKS) instead of the checkpoint's env_args."""
    env_kwargs: str = "{}"
    """JSON overrides of the env's kwargs, e.g. '{"delay_steps": 20}'."""
    max_steps: int | None = None
    """Cap on an episode's length below the env's own time limit."""
    device: str = "cpu"
    """Policy device: cpu or cuda (batched across envs)."""
    video_camera: str | None = None
    """Image key shown in videos; default: the policy's first camera."""
    threads: int | None = 1
    """torch intra-op threads for the policy on CPU (1: steadiest at batch sizes of a few envs)."""

    def __post_init__(self):
        for name in ("episodes", "envs"):
            if getattr(self, name) < 1:
                raise EvalError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.video < 0:
            raise EvalError(f"--video must be >= 0, got {self.video}")
        try:
            self.overrides = json.loads(self.env_kwargs)
        except json.JSONDecodeError as e:
            raise EvalError(f"--env-kwargs is not valid JSON ({e}): {self.env_kwargs!r}") from e


def load_env_args(cfg: EvalConfig) -> dict[str, Any]:
    """The env description: --task, else the checkpoint's env_args.json."""
    if cfg.task is not None:
        import envs

        envs.task_id(cfg.task)  # ValueError naming the known tasks
        return {"env_name": f"ttm/{cfg.task}-v0", "type": 2, "env_kwargs": {}}
    path = cfg.checkpoint / ENV_ARGS_NAME
    if not path.is_file():
        raise EvalError(f"{path}: missing; pass --task to say which environment to evaluate on")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: not valid JSON ({e})") from e


def check_compatible(policy: TTMPolicy, obs: dict[str, np.ndarray], where: str) -> None:
    """Fail at once, with one message, when the env's observations do not fit the policy."""
    cfg = policy.cfg
    missing = [k for k in cfg.obs_keys if k not in obs]
    if missing:
        raise EvalError(
            f"{where} gives no {missing} (it has {sorted(obs)}); the policy needs {list(cfg.obs_keys)}"
        )
    for key in cfg.camera_keys:
        shape = tuple(obs[key].shape[1:])
        if shape != (cfg.image_size, cfg.image_size, 3):
            raise EvalError(
                f"{where}: {key} is {shape}, the policy was trained on "
                f"{(cfg.image_size, cfg.image_size, 3)}; pass --env-kwargs '{{\"image_size\": {cfg.image_size}}}'"
            )
    for key in cfg.lowdim_keys:
        if obs[key].shape[1:] != (cfg.lowdim_dims[key],):
            raise EvalError(
                f"{where}: {key} has shape {obs[key].shape[1:]}, the policy expects ({cfg.lowdim_dims[key]},)"
            )


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


def run_rollouts(
    policy: TTMPolicy,
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
    `env_args`; returns the eval.json dict (videos go to `out` when `video` > 0)."""
    overrides = overrides or {}
    n_gpu = torch.cuda.device_count() if policy.device.type == "cuda" else 0
    # Env i renders on the EGL device of CUDA device i % n_gpu (through CUDA_VISIBLE_DEVICES).
    egl = [gl.egl_device(i % n_gpu) if n_gpu else None for i in range(envs)]
    fns = [functools.partial(make_on_egl_device, d, env_args, overrides) for d in egl]
    vec_cls = gym.vector.AsyncVectorEnv if envs > 1 else gym.vector.SyncVectorEnv
    # forkserver: workers fork from a clean server process, never from this one, which may
    # already hold a GL context (a collection run in the same process) or CUDA; a plain fork
    # then hangs the worker's EGL set-up. The server imports our modules once, so workers start fast.
    kw = {"context": "forkserver"} if envs > 1 and sys.platform == "linux" else {}
    E = envs
    venv = vec_cls(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED, **kw)
    camera = video_camera or (policy.cfg.camera_keys[0] if policy.cfg.camera_keys else None)
    try:
        # Env slot e runs episodes in the order they are handed out; idle slots run a dummy episode.
        next_ep = min(E, episodes)
        slot_ep = np.array([e if e < episodes else -1 for e in range(E)])
        seeds = [episode_seed(seed, int(i)) if i >= 0 else 0 for i in slot_ep]
        obs, _ = venv.reset(seed=seeds)
        check_compatible(policy, obs, f"env {env_args.get('env_name')}")
        policy.reset()
        ret, length, success = np.zeros(E), np.zeros(E, int), np.zeros(E, bool)
        frames: dict[int, list[np.ndarray]] = {i: [] for i in range(min(video, episodes))}
        results: dict[int, dict] = {}
        t0, policy_time, env_steps = time.perf_counter(), 0.0, 0
        bar = tqdm(total=episodes, desc="eval", unit="ep", dynamic_ncols=True, leave=False)
        while len(results) < episodes:
            tp = time.perf_counter()
            actions = policy.select_action(obs)  # (E, A)
            policy_time += time.perf_counter() - tp
            obs, reward, terminated, truncated, info = venv.step(actions.astype(np.float64))
            env_steps += int((slot_ep >= 0).sum())
            ret += reward
            length += 1
            success |= np.asarray(info.get("success", np.zeros(E, bool)), bool)
            for e in range(E):
                if slot_ep[e] in frames and camera is not None:
                    frames[slot_ep[e]].append(
                        _frame(obs[camera][e], int(length[e]), bool(success[e]))
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
                    bar.update(1)
                    bar.set_postfix(
                        success=f"{np.mean([r['success'] for r in results.values()]):.2f}"
                    )
                slot_ep[e] = next_ep if next_ep < episodes else -1
                next_ep += slot_ep[e] >= 0
            seeds = [episode_seed(seed, int(i)) if i >= 0 else 0 for i in slot_ep]
            obs, _ = venv.reset(seed=seeds, options={"reset_mask": done})
            policy.reset(done)
            ret[done], length[done], success[done] = 0, 0, False
        bar.close()
        wall = time.perf_counter() - t0
    finally:
        venv.close()

    per_episode = [results[i] for i in range(episodes)]
    summary = summarise(per_episode)
    lo, hi = summary["ci95"]
    report = {
        "env": env_args.get("env_name"),
        "env_overrides": overrides,
        "env_kwargs": {**env_args.get("env_kwargs", {}), **overrides},
        "core": policy.cfg.core,
        "seed": seed,
        "envs": E,
        "success_rate": summary["success_rate"],
        "successes": summary["successes"],
        "failures": summary["failures"],
        "timeouts": summary["timeouts"],
        "episodes_run": summary["n"],
        "ci95_wilson": [lo, hi],
        "mean_return": summary["mean_return"],
        "mean_length": summary["mean_length"],
        "lengths": [e["length"] for e in per_episode],
        "wall_time_s": wall,
        "policy_steps_per_s": env_steps / max(policy_time, 1e-9),
        "env_steps_per_s": env_steps / wall,
        "per_episode": per_episode,
        "videos": [],
        # What really rendered (read from a context on env 0's device): a GPU machine that
        # fell back to llvmpipe shows here. Per env: the EGL device asked for (None: EGL's choice).
        "gl": {**gl.renderer_info(egl[0]), "egl_devices": egl},
    }
    if frames and out is not None:
        import imageio.v2 as imageio

        out.mkdir(parents=True, exist_ok=True)
        for i, fr in frames.items():
            if fr:
                path = out / f"video_{i}.mp4"
                imageio.mimwrite(path, fr, fps=20, macro_block_size=1)
                report["videos"].append(str(path))
    return report


def default_out(checkpoint: Path) -> Path:
    """Where `ttm-eval` writes without `--out`: one directory per checkpoint of a run."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "eval" / checkpoint.name
    return checkpoint / "eval"


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """`ttm-eval`: load the checkpoint, run the rollouts, write eval.json (+ videos)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    policy = TTMPolicy.from_pretrained(cfg.checkpoint, device=cfg.device)
    env_args = load_env_args(cfg)
    out = cfg.out or default_out(cfg.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    report = run_rollouts(
        policy,
        env_args,
        episodes=cfg.episodes,
        envs=cfg.envs,
        seed=cfg.seed,
        overrides=cfg.overrides,
        video=cfg.video,
        video_camera=cfg.video_camera,
        max_steps=cfg.max_steps,
        out=out,
    )
    report = {"checkpoint": str(cfg.checkpoint), **report}
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        format_result(
            f"{report['env']} {report['core']}",
            {**report, "n": report["episodes_run"], "ci95": tuple(report["ci95_wilson"])},
        )
    )
    print(
        f"wrote {out / 'eval.json'}"
        + (f" and {len(report['videos'])} video(s)" if report["videos"] else "")
    )
    return report


def main(argv: list[str] | None = None) -> None:
    from ttm_policy.checkpoint import CheckpointError

    try:
        cfg = tyro.cli(EvalConfig, args=argv)
        evaluate(cfg)
    except (EvalError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"ttm-eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

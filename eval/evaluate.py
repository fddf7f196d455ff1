"""`ttm-eval`: how good is this checkpoint? Parallel seeded rollouts, eval.json, videos.

    ttm-eval --checkpoint runs/pointcue/checkpoints/last --episodes 50 --envs 2 --video 2

The environment comes from the checkpoint's `env_args.json` (written by `ttm-train` from
the dataset's `data.attrs["env_args"]`), with `--task` / `--env-kwargs` overrides. The
episodes run in the rollout loop that training-time evaluation runs too
(`envs.rollout.run_rollouts`): a gymnasium vector env (one process per env when `--envs` > 1,
each with its own EGL context), the policy acting for all envs in one batch and reset per
env at every episode start. Episode i always gets reset seed `episode_seed(seed, i)` and env
slots take episodes in order, so the same seed and `--envs` give the same per-episode outcomes.

Writes into `--out`: eval.json (success rate with a 95% Wilson interval, mean return,
episode lengths, per-episode seed and outcome, wall time, policy and env steps/s) and
`video_<i>.mp4` for the first `--video` episodes (camera view, step and success overlaid).

A multi-task checkpoint (its policy config names `tasks`) is evaluated task by task, each in
its own env (`task_env_args.json`, written by `ttm-train`) with the policy told that task, the
same seeded episodes for every task: `--task T` runs one of them, no `--task` runs every one.
Each task writes `<out>/<task>/eval.json` (and its videos); a run of every task also writes
`<out>/eval.json`, the summary: each task's success rate and interval, their mean
(`success_rate`) and the pooled episodes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from envs.rollout import RolloutError, format_result, run_rollouts, wilson
from ttm_policy import TTMPolicy
from ttm_policy.checkpoint import ENV_ARGS_NAME, TASK_ENV_ARGS_NAME

# A checkpoint and an environment that cannot be evaluated together, or a bad flag; says why.
EvalError = RolloutError


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
    """Evaluate on this task (envs.TASKS) instead of the checkpoint's env_args. A multi-task
    checkpoint: the one of its tasks to run (default: every one, with a summary)."""
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
    actions: Literal["checkpoint", "sample", "most-likely"] = "checkpoint"
    """How actions are chosen: as the checkpoint was trained to act (`sample_actions`; the
    presets sample a binary gripper's open/close), drawn from the policy's distribution
    (torch seeded from --seed), or the most likely."""

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


def load_task_env_args(cfg: EvalConfig, tasks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """A multi-task checkpoint's envs, {task: env_args} for each of its `tasks`, from its
    task_env_args.json; a task the file lacks (or a checkpoint without it) gets its registry
    env with the task's defaults, as --task makes it."""
    path, saved = cfg.checkpoint / TASK_ENV_ARGS_NAME, {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(saved, dict):
            raise EvalError(f"{path}: expected an object {{task: env_args}}")
    out = {}
    for task in tasks:
        if task in saved:
            out[task] = saved[task]
        else:
            import envs

            envs.task_id(task)  # ValueError naming the known tasks
            out[task] = {"env_name": f"ttm/{task}-v0", "type": 2, "env_kwargs": {}}
    return out


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
    if cfg.actions != "checkpoint":
        policy.cfg.sample_actions = cfg.actions == "sample"
    if policy.tasks:
        return evaluate_tasks(cfg, policy)
    env_args = load_env_args(cfg)  # the draws of a sampling policy: seeded by run_episodes
    out = cfg.out or default_out(cfg.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    return _evaluate_one(cfg, policy, env_args, out)


def _evaluate_one(
    cfg: EvalConfig, policy: TTMPolicy, env_args: dict[str, Any], out: Path, **extra: Any
) -> dict[str, Any]:
    """One env's rollouts -> out/eval.json (+ videos), a line on stdout; the report."""
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
    report = {
        "checkpoint": str(cfg.checkpoint),
        **extra,
        "sample_actions": policy.cfg.sample_actions,
        **report,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        format_result(
            f"{report['env']} {report['core']}" + (f" (task {extra['task']})" if extra else ""),
            {**report, "n": report["episodes_run"], "ci95": tuple(report["ci95_wilson"])},
        )
    )
    print(
        f"wrote {out / 'eval.json'}"
        + (f" and {len(report['videos'])} video(s)" if report["videos"] else "")
    )
    return report


def evaluate_tasks(cfg: EvalConfig, policy: TTMPolicy) -> dict[str, Any]:
    """A multi-task checkpoint: `--task`'s task, or every task of its vocabulary, each in its
    env with the policy told that task (out/<task>/eval.json); for every task also the summary
    out/eval.json. Returns the one task's report, or the summary."""
    tasks = policy.tasks
    if cfg.task is not None and cfg.task not in tasks:
        raise EvalError(
            f"--task {cfg.task}: the checkpoint's policy was trained on {list(tasks)}; choose "
            "one of them, or no --task for every one"
        )
    chosen = (cfg.task,) if cfg.task is not None else tasks
    env_args = load_task_env_args(cfg, chosen)
    out = cfg.out or default_out(cfg.checkpoint)
    reports = {}
    for task in chosen:
        policy.set_task(task)  # each task's draws seeded alike (run_episodes)
        reports[task] = _evaluate_one(cfg, policy, env_args[task], out / task, task=task)
    policy.set_task(None)
    if cfg.task is not None:
        return reports[cfg.task]
    successes = sum(r["successes"] for r in reports.values())
    episodes = sum(r["episodes_run"] for r in reports.values())
    keep = ("env", "success_rate", "successes", "episodes_run", "ci95_wilson", "mean_length")
    summary = {
        "checkpoint": str(cfg.checkpoint),
        "core": policy.cfg.core,
        "tasks": list(tasks),
        "success_rate": float(np.mean([r["success_rate"] for r in reports.values()])),
        "per_task": {t: {k: r[k] for k in keep} for t, r in reports.items()},
        "successes": successes,
        "episodes_run": episodes,
        "ci95_wilson": list(wilson(successes, episodes)),
        "episodes_per_task": cfg.episodes,
        "seed": cfg.seed,
        "sample_actions": policy.cfg.sample_actions,
        "files": {t: str(out / t / "eval.json") for t in tasks},
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"mean over {len(tasks)} tasks: {summary['success_rate']:.0%} "
        f"({successes}/{episodes} episodes); wrote {out / 'eval.json'}"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    from envs import gl
    from ttm_policy.checkpoint import CheckpointError

    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen, before any env is made
    try:
        cfg = tyro.cli(EvalConfig, args=argv)
        evaluate(cfg)
    except (EvalError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"ttm-eval: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

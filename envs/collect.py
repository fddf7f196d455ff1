"""`ttm-collect`: run a task's scripted expert and write the episodes as a robomimic dataset.

    ttm-collect --task PointCue --episodes 200 --out data/point_cue.hdf5 --workers 2
    ttm-collect --task Lift --episodes 200 --out data/lift.hdf5 --cameras agentview --image-size 84
    ttm-collect --task PlaceCued --episodes 100 --paired-cues --out data/place_cued.hdf5 --workers 2

Generic over tasks through the `envs/base.py` contract: every worker makes its env with
`gymnasium.make(envs.task_id(task), **env_kwargs)` and the expert with
`env.unwrapped.make_expert(noise, seed)`. Episode i is reset with a seed derived from
(--seed, i), so a dataset is the same for any number of workers. On a memory task,
`--paired-cues` records each scene once per cue instead (episode i: the scene of (--seed,
i // 2), cue i % 2): then only the cue tells a pair's actions apart, and a policy cannot learn
the choice from where the objects happen to lie. The file is written to a
hidden temporary name beside `--out` and renamed at the end; a summary is printed and saved
as `<out>.summary.json`. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import tyro
from tqdm import tqdm

import envs
from envs import gl
from envs.hdf5 import DemoWriter


class UsageError(Exception):
    """Bad input. Deliberately not a ValueError: tyro would turn that into a multi-line box."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; raised between episodes, so cleanup runs in a sane place."""


_stop_signal = 0  # set by the signal handler that `main` installs


def _on_signal(signum: int, frame: object) -> None:
    # Only set a flag: an exception raised from a handler can land inside a destructor or
    # weakref callback, where Python prints and swallows it, and the run would go on.
    global _stop_signal
    if _stop_signal:  # a second signal: stop at once (the finally blocks still run)
        raise Interrupted(signal.Signals(signum).name)
    _stop_signal = signum


@dataclasses.dataclass
class Args:
    task: str
    """task name (`envs.TASKS`), e.g. Lift, Stack, LiftCued, PointCue"""
    out: Path
    """output HDF5 file, e.g. data/lift.hdf5; its directory is created if missing"""
    episodes: int = 100
    """episodes to run (kept ones become demos)"""
    workers: int = 1
    """processes running episodes (1 = in this process)"""
    cameras: tuple[str, ...] | None = None
    """cameras to record as `<camera>_image`; None: the task's own choice"""
    image_size: int | None = None
    """camera image side in pixels; None: the task's own choice"""
    noise: float = 0.05
    """std of the Gaussian noise the expert adds to its actions (diversity)"""
    seed: int = 0
    """base seed: episode i is reset with a seed derived from (seed, i)"""
    keep_failures: bool = False
    """also keep episodes the expert failed (their demos have attr success=False)"""
    overwrite: bool = False
    """replace an existing output file"""
    valid_fraction: float = 0.1
    """fraction of kept demos listed in mask/valid (seeded random choice)"""
    cue_steps: int | None = None
    """memory tasks: steps the cue is shown; None: the task's own choice"""
    delay_steps: int | None = None
    """memory tasks: held-still steps after the cue; None: the task's own choice"""
    env_kwargs: str = "{}"
    """any other env constructor kwargs as JSON, e.g. '{"max_steps": 80}'"""
    paired_cues: bool = False
    """memory tasks: record every scene once with each cue (episodes 2k and 2k+1 share a scene
    and differ only in the cue), so nothing after the cue tells their actions apart and a policy
    cannot learn the choice from the scene instead of remembering the cue"""

    def __post_init__(self):
        if self.task not in envs.TASKS:
            raise UsageError(f"unknown task {self.task!r}; known tasks: {', '.join(envs.TASKS)}")
        for name in ("episodes", "workers", "image_size", "cue_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive; got {value}")
        if self.delay_steps is not None and self.delay_steps < 0:
            raise UsageError(f"--delay-steps must be >= 0; got {self.delay_steps}")
        if self.noise < 0:
            raise UsageError(f"--noise must be >= 0; got {self.noise}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0; got {self.seed}")
        if not 0 <= self.valid_fraction < 1:
            raise UsageError(f"--valid-fraction must be in [0, 1); got {self.valid_fraction}")
        if self.cameras is not None and len(self.cameras) == 0:
            raise UsageError("--cameras needs at least one camera name")
        try:
            extra = json.loads(self.env_kwargs)
        except json.JSONDecodeError as e:
            raise UsageError(f"--env-kwargs is not valid JSON ({e}): {self.env_kwargs!r}") from e
        if not isinstance(extra, dict):
            raise UsageError(f"--env-kwargs must be a JSON object; got {self.env_kwargs!r}")
        self.out = Path(self.out)


def env_class(task: str) -> type:
    """The task's env class (its entry in `envs/registry.py`), without making an env."""
    try:
        return envs.registry.load(envs.task_spec(task).env)
    except Exception as e:  # e.g. a task module that fails to import
        raise UsageError(f"cannot load task {task}: {type(e).__name__}: {e}") from e


def make_env_kwargs(args: Args) -> dict[str, Any]:
    """Env constructor kwargs: only the options the user gave, checked against the env's
    signature so that e.g. `--cue-steps` on a task without a cue fails clearly."""
    kwargs = json.loads(args.env_kwargs)
    given = dict(
        cameras=list(args.cameras) if args.cameras else None,
        image_size=args.image_size,
        cue_steps=args.cue_steps,
        delay_steps=args.delay_steps,
    )
    kwargs.update({k: v for k, v in given.items() if v is not None})
    params = inspect.signature(env_class(args.task)).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise UsageError(
                f"task {args.task} does not take {', '.join(unknown)}; it takes: "
                f"{', '.join(p for p in params if p != 'render_mode')}"
            )
    return kwargs


def episode_seed(seed: int, index: int) -> int:
    """Reset seed of episode `index`: well mixed, and independent of the worker count."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_episode(
    env: gym.Env, seed: int, noise: float, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One expert episode. Returns arrays in the robomimic layout (obs_t, state_t, a_t, r_t)."""
    task = env.unwrapped
    obs, info = env.reset(seed=seed, options=options)
    expert = task.make_expert(noise=noise, seed=seed)
    expert.reset()
    observations, states, actions, rewards = [], [], [], []
    done = False
    while not done:
        states.append(task.get_sim_state())
        observations.append(obs)
        action = np.asarray(expert.act(obs), dtype=np.float64)  # (7,)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        done = terminated or truncated
    n = len(actions)
    return {
        "seed": seed,
        "options": dict(options or {}),
        "success": bool(info["success"]),
        "actions": np.stack(actions),  # (N, 7)
        "rewards": np.asarray(rewards, np.float64),  # (N,)
        "dones": (np.arange(n) == n - 1).astype(np.int64),  # (N,)
        "states": np.stack(states),  # (N, S)
        "obs": {k: np.stack([o[k] for o in observations]) for k in observations[0]},
        "model_xml": task.model_xml(),
    }


# Worker processes keep one env each; these globals are per process.
_worker: dict[str, Any] = {}


def _worker_init(env_id: str, env_kwargs: dict[str, Any], noise: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _worker.update(env=gym.make(env_id, **env_kwargs), noise=noise)


def _worker_run(job: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    seed, options = job
    return run_episode(_worker["env"], seed, _worker["noise"], options)


def episode_jobs(args: Args, cues: int | None) -> list[tuple[int, dict[str, Any]]]:
    """(reset seed, reset options) of every episode. With --paired-cues, episode i shows cue
    i % cues on the scene of seed (--seed, i // cues); otherwise the seed draws the cue too."""
    if not args.paired_cues:
        return [(episode_seed(args.seed, i), {}) for i in range(args.episodes)]
    if cues is None:
        raise UsageError(f"--paired-cues needs a memory task with a cue; {args.task} has none")
    if args.episodes % cues:
        raise UsageError(
            f"--paired-cues records each scene once per cue: --episodes must be a multiple of "
            f"{cues}; got {args.episodes}"
        )
    return [(episode_seed(args.seed, i // cues), {"cue": i % cues}) for i in range(args.episodes)]


def _check_output(args: Args) -> Path:
    """Validate the output path; return the temporary path to write to."""
    out = args.out
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out}/demos.hdf5")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    for parent in out.parents:  # the first existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"cannot write {out}: {parent} is not a directory")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {out.parent}: {e.strerror}") from e
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:  # prove we can write there before running any episode
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to {out.parent}: {e.strerror}") from e
    return tmp


def collect(args: Args) -> dict[str, Any]:
    """Run the episodes, write `args.out` and `<out>.summary.json`; return the summary."""
    env_id = envs.task_id(args.task)
    env_kwargs = make_env_kwargs(args)
    jobs = episode_jobs(args, getattr(env_class(args.task), "cues", None))
    tmp = _check_output(args)
    try:  # one env here: checks the kwargs and cameras, and gives env_args
        probe = gym.make(env_id, **env_kwargs)
    except Exception as e:
        msg = " ".join(str(e).split())
        raise UsageError(f"cannot make {args.task} with {env_kwargs}: {msg}") from e
    if args.cameras:
        have = [
            k.removesuffix("_image") for k in probe.observation_space.spaces if k.endswith("_image")
        ]
        unknown = [c for c in args.cameras if c not in have]
        if unknown:
            probe.close()
            raise UsageError(f"unknown camera(s) {unknown} for {args.task}; it renders: {have}")
    env_args = probe.unwrapped.env_args()

    tried = kept = successes = steps = 0
    start = time.perf_counter()
    pool = writer = bar = None
    try:
        writer = DemoWriter(tmp, env_args)
        if args.workers == 1:
            episodes = (run_episode(probe, s, args.noise, o) for s, o in jobs)
        else:
            probe.close()  # each worker makes its own
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(args.workers, _worker_init, (env_id, env_kwargs, args.noise))
            episodes = pool.imap(_worker_run, jobs)  # results come back in episode order
        bar = tqdm(total=args.episodes, desc=f"collect {args.task}", unit="ep")
        for ep in episodes:
            if _stop_signal:
                raise Interrupted(signal.Signals(_stop_signal).name)
            tried += 1
            successes += ep["success"]
            steps += len(ep["actions"])
            if ep["success"] or args.keep_failures:
                writer.add(
                    ep, ep["model_xml"], seed=ep["seed"], success=ep["success"], **ep["options"]
                )
                kept += 1
            bar.update()
            bar.set_postfix(kept=kept, success=f"{successes / tried:.0%}")
        bar.close()
        if kept == 0:
            raise UsageError(
                f"the expert succeeded in none of {tried} episodes; nothing written "
                "(pass --keep-failures to keep failed episodes)"
            )
        train, valid = writer.finish(args.valid_fraction, args.seed)
        os.replace(tmp, args.out)  # atomic: the output name only ever holds a whole file
    finally:
        if bar is not None:
            bar.close()  # ends the bar's line, so an error printed after it has its own
        if writer is not None:
            writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        if args.workers == 1:
            probe.close()
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start

    summary = {
        "out": str(args.out),
        "task": args.task,
        "episodes_tried": tried,
        "episodes_kept": kept,
        "expert_success_rate": successes / tried,
        "steps": steps,
        "samples_kept": writer.total,
        "train_demos": len(train),
        "valid_demos": len(valid),
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 1),
        "file_size_bytes": args.out.stat().st_size,
        "env_args": env_args,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    Path(f"{args.out}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen; workers inherit it
    # Ctrl-C and SIGTERM (`kill`, a job scheduler) stop the run between episodes and remove
    # the temporary file; the output name is never written.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        args = tyro.cli(Args, description=__doc__.split("\n")[0])
        s = collect(args)
    except UsageError as e:
        print(f"ttm-collect: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"ttm-collect: interrupted by {e}; no output written", file=sys.stderr)
        sys.exit(128 + (_stop_signal or signal.SIGINT))
    print(
        f"{s['task']}: kept {s['episodes_kept']}/{s['episodes_tried']} episodes "
        f"(expert success {s['expert_success_rate']:.1%}), {s['steps']} steps in "
        f"{s['seconds']:.1f} s ({s['steps_per_s']:.0f} steps/s)\n"
        f"wrote {s['out']} ({s['file_size_bytes'] / 1e6:.2f} MB, {s['train_demos']} train / "
        f"{s['valid_demos']} valid demos) and {s['out']}.summary.json"
    )


if __name__ == "__main__":
    main()

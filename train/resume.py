"""A run's checkpoints: writing them, finding the newest readable one, and resuming from it.

`save_checkpoint` writes checkpoints/<step>/ and checkpoints/last/ (each in one rename);
`resume` loads the newest complete one (weights, optimiser, EMA, this rank's RNG, the --chunk
lanes' memory) after `check_resumable` has refused a run whose model or data differ. See
train/train.py's docstring for the files and the guarantees. Imports: train.data's types,
ttm_policy; not train.train (the trainer's types are annotations only).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ttm_policy.checkpoint import (
    CONFIG_NAME,
    ENV_ARGS_NAME,
    TASK_ENV_ARGS_NAME,
    WEIGHTS_NAME,
    atomic_directory,
    remove_directory,
    remove_leftovers,
    write_policy_files,
)
from ttm_policy.policy import PolicyConfig

if TYPE_CHECKING:
    from train.train import Dist, TrainConfig


def checkpoint_steps(out: Path) -> list[int]:
    """Steps of the complete numbered checkpoints in `out/checkpoints`, ascending."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if re.fullmatch(r"\d+", p.name) and (p / "trainer_state.json").is_file()
    )


# Fields of TrainConfig that can change between a run and its resume without making the
# checkpoint meaningless; any other difference (the data, the model) refuses the resume.
RESUMABLE_CHANGES = {
    "steps", "lr", "weight_decay", "warmup", "min_lr_ratio", "grad_clip", "device",
    "log_every", "save_every", "keep_last", "valid_every", "valid_batches", "eval_every",
    "eval_episodes", "eval_envs", "eval_video", "eval_env_kwargs", "resume", "wandb",
    "wandb_project", "threads",
}  # fmt: skip


def find_resume_checkpoint(out: Path, say: bool = True):
    """The newest checkpoint under `out/checkpoints` whose files all read and agree:
    (directory, trainer state, tensors {train, model, optimizer, rng}); damaged ones are
    skipped with a line each; None if there is none. `last` counts when it holds a step no
    numbered checkpoint has (a run whose numbered ones were deleted)."""
    root = out / "checkpoints"
    candidates = [root / str(s) for s in reversed(checkpoint_steps(out))]
    if (root / "last" / "trainer_state.json").is_file():
        candidates.append(root / "last")
    for ck in candidates:
        try:
            state = json.loads((ck / "trainer_state.json").read_text())
            if not isinstance(state, dict) or not isinstance(state.get("step"), int):
                raise ValueError("trainer_state.json has no integer 'step'")
            tensors = {
                "train": load_file(ck / state["train_weights"]),
                "model": load_file(ck / WEIGHTS_NAME),
                "optimizer": load_file(ck / "optimizer.safetensors"),
                "rng": load_file(ck / "rng.safetensors"),
            }
            if state.get("stream_memory"):  # the --chunk lanes' memory
                tensors["stream"] = load_file(ck / "stream.safetensors")
            json.loads((ck / CONFIG_NAME).read_text())["policy"]  # noqa: B018
            shapes = {k: v.shape for k, v in tensors["model"].items()}
            if {k: v.shape for k, v in tensors["train"].items()} != shapes:
                raise ValueError("the training weights and model.safetensors disagree")
            state["optimizer"]["param_groups"]  # noqa: B018 - present, or KeyError
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            if say:
                print(
                    f"ttm-train: --resume: skipping {ck}: {type(e).__name__}: {e}", file=sys.stderr
                )
            continue
        return ck, state, tensors
    return None


def check_resumable(cfg: TrainConfig, policy, ck: Path, say: bool = True) -> None:
    """Refuse a resume whose model or data differ from the checkpoint's run (naming the
    fields); print the training settings that differ, which take effect from here on. A
    larger --steps stretches the cosine schedule: the learning rate follows the new one."""
    # Through PolicyConfig, so fields added since (defaults) do not count as differences.
    saved = PolicyConfig.from_dict(json.loads((ck / "config.json").read_text())["policy"]).to_dict()
    now = policy.cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ValueError(
            f"--resume: the model differs from {ck}'s: "
            + "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in diff)
            + " (resume with the same model, or choose another --out)"
        )
    path = cfg.out / "config.json"
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    if before.get("mode", "episode") != "episode":
        raise ValueError(
            f"--resume: the run in {cfg.out} trained on {before.get('window')}-step windows with "
            "a memory reset at every window start, which inference never makes; ttm-train now "
            "trains whole episodes only: start a new run (another --out)"
        )
    before.pop("mode", None)
    before.setdefault("chunk", 0)  # runs saved before --chunk trained whole episodes
    after = json.loads(json.dumps(asdict(replace(cfg, model=policy.cfg)), default=str))
    for d in (before, after):  # the same files, however the paths were written
        if d.get("out"):
            d["out"] = str(Path(d["out"]).resolve())
        if d.get("dataset"):  # one path (a single file's run config) or a list of them
            files = [d["dataset"]] if isinstance(d["dataset"], str) else d["dataset"]
            d["dataset"] = [str(Path(p).resolve()) for p in files]
    changed = {
        k: (before.get(k), after[k])
        for k in after
        if k not in ("model", "obs_keys") and before.get(k) != after[k]
    }
    refused = sorted(k for k in changed if k not in RESUMABLE_CHANGES)
    if refused:
        raise ValueError(
            f"--resume: {', '.join(f'--{k.replace(chr(95), chr(45))}' for k in refused)} "
            f"differ from the run in {cfg.out} ("
            + "; ".join(f"{changed[k][0]!r} there, {changed[k][1]!r} now" for k in refused)
            + "): resume with the same values, or choose another --out"
        )
    changed.pop("resume", None)
    if changed and say:
        print(
            "ttm-train: --resume with changed settings (recorded in resumes.jsonl): "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items())),
            file=sys.stderr,
        )
    if changed and say:
        with (cfg.out / "resumes.jsonl").open("a") as f:
            step = json.loads((ck / "trainer_state.json").read_text())["step"]
            f.write(json.dumps({"step": step, "changed": changed}, default=str) + "\n")


def write_env_args(directory: Path, env_args: dict | None, task_env_args: dict | None) -> None:
    """The training data's env(s) beside a policy, so ttm-eval can re-create them: one task's
    env_args.json, or a multi-task run's task_env_args.json ({task: env_args} in the order of
    the policy's `tasks`)."""
    if task_env_args:
        (directory / TASK_ENV_ARGS_NAME).write_text(json.dumps(task_env_args, indent=2))
    elif env_args:
        (directory / ENV_ARGS_NAME).write_text(json.dumps(env_args, indent=2))


def saved_train_seconds(out: Path, step: int) -> float:
    """`train_s` of the checkpoint at `step` in `out` (the one a resume loaded; 0 for runs
    saved before it was recorded). Reads only its trainer_state.json."""
    for ck in (out / "checkpoints" / str(step), out / "checkpoints" / "last"):
        try:
            state = json.loads((ck / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("step") == step:
            return float(state.get("train_s", 0.0))
    return 0.0


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (safetensors) and the rest (JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        _, idx, k = name.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for name, v in meta["scalars"].items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def resume(cfg: TrainConfig, policy, opt, ema, dist: Dist) -> tuple[int, Any]:
    """The step to start from and the --chunk lanes' memory there: with --resume, load the
    newest readable checkpoint (weights, optimiser, EMA, this rank's RNG and lanes) and return
    (its step, its memory or None) ((0, None) when there is none yet); without it, refuse an
    `out` that already holds checkpoints."""
    if not cfg.resume:
        if dist.main and cfg.out.exists() and checkpoint_steps(cfg.out):
            raise FileExistsError(
                f"{cfg.out} already holds checkpoints: pass --resume, or choose another --out"
            )
        return 0, None
    resumed = find_resume_checkpoint(cfg.out, say=dist.main)
    if resumed is None:
        if dist.main:
            print(
                f"ttm-train: --resume: no checkpoint under {cfg.out / 'checkpoints'} yet: "
                "starting from step 0",
                file=sys.stderr,
            )
        return 0, None
    ck, state, tensors = resumed
    check_resumable(cfg, policy, ck, say=dist.main)
    policy.load_state_dict(tensors["train"])
    load_optimizer(opt, tensors["optimizer"], state["optimizer"])
    if ema is not None:
        ema.module.load_state_dict(tensors["model"])
        ema.n_averaged.fill_(state["ema_n_averaged"])
    rng, rank = tensors["rng"], dist.rank
    torch.set_rng_state(rng[f"torch.{rank}"] if f"torch.{rank}" in rng else rng["torch.0"])
    cuda_rng = f"cuda.{rank}" if f"cuda.{rank}" in rng else "cuda.0"
    if dist.device.type == "cuda" and cuda_rng in rng:
        torch.cuda.set_rng_state(rng[cuda_rng], dist.device)
    return state["step"], saved_memory(tensors, state, rank, dist.device)


def saved_memory(tensors: dict, state: dict, rank: int, device: torch.device) -> Any:
    """The --chunk lanes' memory of rank `rank` in a loaded checkpoint (None if none was saved):
    a tensor or a tuple of tensors, as the core holds its state."""
    kind, saved = state.get("stream_memory"), tensors.get("stream", {})
    if kind is None:
        return None
    parts = [
        saved[k].to(device)
        for k in sorted(
            (k for k in saved if k.startswith(f"{rank}.")), key=lambda k: int(k.split(".")[1])
        )
    ]
    return parts[0] if kind == "Tensor" else tuple(parts)


def save_checkpoint(
    cfg: TrainConfig,
    policy,
    opt,
    ema,
    dist: Dist,
    env_args,
    at: int,
    train_s: float = 0.0,
    memory=None,
    task_env_args: dict | None = None,
) -> None:
    """Write checkpoints/<at>/ and checkpoints/last/, each in one rename (rank 0; every rank
    must call it, for the RNG and memory gather), then drop numbered ones beyond --keep-last.
    `train_s`: seconds spent in optimiser steps so far (a resumed run's learning curve
    continues it). `memory`: the --chunk lanes' carried state after step `at`, saved so a
    resumed run continues their episodes from it (stream.safetensors). `task_env_args`: a
    multi-task run's {task: env_args} (task_env_args.json, instead of `env_args`)."""
    mine: dict[str, Any] = {"torch": torch.get_rng_state()}
    if dist.device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(dist.device).cpu()
    lanes = [memory] if isinstance(memory, torch.Tensor) else list(memory or ())
    mine["memory"] = [t.detach().cpu() for t in lanes]
    states = [mine]
    if dist.world > 1:  # every rank's RNG and lanes, so each resumes its own
        states = [None] * dist.world
        torch.distributed.all_gather_object(states, mine)
    if not dist.main:
        return
    stream = {
        f"{r}.{i}": t.contiguous()
        for r, st in enumerate(states)
        for i, t in enumerate(st.pop("memory"))
    }
    rng = {f"{kind}.{r}": t for r, st in enumerate(states) for kind, t in st.items()}
    opt_tensors, opt_meta = optimizer_tensors(opt)
    root = cfg.out / "checkpoints"
    for name in (str(at), "last"):
        with atomic_directory(root / name) as tmp:
            if ema is not None:
                write_policy_files(ema.module, tmp)  # what users load: the EMA weights
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()},
                    tmp / "train_model.safetensors",
                )
            else:
                write_policy_files(policy, tmp)
            save_file(opt_tensors, tmp / "optimizer.safetensors")
            write_env_args(tmp, env_args, task_env_args)
            save_file(rng, tmp / "rng.safetensors")
            if stream:
                save_file(stream, tmp / "stream.safetensors")
            state = {
                "step": at,
                "optimizer": opt_meta,
                "train_config": str(cfg.out / "config.json"),
                "train_weights": "train_model.safetensors" if ema is not None else WEIGHTS_NAME,
                "ema_n_averaged": int(ema.n_averaged.item()) if ema is not None else None,
                "train_s": train_s,
                "stream_memory": None if memory is None else type(memory).__name__,
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
    for old in checkpoint_steps(cfg.out)[: -cfg.keep_last]:
        remove_directory(root / str(old))  # gone in one rename, never half-deleted
    remove_leftovers(root)  # what earlier kills left behind

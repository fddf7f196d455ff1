"""`ttm-train`: behaviour cloning for every policy, one loop, top to bottom.

    seed -> data -> model -> optimiser -> (resume) -> loop [step, log, validate, save] -> save

`train()` reads in that order: `setup_distributed` (device, process group, seed),
`build_data`, `build_model` (policy, AdamW, EMA), `resume`, then per step `train_step` (public:
one optimiser step, as the benchmarks time it), `validate`, `RolloutEval` (the rollout loop of
`ttm-eval`, `envs.rollout`; train/ never imports eval/) and `save_checkpoint`. Checkpoints and
resuming live in train/resume.py; the data order in train/data.py; presets in train/presets.py;
`TrainConfig` and the command line (`parse_args`) in train/config.py.

Several tasks: `--dataset a.hdf5 b.hdf5 ...` with files of different tasks (each file's task
from its env_args, `train.data.task_name`) trains one multi-task policy. `build_data` merges
the files (`train.data.merge_demos`: same observation keys, shapes and action width, or an
error naming the files), tags every episode with its task, and sets `model.tasks`, the task
names the checkpoint keeps; the batches mix the tasks, the statistics cover all of them, and
the loop is the same. One file (or files of one task) trains exactly as before.

Output directory:
    config.json                 the resolved TrainConfig (policy config included)
    metrics.jsonl               one JSON object per logged step (`losses/...`, `charts/...`, `valid/...`)
    checkpoints/<step>/         config.json + model.safetensors (loadable by TTMPolicy.from_pretrained)
                                + optimizer.safetensors, trainer_state.json, rng.safetensors,
                                stream.safetensors (--chunk lanes' memory) (resume),
                                env_args.json (the data's env; several tasks:
                                task_env_args.json, {task: env_args}) for ttm-eval
    checkpoints/last/           the same files as the newest checkpoint

    resumes.jsonl               what a --resume changed (e.g. --lr), with the step it took effect

Every checkpoint directory appears in one rename, complete or not at all, and replaces an
older one in one step (`ttm_policy.checkpoint.atomic_directory`), so `kill -9` at any moment
loses no completed checkpoint and never leaves the run without `last`; what a kill leaves
half-written is deleted by the next save. `--resume` continues from the newest checkpoint
whose files all read (damaged ones are skipped, each with a line; `last` alone will do), with
the same step count, data order (a pure function of seed and step) and torch (and CUDA) RNG
state; with no checkpoint yet it starts at step 0 and says so, so a restart loop may always
pass `--resume`. A resume refuses another model, dataset, seed or batch (naming
the fields) and records other changes in resumes.jsonl. A larger `--steps` stretches the
cosine schedule from the resumed step on (the learning rate follows the new schedule, so it
rises): that is the rule, not an accident. metrics.jsonl is never rewritten in place (a
resume writes the kept history to a new file that replaces it) and a torn last line is
skipped. A non-finite loss or gradient stops the run before the optimiser step (exit 1),
so every checkpoint on disk holds finite weights.

Under `torchrun --nproc-per-node N` the same command runs DDP (gloo on CPU, NCCL on GPU):
`--batch-size` is the global batch, each rank takes its slice of it.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from train.config import TrainConfig, parse_args  # noqa: F401 - ttm-train's settings, re-exported
from train.data import (
    ChunkDataset,
    DataConfig,
    DatasetError,
    Demos,
    EpisodeDataset,
    EpisodeStreams,
    StepBatchSampler,
    compute_stats,
    first_demo_obs_keys,
    has_split,
    is_gripper_column,
    is_image_key,
    load_demos,
    make_dataset,
    merge_demos,
    trim_padding,
)
from train.resume import (
    checkpoint_steps,
    resume,
    save_checkpoint,
    saved_train_seconds,
    write_env_args,
)
from ttm_policy.checkpoint import (
    atomic_directory,
    write_policy_files,
)
from ttm_policy.policy import PolicyConfig, TTMPolicy

STANDARD_LOWDIM = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


# ----------------------------------------------------------------------------- helpers


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine from lr to lr * min_lr_ratio."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (
        cfg.min_lr_ratio
        + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    )


def make_ema(policy: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An EMA copy of `policy`: floating parameters and buffers averaged with `decay`,
    integer and bool buffers (e.g. `token_source`, ids) copied. torch's EMA averages those
    too, in float, then truncates: at decay 0.9995 id 3 becomes 2."""
    ema_floats = torch.optim.swa_utils.get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: list, current: list, n_averaged) -> None:
        if averaged[0].is_floating_point():  # each call holds one dtype (and device)
            ema_floats(averaged, current, n_averaged)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)

    return torch.optim.swa_utils.AveragedModel(policy, multi_avg_fn=update, use_buffers=True)


def infer_obs_keys(path: Path) -> tuple[str, ...]:
    """Every `*_image` key of the first demo, then the standard robot low-dim keys it has.
    A file that cannot be read this far is a DatasetError (one line naming file, demo, key)."""
    keys = first_demo_obs_keys(path)
    images = sorted(k for k in keys if is_image_key(k))
    return tuple(images) + tuple(k for k in STANDARD_LOWDIM if k in keys)


def crop_side(fraction: float, image_size: int) -> int:
    """Side in pixels of the training crop that --crop (a fraction of the side) asks for."""
    return max(1, round(fraction * image_size))


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: the run stops before the optimiser step."""


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl; a torn last line (a kill mid-write) is skipped."""
    rows = []
    lines = path.read_text().splitlines() if path.is_file() else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return rows


def last_logged_loss(out: Path) -> float | None:
    """The newest `losses/total` in out/metrics.jsonl (for a run resumed at its end)."""
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "losses/total" in r]
    return rows[-1]["losses/total"] if rows else None


def _finite_or_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Logger:
    """metrics.jsonl (always) and wandb (when enabled); rank 0 only.

    A resumed run keeps the history up to its checkpoint: the kept lines go to a new file
    that replaces metrics.jsonl in one rename, so a kill at any moment leaves either the old
    history or the new one (never an empty file). Non-finite values are written as null."""

    def __init__(self, cfg: TrainConfig, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = cfg.out / "metrics.jsonl"
        self.run = None
        if not enabled:
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        if resume_step == 0:
            keep = []
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with tmp.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if cfg.wandb != "disabled":
            import wandb

            self.run = wandb.init(
                project=cfg.wandb_project,
                mode=cfg.wandb,
                dir=str(cfg.out),
                config=json.loads(json.dumps(asdict(cfg), default=str)),
                name=cfg.out.name,
                resume="allow",
            )

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        plain = {  # no videos; NaN/inf as null, so the file stays JSON
            k: _finite_or_none(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float, str, bool))
        }
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **plain}, allow_nan=False) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


# ----------------------------------------------------------------------------- setup


@dataclass
class Dist:
    """Where this process trains: its rank among `world` processes and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes the files, validates and runs the rollouts."""
        return self.rank == 0

    def barrier(self) -> None:
        torch.distributed.barrier(
            device_ids=[self.device.index] if self.device.type == "cuda" else None
        )


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Device, process group (under torchrun), threads and the per-rank torch seed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {cfg.device}: this torch ({torch.__version__}) "
            + ("is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device")
            + ": use --device cpu or auto"
        )
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        # Rank 0 alone runs validation and rollouts (minutes of simulated episodes) while the
        # other ranks wait for it at a barrier; under NCCL's default timeout (10 minutes) the
        # watchdog would abort the job there. The price: a collective that is really stuck
        # takes this long to fail.
        torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2)
        )
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {world} ranks")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Per-rank crops / dropout; the data order comes from the sampler.
    torch.manual_seed(cfg.seed + rank)
    return Dist(world, rank, device)


@dataclass
class Data:
    """The training demos (decoded once into RAM) as a dataset, and the validation set."""

    obs_keys: tuple[str, ...]
    demos: Demos
    dataset: EpisodeDataset | ChunkDataset
    valid_set: EpisodeDataset | None
    model_cfg: PolicyConfig  # cfg.model with obs_keys, core and image/crop size from the data


def _one_demos(parts: list[Demos], like: Demos | None = None) -> Demos:
    """The demos of one or several files as one `Demos`: a single file's as they are; several
    files' merged (`merge_demos`), their episodes tagged with their tasks, unless they are all
    of one task (then a single-task policy trains on all of them, untagged)."""
    if len(parts) == 1:
        return parts[0]
    demos = merge_demos(parts, like=like if like is not None and like.tasks else None)
    if len(demos.tasks) == 1:
        (env_args,) = demos.tasks.values()
        demos = replace(demos, env_args=env_args, tasks={}, task_ids=None)
    return demos


def build_data(cfg: TrainConfig, main_rank: bool) -> Data:
    """Read and check the training (and validation) demos of every --dataset file; fill the
    model config from them (several tasks: `model.tasks`). Every problem with a file is one
    DatasetError naming the file, demo and key."""
    for path in cfg.dataset:
        if not path.is_file():
            raise FileNotFoundError(f"--dataset {path}: no such file")
    if cfg.obs_keys:
        obs_keys = tuple(cfg.obs_keys)
    else:
        obs_keys = infer_obs_keys(cfg.dataset[0])
        for path in cfg.dataset[1:]:
            if infer_obs_keys(path) != obs_keys:
                raise DatasetError(
                    f"{path}: its default observation keys {list(infer_obs_keys(path))} differ "
                    f"from {cfg.dataset[0]}'s {list(obs_keys)}; name common ones with --obs-keys"
                )
    parts = [load_demos(str(p), obs_keys, "train") for p in cfg.dataset]
    # The validation demos are read and checked now, like the training ones: a broken
    # mask/valid (empty, naming a missing demo, NaN, another image size) stops the run here,
    # not silently or at the first validation. No mask/valid at all: no validation, said once.
    valid_parts = []
    if cfg.valid_every:
        with_valid = [(p, d) for p, d in zip(cfg.dataset, parts) if has_split(p, "valid")]
        valid_parts = [load_demos(str(p), obs_keys, "valid", like=d) for p, d in with_valid]
        without = [str(p) for p in cfg.dataset if not any(p == q for q, _ in with_valid)]
        if without and main_rank:
            print(
                f"ttm-train: {', '.join(without)} "
                + ("has" if len(without) == 1 else "have")
                + " no mask/valid, so "
                + ("no validation loss" if not valid_parts else "no validation loss on it")
                + " (write mask/valid to get one, or pass --valid-every 0)",
                file=sys.stderr,
            )
    demos = _one_demos(parts)
    notice = memory_beyond_chunk(demos.env_args, demos.lengths, cfg.chunk, demos.path)
    if notice and main_rank:
        print(notice, file=sys.stderr)
    where = demos.path
    for k in obs_keys:
        if is_image_key(k) and demos.obs_shapes[k][0] != demos.obs_shapes[k][1]:
            raise DatasetError(
                f"{where}, demo {demos.names[0]!r}, key {k!r}: "
                f"{demos.obs_shapes[k][0]}x{demos.obs_shapes[k][1]} images; the policy takes "
                "square images: resize them"
            )
    image_sizes = {demos.obs_shapes[k][0] for k in obs_keys if is_image_key(k)}
    if len(image_sizes) > 1:
        raise DatasetError(f"{where}: cameras differ in size {sorted(image_sizes)}; use one size")
    image_size = image_sizes.pop() if image_sizes else cfg.model.image_size
    crop = crop_side(cfg.crop, image_size)
    model_cfg = replace(
        cfg.model,
        obs_keys=obs_keys,
        core=cfg.policy,
        image_size=image_size,
        crop_size=crop,
        action_dim=demos.action_dim,
        tasks=tuple(demos.tasks),
        binary_gripper=(
            is_gripper_column(demos.actions[:, -1])
            if cfg.model.binary_gripper is None
            else cfg.model.binary_gripper
        ),
    )
    horizon = model_cfg.action_horizon
    data_cfg = DataConfig(
        path=str(cfg.dataset[0]),
        obs_keys=obs_keys,
        action_horizon=horizon if horizon > 1 else 0,
    )
    dataset = (
        ChunkDataset(demos, cfg.chunk, action_horizon=data_cfg.action_horizon)
        if cfg.chunk
        else make_dataset(data_cfg, demos)
    )
    valid_set = None
    if valid_parts:
        valid_demos = _one_demos(valid_parts, like=demos)
        valid_set = make_dataset(replace(data_cfg, split="valid"), valid_demos)
    return Data(obs_keys, demos, dataset, valid_set, model_cfg)


def memory_beyond_chunk(
    env_args: dict[str, Any], lengths: Any, chunk: int, where: str
) -> str | None:
    """The notice `ttm-train` prints when a memory task's episodes (its env_kwargs have a
    `delay_steps`) are longer than the `--chunk` pieces the gradient is cut into: a decision
    more than `chunk` steps after the cue cannot teach the memory to keep it. None otherwise."""
    kwargs = env_args.get("env_kwargs") or {}
    longest = int(max(lengths)) if len(lengths) else 0
    if not chunk or "delay_steps" not in kwargs or longest <= chunk:
        return None
    return (
        f"ttm-train: {where}: a memory task (delay_steps={kwargs['delay_steps']}) whose "
        f"episodes run up to {longest} steps, trained in --chunk {chunk} pieces: the gradient "
        f"is cut every {chunk} steps, so an action that depends on the cue and comes more than "
        f"{chunk} steps after it cannot teach the memory to keep the cue (PlaceCued at delay "
        "30: docs/results.md). --chunk 0 trains whole episodes, at a higher cost per step."
    )


def build_model(
    cfg: TrainConfig, data: Data, device: torch.device
) -> tuple[TTMPolicy, torch.optim.Optimizer, AveragedModel | None]:
    """The policy (normalisation stats from the training demos), AdamW with weight decay on
    matrices only, and the EMA copy when --ema is set: (policy, opt, ema or None)."""
    policy = TTMPolicy(data.model_cfg, compute_stats(data.demos)).to(device)
    decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    ema = make_ema(policy, cfg.ema) if cfg.ema else None
    return policy, opt, ema


# ----------------------------------------------------------------------------- step, checkpoint


def batches(cfg: TrainConfig, data: Data, dist: Dist, step: int):
    """An iterator over this rank's slice of every global batch from `step` on: whole
    episodes, or with --chunk pieces of the lanes' episodes. The order is a pure function of
    --seed and the step, so a resumed run sees what it would have."""
    where = dict(rank=dist.rank, world_size=dist.world, seed=cfg.seed, start_step=step)
    per_rank = cfg.batch_size // dist.world
    sampler = (
        EpisodeStreams(data.demos.lengths, per_rank, cfg.chunk, **where)
        if cfg.chunk
        else StepBatchSampler(len(data.dataset), per_rank, **where)
    )
    # Its own generator: a DataLoader iterator draws a seed from the global torch RNG when it
    # is made, which would shift a resumed run's crops by one draw (the RNG is restored first).
    loader = DataLoader(
        data.dataset, batch_sampler=sampler, num_workers=0, generator=torch.Generator()
    )
    return map(trim_padding, loader)


def rank_weight(batch: dict, device: torch.device) -> float:
    """Under DDP, this rank's share of the global batch's real steps times the world size (1
    in one process). The loss is a mean over this rank's real steps and DDP averages the ranks'
    gradients; episodes differ in length, so without this weight a step of a short slice would
    count more than one of a long slice, and the gradient would not be the single-process
    gradient of the same global batch (one all-reduce of a count per step)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1.0
    mine = batch["mask"].sum().to(device, torch.float64)
    total = mine.clone()
    torch.distributed.all_reduce(total)
    return float(mine * torch.distributed.get_world_size() / total.clamp_min(1.0))


def train_step(
    model, policy, opt, batch: dict, step: int, cfg: TrainConfig, ema=None, memory=None
) -> tuple[dict, Any]:
    """One optimiser step on `batch`, the `step`-th of the run (0-based): learning rate from
    the schedule, forward (bf16 autocast on CUDA) from the rows' carried `memory` (None: they
    start episodes), backward, gradient clip, AdamW, EMA. `model` is `policy` or its DDP
    wrapper. Returns (the policy's `losses/...`, `metrics/...` and `charts/lr`,
    `charts/grad_norm`; the core's state after the batch, detached, for the next piece). A
    non-finite loss or gradient raises TrainingDiverged before the optimiser step, so the
    weights stay finite."""
    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg)
    device = policy.device
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    with amp:
        loss, metrics, memory = model(batch, memory, return_memory=True)
    loss = loss * rank_weight(batch, device)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(  # one host sync per step; the loss is already a float in metrics
        torch.nn.utils.clip_grad_norm_(
            policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
    )
    loss_value = metrics["losses/total"]
    # Before the optimiser step, so the weights (and every checkpoint) stay finite. The
    # gradient norm is computed from all-reduced gradients: every rank stops together.
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        good = checkpoint_steps(cfg.out)
        raise TrainingDiverged(
            f"non-finite loss ({loss_value:.4g}) or gradient norm ({grad_norm:.4g}) "
            f"at step {step + 1}: stopped before the optimiser step; "
            + (
                f"the last good checkpoint is {cfg.out / 'checkpoints' / str(good[-1])}"
                if good
                else "no checkpoint was written"
            )
            + " (lower --lr, keep --grad-clip > 0, or check the data)"
        )
    opt.step()
    if ema is not None:
        ema.update_parameters(policy)
    return {
        **metrics,
        "charts/lr": opt.param_groups[0]["lr"],
        "charts/grad_norm": grad_norm,
    }, memory


@torch.no_grad()
def validate(policy, valid_set, cfg: TrainConfig) -> dict:
    """Mean loss over --valid-batches fixed batches of the validation demos."""
    policy.eval()
    sampler = StepBatchSampler(len(valid_set), cfg.batch_size, seed=cfg.seed + 1)
    losses = []
    for i in range(cfg.valid_batches):
        batch = trim_padding(
            torch.utils.data.default_collate([valid_set[j] for j in sampler.batch(i)])
        )
        losses.append(policy(batch)[0].item())
    policy.train()
    return {"valid/loss": float(np.mean(losses))}


class RolloutEval:
    """Training-time rollouts (`envs.rollout.run_rollouts`, the loop `ttm-eval` runs) of the
    acting (EMA) policy; a new best success rate writes checkpoints/best with best.json. A
    multi-task policy (`task_env_args`: {task: env_args}) runs --eval-episodes in each task's
    env and logs each task's success rate (`rollout/<task>/success_rate`) and their mean
    (`rollout/success_rate`, which chooses the best checkpoint)."""

    BEST_FIELDS = ("success_rate", "successes", "episodes_run", "ci95_wilson")

    def __init__(
        self,
        cfg: TrainConfig,
        env_args: dict | None,
        wandb_run=None,
        task_env_args: dict[str, dict] | None = None,
    ):
        self.cfg, self.env_args, self.wandb_run = cfg, env_args, wandb_run
        self.task_env_args = task_env_args or {}
        self.best_path = cfg.out / "checkpoints" / "best"
        best_json = self.best_path / "best.json"
        self.best = (
            json.loads(best_json.read_text())["success_rate"] if best_json.is_file() else -1.0
        )

    def _run(self, acting, env_args: dict, out: Path) -> dict:
        from envs.rollout import run_rollouts  # here: it loads the simulators

        cfg = self.cfg
        # A sampling policy's draws (the recipe's gripper) are seeded by the loop, which restores
        # torch's generator after, so rollouts leave the training's random draws (crops) as they were.
        return run_rollouts(
            acting,
            env_args,
            episodes=cfg.eval_episodes,
            envs=cfg.eval_envs,
            seed=cfg.seed,
            overrides=json.loads(cfg.eval_env_kwargs),
            video=cfg.eval_video,
            out=out,
        )

    def __call__(self, acting, at: int) -> dict:
        cfg = self.cfg
        if self.task_env_args:
            return self._every_task(acting, at)
        if not self.env_args:
            raise DatasetError(
                f"{cfg.dataset[0]}: no env_args in the file, so --eval-every cannot build the env"
            )
        report = self._run(acting, self.env_args, cfg.out / "rollouts" / str(at))
        return self._log_and_keep_best(acting, at, report)

    def _every_task(self, acting, at: int) -> dict:
        """Each task's rollouts with the policy told that task; the pooled report's success
        rate is the mean over the tasks (each runs the same number of episodes)."""
        per_task, out = {}, {}
        try:
            for task, env_args in self.task_env_args.items():
                acting.set_task(task)
                per_task[task] = self._run(
                    acting, env_args, self.cfg.out / "rollouts" / str(at) / task
                )
                out[f"rollout/{task}/success_rate"] = per_task[task]["success_rate"]
        finally:
            acting.set_task(None)
        successes = sum(r["successes"] for r in per_task.values())
        episodes = sum(r["episodes_run"] for r in per_task.values())
        from envs.rollout import wilson

        report = {
            "success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
            "successes": successes,
            "episodes_run": episodes,
            "ci95_wilson": list(wilson(successes, episodes)),
            "mean_length": float(np.mean([r["mean_length"] for r in per_task.values()])),
            "videos": [v for r in per_task.values() for v in r["videos"]],
        }
        return {**out, **self._log_and_keep_best(acting, at, report)}

    def _log_and_keep_best(self, acting, at: int, report: dict) -> dict:
        out = {
            "rollout/success_rate": report["success_rate"],
            "rollout/ci95_low": report["ci95_wilson"][0],
            "rollout/ci95_high": report["ci95_wilson"][1],
            "rollout/mean_length": report["mean_length"],
        }
        if self.wandb_run is not None and report["videos"]:
            import wandb

            out["rollout/video"] = wandb.Video(report["videos"][0], format="mp4")
        if report["success_rate"] > self.best:
            self.best = report["success_rate"]
            with atomic_directory(self.best_path) as tmp:
                write_policy_files(acting, tmp)
                write_env_args(tmp, self.env_args, self.task_env_args)
                best = {"step": at, **{k: report[k] for k in self.BEST_FIELDS}}
                (tmp / "best.json").write_text(json.dumps(best, indent=2))
        return out


def write_run_config(cfg: TrainConfig, policy, obs_keys: tuple[str, ...]) -> None:
    """out/config.json: the resolved TrainConfig, the policy's full config included."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    resolved = asdict(replace(cfg, obs_keys=obs_keys))
    resolved["model"] = policy.cfg.to_dict()
    if len(cfg.dataset) == 1:  # one file: written as before several were possible
        resolved["dataset"] = cfg.dataset[0]
    (cfg.out / "config.json").write_text(json.dumps(resolved, indent=2, default=str) + "\n")


def throughput(samples: int, frames: int, seconds: float, n_images: int) -> dict:
    """`charts/...` rates since the last log line: episodes (samples), their real (unpadded)
    time steps (frames) and camera images trained on per second of optimiser steps."""
    return {
        "charts/samples_per_s": samples / seconds,
        "charts/frames_per_s": frames / seconds,
        "charts/images_per_s": frames * n_images / seconds,
    }


def write_summary(cfg, policy, dist: Dist, step, start_step, final_loss, checksums) -> dict:
    """The run's summary (also out/summary.json, from rank 0)."""
    summary = {
        "world_size": dist.world,
        "rank_param_checksums": checksums,
        "steps": step,
        "resumed_from": start_step,
        "out": str(cfg.out),
        "last_checkpoint": str(cfg.out / "checkpoints" / "last"),
        "final_loss": final_loss,
        "parameters": policy.num_parameters(),
    }
    if dist.main:
        (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def param_checksums(policy, dist: Dist) -> list[float]:
    """Sum of the weights, per rank: DDP keeps replicas identical, the summary shows it."""
    mine = float(sum(p.detach().double().sum() for p in policy.parameters()))
    if dist.world == 1:
        return [mine]
    checksums = [None] * dist.world
    torch.distributed.all_gather_object(checksums, mine)
    torch.distributed.barrier()
    return checksums


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training run; returns a summary dict. Rank 0 writes the files."""
    dist = setup_distributed(cfg)  # device, process group, seed
    data = build_data(cfg, dist.main)
    policy, opt, ema = build_model(cfg, data, dist.device)
    step, memory = resume(cfg, policy, opt, ema, dist)
    start_step = step
    if step >= cfg.steps and (cfg.out / "summary.json").is_file():
        if dist.main:
            print(f"ttm-train: {cfg.out} already finished at step {step}", file=sys.stderr)
        return json.loads((cfg.out / "summary.json").read_text())

    model = policy
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    if dist.main:
        write_run_config(cfg, policy, data.obs_keys)
    logger = Logger(cfg, step, dist.main)
    rollouts = RolloutEval(cfg, data.demos.env_args, logger.run, data.demos.tasks)

    loader = batches(cfg, data, dist, step)
    n_images = sum(is_image_key(k) for k in data.obs_keys)
    policy.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not dist.main,
        dynamic_ncols=True,
    )
    seen, frames, metrics = 0, 0, {}
    # Seconds in optimiser steps (data included; validation, rollouts and checkpoints not):
    # the x axis of a learning curve, `charts/train_s`, continued across a resume; the
    # throughput charts divide by it too.
    train_s = s_last = saved_train_seconds(cfg.out, start_step) if start_step else 0.0
    while step < cfg.steps:
        t_step = time.perf_counter()
        batch = next(loader)
        metrics, memory = train_step(
            model, policy, opt, batch, step, cfg, ema, memory if cfg.chunk else None
        )
        train_s += time.perf_counter() - t_step
        step += 1
        seen += cfg.batch_size
        frames += int(batch["mask"].sum()) * dist.world
        bar.update(1)
        extra = {}
        if cfg.eval_every and step % cfg.eval_every == 0 and dist.main:
            extra = rollouts(ema.module if ema is not None else policy, step)
            policy.train()
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics.update(throughput(seen, frames, max(train_s - s_last, 1e-9), n_images))
            metrics["charts/train_s"] = train_s
            if data.valid_set is not None and step % cfg.valid_every == 0 and dist.main:
                metrics.update(validate(policy, data.valid_set, cfg))
            logger.log(step, {**metrics, **extra})
            bar.set_postfix(
                loss=f"{metrics['losses/total']:.4f}", sps=f"{metrics['charts/samples_per_s']:.1f}"
            )
            s_last, seen, frames = train_s, 0, 0
        elif extra:
            logger.log(step, {**extra, "charts/train_s": train_s})
        if dist.world > 1 and any(e and step % e == 0 for e in (cfg.eval_every, cfg.valid_every)):
            # Rank 0 may have run rollouts / validation above: the others wait for it here, at
            # a named point (see the timeout at init_process_group), not inside the next
            # step's gradient all-reduce. The condition is the same on every rank.
            dist.barrier()
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(
                cfg,
                policy,
                opt,
                ema,
                dist,
                data.demos.env_args,
                step,
                train_s,
                memory if cfg.chunk else None,
                task_env_args=data.demos.tasks,
            )
    bar.close()
    logger.close()

    checksums = param_checksums(policy, dist)
    if dist.world > 1:
        # The DDP wrapper's reducer holds the process group: drop it first, so that the
        # group's Gloo threads are joined here and not during interpreter shutdown, where
        # a rank could abort ("terminate called without an active exception").
        del model
        gc.collect()
        torch.distributed.destroy_process_group()
    final_loss = metrics.get("losses/total", last_logged_loss(cfg.out))
    return write_summary(cfg, policy, dist, step, start_step, final_loss, checksums)


def main(argv: list[str] | None = None) -> None:
    from envs import gl

    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen, before any env is made
    cfg = parse_args(argv)
    try:
        summary = train(cfg)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ttm-train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingDiverged as e:
        print(f"ttm-train: training diverged: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"done: {summary['steps']} steps, final loss {summary['final_loss']}, checkpoint {summary['last_checkpoint']}"
    )


if __name__ == "__main__":
    main()

"""`ttm-train`: behaviour cloning for every policy, one loop, top to bottom.

    seed -> data -> model -> optimiser -> (resume) -> loop [step, log, validate, save] -> save

Output directory:
    config.json                 the resolved TrainConfig (policy config included)
    metrics.jsonl               one JSON object per logged step (`losses/...`, `charts/...`, `valid/...`)
    checkpoints/<step>/         config.json + model.safetensors (loadable by TTMPolicy.from_pretrained)
                                + optimizer.safetensors, trainer_state.json, rng.safetensors (resume)
    checkpoints/last/           the same files as the newest checkpoint

Every checkpoint directory appears in one rename, complete or not at all, so `kill -9` at any
moment loses no completed checkpoint; `--resume` continues from the newest complete one
with the same step count, data order (a pure function of seed and step) and torch RNG state.

Under `torchrun --nproc-per-node N` the same command runs DDP (gloo on CPU, NCCL on GPU):
`--batch-size` is the global batch, each rank takes its slice of it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from train.data import (
    DataConfig,
    DatasetError,
    StepBatchSampler,
    compute_stats,
    is_image_key,
    load_demos,
    make_dataset,
)
from ttm_policy.checkpoint import atomic_directory, write_policy_files
from ttm_policy.policy import Core, PolicyConfig, TTMPolicy

STANDARD_LOWDIM = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


@dataclass
class TrainConfig:
    dataset: Path
    """robomimic-format HDF5 demonstrations (from `ttm-collect` or robomimic's tools)."""
    out: Path = Path("runs/train")
    """Output directory: config.json, metrics.jsonl, checkpoints/."""
    policy: Core = "ttm"
    """Temporal core: ttm, ttm-memoryless, lstm, transformer, none (sets model.core)."""
    steps: int = 2000
    """Optimiser steps in total (a resumed run continues up to this count)."""
    batch_size: int = 16
    """Global batch (split across ranks under torchrun)."""
    obs_keys: tuple[str, ...] | None = None
    """Observation keys; None: every `*_image` key in the file plus the standard robot low-dim keys."""
    mode: Literal["window", "episode"] = "window"
    """`window`: T-step windows; `episode`: whole padded episodes (cue and decision in one sequence)."""
    window: int = 10
    """T for window mode (robomimic BC-RNN uses 10)."""
    pad_end: bool = True
    """Window mode: also sample windows that run past an episode's end (padded, masked)."""
    lr: float = 3e-4
    """AdamW peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    ema: float | None = None
    """EMA decay of the weights (e.g. 0.999); checkpoints then hold the EMA weights."""
    seed: int = 0
    """Seeds torch and the data order."""
    device: str = "auto"
    """`auto` (CUDA if available), `cpu`, `cuda`, `cuda:1`, ..."""
    log_every: int = 10
    """Steps between metrics.jsonl lines."""
    save_every: int = 500
    """Steps between checkpoints (and one at the end)."""
    keep_last: int = 3
    """Numbered checkpoints kept (older ones deleted; `last` is always kept)."""
    valid_every: int = 500
    """Steps between validation losses on the `mask/valid` demos (0 disables)."""
    valid_batches: int = 8
    """Batches per validation."""
    eval_every: int = 0
    """Steps between simulated rollouts (`rollout/success_rate`; keeps checkpoints/best); 0: never."""
    eval_episodes: int = 10
    """Episodes per rollout evaluation."""
    eval_envs: int = 1
    """Parallel envs for rollout evaluation."""
    eval_video: int = 0
    """Videos per rollout evaluation, logged to wandb when it is enabled."""
    eval_env_kwargs: str = "{}"
    """JSON overrides of the dataset env's kwargs for rollouts."""
    resume: bool = False
    """Continue from the newest complete checkpoint in `out`."""
    wandb: Literal["disabled", "online", "offline"] = "disabled"
    """Weights & Biases logging mode."""
    wandb_project: str = "ttm_policy"
    """Weights & Biases project."""
    threads: int | None = None
    """torch intra-op threads on CPU (None: torch's default)."""
    model: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy architecture (obs_keys, image_size and core are filled from the data and --policy)."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "window", "log_every", "save_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"--ema must be in (0, 1), e.g. 0.999, got {self.ema}")


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


def infer_obs_keys(path: Path) -> tuple[str, ...]:
    import h5py

    with h5py.File(path, "r") as f:
        demos = sorted(f["data"].keys()) if "data" in f else []
        if not demos:
            raise DatasetError(f"{path}: no demos under 'data'")
        keys = list(f["data"][demos[0]]["obs"].keys())
    images = sorted(k for k in keys if is_image_key(k))
    return tuple(images) + tuple(k for k in STANDARD_LOWDIM if k in keys)


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


class Logger:
    """metrics.jsonl (always) and wandb (when enabled); rank 0 only."""

    def __init__(self, cfg: TrainConfig, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = cfg.out / "metrics.jsonl"
        self.run = None
        if not enabled:
            return
        if resume_step and self.path.exists():  # drop lines past the checkpoint we resume from
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif not resume_step:
            self.path.write_text("")
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
        plain = {
            k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))
        }  # no videos
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **plain}) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training run; returns a summary dict. Rank 0 writes the files."""
    # --- distributed / device / seed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {world} ranks")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    main_rank = rank == 0
    torch.manual_seed(
        cfg.seed + rank
    )  # per-rank crops / dropout; data order comes from the sampler

    # --- data
    if not cfg.dataset.is_file():
        raise FileNotFoundError(f"--dataset {cfg.dataset}: no such file")
    obs_keys = tuple(cfg.obs_keys) if cfg.obs_keys else infer_obs_keys(cfg.dataset)
    demos = load_demos(str(cfg.dataset), obs_keys, "train")
    image_sizes = {demos.obs_shapes[k][0] for k in obs_keys if is_image_key(k)}
    if len(image_sizes) > 1:
        raise DatasetError(
            f"{cfg.dataset}: cameras differ in size {sorted(image_sizes)}; use one size"
        )
    image_size = image_sizes.pop() if image_sizes else cfg.model.image_size
    crop = min(cfg.model.crop_size, image_size)
    model_cfg = replace(
        cfg.model, obs_keys=obs_keys, core=cfg.policy, image_size=image_size, crop_size=crop
    )
    horizon = model_cfg.action_horizon
    data_cfg = DataConfig(
        path=str(cfg.dataset),
        obs_keys=obs_keys,
        mode=cfg.mode,
        window=cfg.window,
        pad_end=cfg.pad_end,
        action_horizon=horizon if horizon > 1 else 0,
        augment="none",
    )
    dataset = make_dataset(data_cfg, demos)
    try:
        valid_set = make_dataset(replace(data_cfg, split="valid")) if cfg.valid_every else None
    except DatasetError:
        valid_set = None  # no validation demos (e.g. an empty mask/valid)

    # --- model, optimiser
    policy = TTMPolicy(model_cfg, compute_stats(demos)).to(device)
    decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in policy.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    ema = None
    if cfg.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            policy,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema),
            use_buffers=True,
        )

    # --- resume
    step = 0
    if cfg.resume:
        steps_done = checkpoint_steps(cfg.out)
        if not steps_done:
            raise FileNotFoundError(
                f"--resume: no complete checkpoint under {cfg.out / 'checkpoints'}"
            )
        ck = cfg.out / "checkpoints" / str(steps_done[-1])
        state = json.loads((ck / "trainer_state.json").read_text())
        policy.load_state_dict(load_file(ck / state["train_weights"], device=str(device)))
        load_optimizer(
            opt, load_file(ck / "optimizer.safetensors", device=str(device)), state["optimizer"]
        )
        if ema is not None:
            ema.module.load_state_dict(load_file(ck / "model.safetensors", device=str(device)))
            ema.n_averaged.fill_(state["ema_n_averaged"])
        rng = load_file(ck / "rng.safetensors")
        torch.set_rng_state(rng[f"torch.{rank}"] if f"torch.{rank}" in rng else rng["torch.0"])
        step = state["step"]
    elif main_rank and cfg.out.exists() and checkpoint_steps(cfg.out):
        raise FileExistsError(
            f"{cfg.out} already holds checkpoints: pass --resume, or choose another --out"
        )

    model = policy
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None
        )

    if main_rank:
        cfg.out.mkdir(parents=True, exist_ok=True)
        resolved = replace(cfg, model=policy.cfg, obs_keys=obs_keys)
        (cfg.out / "config.json").write_text(
            json.dumps(asdict(resolved), indent=2, default=str) + "\n"
        )
    logger = Logger(cfg, step, main_rank)

    def save(at: int) -> None:
        """Write checkpoints/<at>/ and checkpoints/last/, each in one rename (rank 0)."""
        states = [torch.get_rng_state()]
        if world > 1:  # every rank's RNG, so each resumes its own stream
            states = [None] * world
            torch.distributed.all_gather_object(states, torch.get_rng_state())
        if not main_rank:
            return
        rng = {f"torch.{r}": s for r, s in enumerate(states)}
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
                if demos.env_args:  # the dataset's env, so ttm-eval can re-create it
                    (tmp / "env_args.json").write_text(json.dumps(demos.env_args, indent=2))
                save_file(rng, tmp / "rng.safetensors")
                state = {
                    "step": at,
                    "optimizer": opt_meta,
                    "train_config": str(cfg.out / "config.json"),
                    "train_weights": "train_model.safetensors"
                    if ema is not None
                    else "model.safetensors",
                    "ema_n_averaged": int(ema.n_averaged.item()) if ema is not None else None,
                }
                (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
        for old in checkpoint_steps(cfg.out)[: -cfg.keep_last]:
            shutil.rmtree(root / str(old), ignore_errors=True)

    @torch.no_grad()
    def validate() -> dict:
        policy.eval()
        sampler = StepBatchSampler(len(valid_set), cfg.batch_size, seed=cfg.seed + 1)
        losses = []
        for i in range(cfg.valid_batches):
            batch = torch.utils.data.default_collate([valid_set[j] for j in sampler.batch(i)])
            losses.append(policy(batch)[0].item())
        policy.train()
        return {"valid/loss": float(np.mean(losses))}

    best_path = cfg.out / "checkpoints" / "best"
    best = (
        json.loads((best_path / "best.json").read_text())["success_rate"]
        if (best_path / "best.json").is_file()
        else -1.0
    )

    def rollout_eval(at: int) -> dict:
        """Rollouts of the current (EMA) policy; a new best success rate saves checkpoints/best."""
        nonlocal best
        from eval.evaluate import run_rollouts

        if not demos.env_args:
            raise DatasetError(
                f"{cfg.dataset}: no env_args in the file, so --eval-every cannot build the env"
            )
        acting = ema.module if ema is not None else policy
        report = run_rollouts(
            acting,
            demos.env_args,
            episodes=cfg.eval_episodes,
            envs=cfg.eval_envs,
            seed=cfg.seed,
            overrides=json.loads(cfg.eval_env_kwargs),
            video=cfg.eval_video,
            out=cfg.out / "rollouts" / str(at),
        )
        policy.train()
        out = {
            "rollout/success_rate": report["success_rate"],
            "rollout/ci95_low": report["ci95_wilson"][0],
            "rollout/ci95_high": report["ci95_wilson"][1],
            "rollout/mean_length": report["mean_length"],
        }
        if logger.run is not None and report["videos"]:
            import wandb

            out["rollout/video"] = wandb.Video(report["videos"][0], format="mp4")
        if report["success_rate"] > best:
            best = report["success_rate"]
            with atomic_directory(best_path) as tmp:
                write_policy_files(acting, tmp)
                (tmp / "env_args.json").write_text(json.dumps(demos.env_args, indent=2))
                (tmp / "best.json").write_text(
                    json.dumps(
                        {
                            "step": at,
                            **{
                                k: report[k]
                                for k in (
                                    "success_rate",
                                    "successes",
                                    "episodes_run",
                                    "ci95_wilson",
                                )
                            },
                        },
                        indent=2,
                    )
                )
        return out

    # --- loop
    per_rank = cfg.batch_size // world
    sampler = StepBatchSampler(
        len(dataset), per_rank, rank=rank, world_size=world, seed=cfg.seed, start_step=step
    )
    loader = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    policy.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not main_rank,
        dynamic_ncols=True,
    )
    t_last, seen, metrics = time.perf_counter(), 0, {}
    start_step = step
    while step < cfg.steps:
        batch = next(loader)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with amp:
            loss, metrics = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        opt.step()
        if ema is not None:
            ema.update_parameters(policy)
        step += 1
        seen += per_rank * world
        bar.update(1)
        extra = (
            rollout_eval(step)
            if cfg.eval_every and step % cfg.eval_every == 0 and main_rank
            else {}
        )
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.perf_counter() - t_last
            n_images = sum(is_image_key(k) for k in obs_keys)
            window = batch["actions"].shape[1]
            metrics = {
                **metrics,
                "charts/lr": opt.param_groups[0]["lr"],
                "charts/grad_norm": float(grad_norm),
                "charts/samples_per_s": seen / dt,
                "charts/steps_per_s_time": seen * window / dt,
                "charts/images_per_s": seen * window * n_images / dt,
            }
            if (
                valid_set is not None
                and cfg.valid_every
                and step % cfg.valid_every == 0
                and main_rank
            ):
                metrics.update(validate())
            logger.log(step, {**metrics, **extra})
            bar.set_postfix(
                loss=f"{metrics['losses/total']:.4f}", sps=f"{metrics['charts/samples_per_s']:.1f}"
            )
            t_last, seen = time.perf_counter(), 0
        elif extra:
            logger.log(step, extra)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    logger.close()
    checksums = [float(sum(p.detach().double().sum() for p in policy.parameters()))]
    if world > 1:  # DDP keeps replicas identical; record every rank's checksum to show it
        checksums = [None] * world
        torch.distributed.all_gather_object(
            checksums, float(sum(p.detach().double().sum() for p in policy.parameters()))
        )
        torch.distributed.barrier()
        # The DDP wrapper's reducer holds the process group: drop it first, so that the
        # group's Gloo threads are joined here and not during interpreter shutdown, where
        # a rank could abort ("terminate called without an active exception").
        del model
        gc.collect()
        torch.distributed.destroy_process_group()
    summary = {
        "world_size": world,
        "rank_param_checksums": checksums,
        "steps": step,
        "resumed_from": start_step,
        "out": str(cfg.out),
        "last_checkpoint": str(cfg.out / "checkpoints" / "last"),
        "final_loss": metrics.get("losses/total"),
        "parameters": policy.num_parameters(),
    }
    if main_rank:
        (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(TrainConfig, args=argv)
    try:
        summary = train(cfg)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ttm-train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"done: {summary['steps']} steps, final loss {summary['final_loss']}, checkpoint {summary['last_checkpoint']}"
    )


if __name__ == "__main__":
    main()

"""`ttm-bench train-throughput`: behaviour-cloning frames/s and images/s per temporal core, for
the training recipe (`ttm-train`'s default preset, or `--preset gpu`): whole episodes, each
batch cut to its longest episode, the trainer's own `train_step`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import bar_png, config_strings, print_table, report


@dataclass
class TrainThroughput:
    """Episodes/s, frames/s (real, unpadded time steps) and images/s of behaviour-cloning
    steps (forward, backward, AdamW) of a preset's policy on real demonstrations."""

    dataset: Path
    """robomimic-format HDF5 (e.g. the robomimic Lift fixture, or `ttm-collect --task Lift`)."""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """Temporal cores to time."""
    preset: str = "cpu"
    """Training preset whose model and batch are timed (train/presets.py)."""
    batch_size: int | None = None
    """Episodes per step; None: the preset's."""
    crop: float | None = None
    """Training crop as a fraction of the image side; None: the preset's."""
    chunk: int | None = None
    """Steps per row and optimiser step (ttm-train --chunk; 0: whole episodes); None: the preset's."""
    steps: int = 10
    """Timed optimiser steps per core (after 2 warm-up steps); the median is reported."""
    threads: int = 1
    """torch intra-op threads."""
    device: str = "cpu"
    """cpu or cuda (bf16 autocast on cuda, as ttm-train)."""
    out: Path = Path("runs/bench")
    """Where train_throughput.json goes."""

    def run(self) -> dict:
        from train.data import is_image_key, load_demos
        from train.presets import preset
        from train.train import infer_obs_keys

        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        keys = infer_obs_keys(self.dataset)
        demos = load_demos(str(self.dataset), keys, "all")
        images = sum(is_image_key(k) for k in keys)
        size = next((demos.obs_shapes[k][0] for k in keys if is_image_key(k)), 84)
        # ttm-train's settings for its step (lr schedule, gradient clip, model) in this preset
        train_cfg = preset(self.preset, dataset=self.dataset, steps=self.steps + 2)
        if self.batch_size:
            train_cfg.batch_size = self.batch_size
        if self.crop:
            train_cfg.crop = self.crop
        if self.chunk is not None:
            train_cfg.chunk = self.chunk
        batch_size, chunk = train_cfg.batch_size, train_cfg.chunk
        results = {
            core: time_training(demos, keys, train_cfg, core, self.steps, self.device)
            for core in tqdm(self.cores, desc="train-throughput", unit="core")
        }
        rows_are = f"{chunk}-step pieces" if chunk else "episodes"
        where = f"preset {self.preset}, batch {batch_size} x {rows_are}"
        print(
            f"\nBC training throughput on {self.device}, {where}, {images} camera(s) {size}px, "
            f"{self.threads} thread(s) ({self.steps} timed steps)"
        )
        rows = [["core", "params", "s/step", "samples/s", "frames/s", "images/s"]]
        for core, r in results.items():
            rows.append(
                [core, f"{r['parameters'] / 1e6:.2f}M", f"{r['median_step_s']:.3f}"]
                + [f"{r[k]:.1f}" for k in ("samples_per_s", "frames_per_s", "images_per_s")]
            )
        print_table(rows, [16, 10, 9, 11, 10, 10])
        bars = {core: r["images_per_s"] for core, r in results.items()}
        title = f"BC training throughput on {self.device}, {where}"
        png = bar_png(self.out / "train_throughput.png", bars, "camera images / s", title)
        return report(self.out, "train_throughput", config_strings(self), (png,), results=results)


def time_training(
    demos, keys: tuple[str, ...], train_cfg, core: str, steps: int, device: str
) -> dict:
    """`steps` of ttm-train's own step (after 2 warm-up steps) for `core` on `demos` read
    through `keys`, at `train_cfg`'s batch, pieces and crop: parameters, the median s/step,
    samples/s, frames/s (real, unpadded steps) and images/s."""
    from train.data import (
        ChunkDataset,
        DataConfig,
        EpisodeStreams,
        StepBatchSampler,
        compute_stats,
        is_image_key,
        make_dataset,
        trim_padding,
    )
    from train.train import train_step
    from ttm_policy import TTMPolicy

    torch.manual_seed(0)
    batch_size, chunk = train_cfg.batch_size, train_cfg.chunk
    if chunk:  # ttm-train's samples: pieces of the lanes' episodes, memory carried
        data = ChunkDataset(demos, chunk)
        sampler = EpisodeStreams(demos.lengths, batch_size, chunk)
    else:
        data = make_dataset(DataConfig(path=demos.path, obs_keys=keys), demos)
        sampler = StepBatchSampler(len(data), batch_size)
    images = sum(is_image_key(k) for k in keys)
    size = next((demos.obs_shapes[k][0] for k in keys if is_image_key(k)), 84)
    dev = torch.device(device)
    cfg = recipe_model(train_cfg, keys, size, core)
    policy = TTMPolicy(cfg, compute_stats(demos)).to(dev).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=train_cfg.lr)
    times, frames, memory = [], [], None
    for i in range(steps + 2):
        batch = trim_padding(torch.utils.data.default_collate([data[j] for j in sampler.batch(i)]))
        frames.append(int(batch["mask"].sum()))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # ttm-train's own step: lr, bf16 autocast on cuda, backward, clip, AdamW
        _, memory = train_step(policy, policy, opt, batch, i, train_cfg, None, memory)
        memory = memory if chunk else None
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    total = sum(times[2:])
    return {
        "parameters": policy.num_parameters(),
        "median_step_s": statistics.median(times[2:]),
        "samples_per_s": batch_size * steps / total,
        "frames_per_s": sum(frames[2:]) / total,
        "images_per_s": sum(frames[2:]) * images / total,
    }


def recipe_model(train_cfg, keys: tuple[str, ...], size: int, core: str):
    """The PolicyConfig ttm-train builds from `train_cfg` for these keys, image side and core."""
    from train.train import crop_side

    return replace(
        train_cfg.model,
        obs_keys=keys,
        image_size=size,
        crop_size=crop_side(train_cfg.crop, size),
        core=core,
    )

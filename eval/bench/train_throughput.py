"""`ttm-bench train-throughput`: behaviour-cloning samples/s and images/s per temporal core."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import bar_png, config_strings, print_table, report


@dataclass
class TrainThroughput:
    """Samples/s and images/s of behaviour-cloning steps (forward, backward, AdamW) for a
    policy configuration on real demonstrations (default: the Lift image configuration)."""

    dataset: Path
    """robomimic-format HDF5 (e.g. the robomimic Lift fixture, or `ttm-collect --task Lift`)."""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """Temporal cores to time."""
    batch_size: int = 16
    """Sequences per step."""
    window: int = 10
    """T steps per sequence."""
    steps: int = 10
    """Timed optimiser steps per core (after 2 warm-up steps); the median is reported."""
    threads: int = 1
    """torch intra-op threads."""
    device: str = "cpu"
    """cpu or cuda (bf16 autocast on cuda, as ttm-train)."""
    out: Path = Path("runs/bench")
    """Where train_throughput.json goes."""

    def run(self) -> dict:
        from train.data import (
            DataConfig,
            StepBatchSampler,
            compute_stats,
            is_image_key,
            load_demos,
            make_dataset,
        )
        from train.train import TrainConfig, infer_obs_keys, train_step
        from ttm_policy import PolicyConfig, TTMPolicy

        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        keys = infer_obs_keys(self.dataset)
        demos = load_demos(str(self.dataset), keys, "all")
        data = make_dataset(
            DataConfig(path=str(self.dataset), obs_keys=keys, window=self.window),
            demos,
        )
        sampler = StepBatchSampler(len(data), self.batch_size)
        images = sum(is_image_key(k) for k in keys)
        size = next((demos.obs_shapes[k][0] for k in keys if is_image_key(k)), 84)
        device = torch.device(self.device)
        # ttm-train's settings for its step (lr schedule, gradient clip) at this batch and window
        train_cfg = TrainConfig(
            dataset=self.dataset,
            batch_size=self.batch_size,
            window=self.window,
            steps=self.steps + 2,
        )
        results = {}
        for core in tqdm(self.cores, desc="train-throughput", unit="core"):
            cfg = PolicyConfig(obs_keys=keys, image_size=size, crop_size=min(76, size), core=core)
            policy = TTMPolicy(cfg, compute_stats(demos)).to(device).train()
            opt = torch.optim.AdamW(policy.parameters(), lr=train_cfg.lr)
            times = []
            for i in range(self.steps + 2):
                batch = torch.utils.data.default_collate([data[j] for j in sampler.batch(i)])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                # ttm-train's own step: lr, bf16 autocast on cuda, backward, clip, AdamW
                train_step(policy, policy, opt, batch, i, train_cfg)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            dt = statistics.median(times[2:])
            results[core] = {
                "parameters": policy.num_parameters(),
                "median_step_s": dt,
                "samples_per_s": self.batch_size / dt,
                "frames_per_s": self.batch_size * self.window / dt,
                "images_per_s": self.batch_size * self.window * images / dt,
            }
        print(
            f"\nBC training throughput on {self.device}, batch {self.batch_size} x T={self.window}, "
            f"{images} camera(s) {size}px, {self.threads} thread(s) (median of {self.steps} steps)"
        )
        rows = [["core", "params", "s/step", "samples/s", "frames/s", "images/s"]]
        for core, r in results.items():
            rows.append(
                [core, f"{r['parameters'] / 1e6:.2f}M", f"{r['median_step_s']:.3f}"]
                + [f"{r[k]:.1f}" for k in ("samples_per_s", "frames_per_s", "images_per_s")]
            )
        print_table(rows, [16, 10, 9, 11, 10, 10])
        bars = {core: r["images_per_s"] for core, r in results.items()}
        title = (
            f"BC training throughput on {self.device}, batch {self.batch_size} x T={self.window}"
        )
        png = bar_png(self.out / "train_throughput.png", bars, "camera images / s", title)
        return report(self.out, "train_throughput", config_strings(self), (png,), results=results)

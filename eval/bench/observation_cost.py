"""`ttm-bench observation-cost`: what a choice of cameras and image size costs, in one run.

For every dataset (one per image size, e.g. the same Lift demonstrations collected at 64 and
84 px) and every camera set it has, the three places the choice is paid for:
  training   frames/s of ttm-train's own step at the preset's batch, pieces and crop
  control    ms per control step at batch 1 (uint8 images + proprioception -> action)
  simulation ms per env step with those cameras rendered, as ttm-eval and a robot's
             simulator-in-the-loop test render them (the dataset's env_args and settings)
and each as a ratio to the first row. What each choice gives is a success rate, which only a
trained policy measures (docs/results.md, "Cameras and image size").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.bench.report import bar_png, config_strings, median_p90_ms, print_table, report
from eval.bench.train_throughput import time_training


@dataclass
class ObservationCost:
    """Training frames/s, ms per control step and ms per simulated step, per image size
    (dataset) and camera set, with ratios to the first row."""

    datasets: tuple[Path, ...]
    """robomimic-format HDF5 files of one task, e.g. the same demonstrations at 64 and 84 px
    (`ttm-collect --image-size`). (required)"""
    cameras: tuple[str, ...] = ("agentview+robot0_eye_in_hand", "agentview", "robot0_eye_in_hand")
    """Camera sets to time, each `+`-joined; one a dataset does not have is left out."""
    core: str = "ttm"
    """Temporal core of the timed policy."""
    preset: str = "cpu"
    """Training preset whose model, batch and pieces are timed (train/presets.py)."""
    steps: int = 10
    """Timed optimiser steps per row (after 2 warm-up steps)."""
    control_steps: int = 30
    """Timed control steps per row (after 5 warm-up steps); the median is reported."""
    env_steps: int = 30
    """Timed env steps per row (after a reset); the median is reported."""
    threads: int = 1
    """torch intra-op threads."""
    out: Path = Path("runs/bench")
    """Where observation_cost.json and observation_cost.png go."""

    def run(self) -> dict:
        from train.data import first_demo_obs_keys, is_image_key, load_demos
        from train.presets import preset
        from train.train import infer_obs_keys

        torch.set_num_threads(self.threads)
        rows: dict[str, dict] = {}
        settings = [
            (path, cams.split("+"))
            for path in self.datasets
            for cams in self.cameras
            if all(f"{c}_image" in first_demo_obs_keys(path) for c in cams.split("+"))
        ]
        if not settings:
            raise ValueError(
                f"none of the camera sets {list(self.cameras)} is in {[str(p) for p in self.datasets]}"
            )
        for path, cams in tqdm(settings, desc="observation-cost", unit="setting"):
            lowdim = tuple(k for k in infer_obs_keys(path) if not is_image_key(k))
            keys = tuple(f"{c}_image" for c in cams) + lowdim
            demos = load_demos(str(path), keys, "all")
            size = demos.obs_shapes[keys[0]][0]
            train_cfg = preset(self.preset, dataset=path, steps=self.steps + 2)
            train = time_training(demos, keys, train_cfg, self.core, self.steps, "cpu")
            control = self._control_ms(demos, keys, train_cfg, size)
            env = self._env_step_ms(demos.env_args, cams)
            rows[f"{size}px {'+'.join(cams)}"] = {
                "dataset": str(path),
                "image_size": size,
                "cameras": cams,
                "parameters": train["parameters"],
                "train_frames_per_s": train["frames_per_s"],
                "control_ms": control,
                "env_step_ms": env,
            }
        first = next(iter(rows.values()))
        for r in rows.values():
            r["train_time_ratio"] = first["train_frames_per_s"] / r["train_frames_per_s"]
            r["control_ratio"] = r["control_ms"]["median_ms"] / first["control_ms"]["median_ms"]
            r["env_step_ratio"] = r["env_step_ms"]["median_ms"] / first["env_step_ms"]["median_ms"]
        print(
            f"\nWhat each observation costs ({self.core}, preset {self.preset}, "
            f"{self.threads} thread(s)); x: time relative to the first row"
        )
        table = [["setting", "params", "train fr/s", "x", "control ms", "x", "sim ms", "x"]]
        for name, r in rows.items():
            table.append(
                [
                    name,
                    f"{r['parameters'] / 1e3:.1f}k",
                    f"{r['train_frames_per_s']:.1f}",
                    f"{r['train_time_ratio']:.2f}",
                    f"{r['control_ms']['median_ms']:.2f}",
                    f"{r['control_ratio']:.2f}",
                    f"{r['env_step_ms']['median_ms']:.1f}",
                    f"{r['env_step_ratio']:.2f}",
                ]
            )
        print_table(table, [34, 9, 11, 6, 11, 6, 9, 6])
        png = bar_png(
            self.out / "observation_cost.png",
            {name: r["train_frames_per_s"] for name, r in rows.items()},
            "training frames / s",
            f"Training throughput per observation ({self.core}, preset {self.preset}, CPU)",
        )
        return report(self.out, "observation_cost", config_strings(self), (png,), results=rows)

    def _control_ms(self, demos, keys: tuple[str, ...], train_cfg, size: int) -> dict:
        """One control step of the preset's policy at batch 1, on the first demo's frames."""
        from dataclasses import replace

        from train.data import compute_stats
        from train.train import crop_side
        from ttm_policy import TTMPolicy

        cfg = replace(
            train_cfg.model,
            obs_keys=keys,
            image_size=size,
            crop_size=crop_side(train_cfg.crop, size),
            core=self.core,
        )
        policy = TTMPolicy(cfg, compute_stats(demos)).eval()
        policy.reset()
        obs, _ = demos.episode(0)
        n = len(next(iter(obs.values())))
        times = []
        for i in range(self.control_steps + 5):
            o = {k: v[i % n] for k, v in obs.items()}
            t0 = time.perf_counter()
            policy.select_action(o)
            times.append(time.perf_counter() - t0)
        return median_p90_ms(times[5:])

    def _env_step_ms(self, env_args: dict, cams: list[str]) -> dict:
        """env.step with `cams` rendered, in the env the dataset's env_args describe."""
        from envs.env_args import make_from_env_args

        env = make_from_env_args(env_args, cameras=cams)
        try:
            env.reset(seed=0)
            rng = np.random.default_rng(0)
            low, high = env.action_space.low, env.action_space.high
            times = []
            for _ in range(self.env_steps):
                action = rng.uniform(low, high).astype(env.action_space.dtype)
                t0 = time.perf_counter()
                _, _, terminated, truncated, _ = env.step(action)
                times.append(time.perf_counter() - t0)
                if terminated or truncated:
                    env.reset()
        finally:
            env.close()
        return median_p90_ms(times)

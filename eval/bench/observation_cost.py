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
from eval.bench.train_throughput import recipe_model, time_training


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
    batch_size: int | None = None
    """Episodes per training step; None: the preset's."""
    steps: int = 10
    """Timed optimiser steps per row (after 2 warm-up steps)."""
    control_steps: int = 300
    """Timed control steps per row (after 5 warm-up steps), the rows in turn; the median is
    reported."""
    env_steps: int = 30
    """Timed env steps per row (after a reset), the rows in turn; the median is reported."""
    threads: int = 1
    """torch intra-op threads."""
    out: Path = Path("runs/bench")
    """Where observation_cost.json and observation_cost.png go."""

    def run(self) -> dict:
        from envs.env_args import make_from_env_args
        from train.data import first_demo_obs_keys, is_image_key, load_demos
        from train.presets import preset
        from train.train import infer_obs_keys

        torch.set_num_threads(self.threads)
        rows: dict[str, dict] = {}
        available = {path: set(first_demo_obs_keys(path)) for path in self.datasets}
        settings = [
            (path, cams.split("+"))
            for path in self.datasets
            for cams in self.cameras
            if all(f"{c}_image" in available[path] for c in cams.split("+"))
        ]
        if not settings:
            raise ValueError(
                f"none of the camera sets {list(self.cameras)} is in {[str(p) for p in self.datasets]}"
            )
        # Training, row by row (steps of about a second: 10 of them time steadily); then
        # control and simulation steps, a step of every row in turn, so that the load of a
        # shared machine falls on every row alike.
        policies, envs = [], []
        try:
            for path, cams in tqdm(settings, desc="observation-cost", unit="setting"):
                lowdim = tuple(k for k in infer_obs_keys(path) if not is_image_key(k))
                keys = tuple(f"{c}_image" for c in cams) + lowdim
                demos = load_demos(str(path), keys, "all")
                size = demos.obs_shapes[keys[0]][0]
                train_cfg = preset(self.preset, dataset=path, steps=self.steps + 2)
                train_cfg.batch_size = self.batch_size or train_cfg.batch_size
                train = time_training(demos, keys, train_cfg, self.core, self.steps, "cpu")
                first_demo = {k: v.copy() for k, v in demos.episode(0)[0].items()}  # not all
                policies.append((self._policy(demos, keys, train_cfg, size), first_demo))
                envs.append(make_from_env_args(demos.env_args, cameras=cams))
                rows[f"{size}px {'+'.join(cams)}"] = {
                    "dataset": str(path),
                    "image_size": size,
                    "cameras": cams,
                    "parameters": train["parameters"],
                    "train_frames_per_s": train["frames_per_s"],
                }
            for r, ms in zip(rows.values(), self._control_ms(policies), strict=True):
                r["control_ms"] = ms
            for r, ms in zip(rows.values(), self._env_step_ms(envs), strict=True):
                r["env_step_ms"] = ms
        finally:
            for env in envs:
                env.close()
        first = next(iter(rows.values()))
        for r in rows.values():
            r["train_time_ratio"] = first["train_frames_per_s"] / r["train_frames_per_s"]
            r["control_ratio"] = r["control_ms"]["min_ms"] / first["control_ms"]["min_ms"]
            r["env_step_ratio"] = r["env_step_ms"]["median_ms"] / first["env_step_ms"]["median_ms"]
        print(
            f"\nWhat each observation costs ({self.core}, preset {self.preset}, "
            f"{self.threads} thread(s)); x: time relative to the first row (control: of the minima)"
        )
        table = [["setting", "params", "train fr/s", "x", "control ms", "min", "x", "sim ms", "x"]]
        for name, r in rows.items():
            table.append(
                [
                    name,
                    f"{r['parameters'] / 1e3:.1f}k",
                    f"{r['train_frames_per_s']:.1f}",
                    f"{r['train_time_ratio']:.2f}",
                    f"{r['control_ms']['median_ms']:.2f}",
                    f"{r['control_ms']['min_ms']:.2f}",
                    f"{r['control_ratio']:.2f}",
                    f"{r['env_step_ms']['median_ms']:.1f}",
                    f"{r['env_step_ratio']:.2f}",
                ]
            )
        print_table(table, [34, 9, 11, 6, 11, 6, 6, 9, 6])
        png = bar_png(
            self.out / "observation_cost.png",
            {name: r["train_frames_per_s"] for name, r in rows.items()},
            "training frames / s",
            f"Training throughput per observation ({self.core}, preset {self.preset}, CPU)",
        )
        return report(self.out, "observation_cost", config_strings(self), (png,), results=rows)

    def _policy(self, demos, keys: tuple[str, ...], train_cfg, size: int):
        """The preset's policy for these keys, in inference mode."""
        from train.data import compute_stats
        from ttm_policy import TTMPolicy

        cfg = recipe_model(train_cfg, keys, size, self.core)
        policy = TTMPolicy(cfg, compute_stats(demos)).eval()
        policy.reset()
        return policy

    def _control_ms(self, policies: list) -> list[dict]:
        """One control step at batch 1 per (policy, first demo's frames), in turn."""
        times: list[list[float]] = [[] for _ in policies]
        for i in range(self.control_steps + 5):
            for (policy, obs), t in zip(policies, times, strict=True):
                n = len(next(iter(obs.values())))
                o = {k: v[i % n] for k, v in obs.items()}
                t0 = time.perf_counter()
                policy.select_action(o)
                t.append(time.perf_counter() - t0)
        return [median_p90_ms(t[5:]) for t in times]

    def _env_step_ms(self, envs: list) -> list[dict]:
        """env.step with each env's cameras rendered (random actions), in turn."""
        rng = np.random.default_rng(0)
        for env in envs:
            env.reset(seed=0)
        times: list[list[float]] = [[] for _ in envs]
        for _ in range(self.env_steps):
            for env, t in zip(envs, times, strict=True):
                low, high = env.action_space.low, env.action_space.high
                action = rng.uniform(low, high).astype(env.action_space.dtype)
                t0 = time.perf_counter()
                _, _, terminated, truncated, _ = env.step(action)
                t.append(time.perf_counter() - t0)
                if terminated or truncated:
                    env.reset()
        return [median_p90_ms(t) for t in times]

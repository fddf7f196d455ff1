"""`ttm-bench rollout-throughput`: env steps/s in vector envs with 1, 2, 4 envs, with and
without images."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from eval.bench.report import bar_png, config_strings, print_table, report


@dataclass
class RolloutThroughput:
    """Environment steps/s in gymnasium vector envs (one process per env) with 1, 2, 4 envs,
    with and without camera images, under random actions (no policy)."""

    task: str = "Lift"
    """Task (envs.TASKS)."""
    envs: tuple[int, ...] = (1, 2, 4)
    """Vector env sizes."""
    steps: int = 100
    """Vector steps timed per setting (after one reset)."""
    image_size: int = 84
    """Camera side when images are on."""
    out: Path = Path("runs/bench")
    """Where rollout_throughput.json goes."""

    def run(self) -> dict:
        import functools
        import sys

        import gymnasium as gym
        import numpy as np

        from envs.env_args import make_on_egl_device

        results = {}
        for images in (True, False):
            kwargs = {"image_size": self.image_size} if images else {"cameras": []}
            env_args = {"env_name": f"ttm/{self.task}-v0", "type": 2, "env_kwargs": kwargs}
            for n in tqdm(self.envs, desc=f"rollout-throughput images={images}", unit="setting"):
                fns = [functools.partial(make_on_egl_device, None, env_args, {}) for _ in range(n)]
                kw = {"context": "forkserver"} if n > 1 and sys.platform == "linux" else {}
                venv = (gym.vector.AsyncVectorEnv if n > 1 else gym.vector.SyncVectorEnv)(fns, **kw)
                try:
                    venv.reset(seed=list(range(n)))
                    rng = np.random.default_rng(0)
                    t0 = time.perf_counter()
                    for _ in range(self.steps):
                        venv.step(rng.uniform(-1, 1, (n, 7)))
                    dt = time.perf_counter() - t0
                finally:
                    venv.close()
                results[f"{'images' if images else 'no_images'}/{n}"] = {
                    "envs": n,
                    "images": images,
                    "env_steps_per_s": n * self.steps / dt,
                }
        print(
            f"\n{self.task}: env steps/s in vector envs (random actions, {self.image_size}px cameras when on)"
        )
        rows = [["envs", "images", "no images"]]
        for n in self.envs:
            rows.append(
                [
                    n,
                    *(
                        f"{results[f'{k}/{n}']['env_steps_per_s']:.1f}"
                        for k in ("images", "no_images")
                    ),
                ]
            )
        print_table(rows, [6, 12, 12])
        bars = {name: r["env_steps_per_s"] for name, r in results.items()}
        title = f"{self.task} in gymnasium vector envs (images / no_images, envs)"
        png = bar_png(self.out / "rollout_throughput.png", bars, "env steps / s", title)
        return report(self.out, "rollout_throughput", config_strings(self), (png,), results=results)

"""`ttm-bench control-latency`: end-to-end control step (images -> action) per core against
history length."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import config_strings, lines_png, median_p90_ms, print_table, report


@dataclass
class ControlLatency:
    """End-to-end time of one control step at batch 1 (raw uint8 images + low-dim in, action
    out: cropping, normalisation, tokenizers, core, head) against history length, per core,
    for the default Lift policy configuration (untrained weights time the same)."""

    cores: tuple[str, ...] = (
        "ttm",
        "ttm-memoryless",
        "lstm",
        "transformer",
        "transformer-full",
        "none",
    )
    """Policies to time; `transformer-full` is the causal Transformer with an unbounded window."""
    histories: tuple[int, ...] = (1, 16, 64, 256)
    """Control steps already taken when the timed steps run."""
    repeats: int = 30
    """Timed steps per point (the policy state advances; the median is reported)."""
    image_size: int = 84
    """Camera side (two cameras, agentview and eye-in-hand, as robomimic's Lift)."""
    threads: int = 1
    """torch intra-op threads."""
    out: Path = Path("runs/bench")
    """Where control_latency.json and control_latency.png go."""

    def run(self) -> dict:
        import numpy as np

        from ttm_policy import PolicyConfig, TTMPolicy
        from ttm_policy.baselines import CausalTransformerConfig

        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        lowdim = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
        stats = {
            f"obs/{k}/{m}": np.full(d, v, np.float32)
            for k, d in lowdim.items()
            for m, v in (("min", -1), ("max", 1))
        }
        stats.update({"action/min": -np.ones(7, np.float32), "action/max": np.ones(7, np.float32)})
        rng = np.random.default_rng(0)

        def obs():
            o = {
                f"{c}_image": rng.integers(
                    0, 256, (self.image_size, self.image_size, 3), dtype=np.uint8
                )
                for c in ("agentview", "robot0_eye_in_hand")
            }
            return {**o, **{k: rng.uniform(-1, 1, d).astype(np.float32) for k, d in lowdim.items()}}

        results: dict[str, dict[int, dict]] = {}
        for core in tqdm(self.cores, desc="control-latency", unit="core"):
            kw = (
                {"core": "transformer", "transformer": CausalTransformerConfig(window=None)}
                if core == "transformer-full"
                else {"core": core}
            )
            policy = TTMPolicy(
                PolicyConfig(image_size=self.image_size, crop_size=min(76, self.image_size), **kw),
                stats,
            ).eval()
            policy.reset()
            done, results[core] = 0, {}
            for h in sorted(self.histories):
                while done < h:
                    policy.select_action(obs())
                    done += 1
                times = []
                for _ in range(self.repeats):
                    o = obs()
                    t0 = time.perf_counter()
                    policy.select_action(o)
                    times.append(time.perf_counter() - t0)
                done += self.repeats
                results[core][h] = median_p90_ms(times)
        hs = sorted(self.histories)
        print(
            f"\nms per control step (images {self.image_size}px x2 -> action), batch 1, {self.threads} thread(s)"
        )
        rows = [["core", *(f"h={h}" for h in hs)]]
        rows += [[core, *(f"{r[h]['median_ms']:.2f}" for h in hs)] for core, r in results.items()]
        print_table(rows, [18] + [10] * len(hs))
        png = lines_png(
            self.out / "control_latency.png",
            [
                (
                    "ms per control step (median)",
                    {core: {h: r[h]["median_ms"] for h in hs} for core, r in results.items()},
                )
            ],
            xlabel="history length (control steps)",
            title="End-to-end control step, default Lift policy, CPU, batch 1",
            figsize=(6, 4),
            legend_fontsize=8,
        )
        return report(self.out, "control_latency", config_strings(self), (png,), results=results)

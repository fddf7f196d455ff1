"""The results table: every temporal core on the same demonstrations with the same budget.

    ttm-bench results --task PointCue --delays 10 30 --out runs/results

For each delay: collect expert demonstrations once, train each core with the same recipe
(the quickstart's: whole episodes, D=32, one layer, AdamW 2e-3, the same steps and batch),
evaluate each over the same seeded episodes, then write `compare.md` / `compare.png` (success
with 95% Wilson intervals) and `results.json` (budgets, wall times, hardware). Finished runs are
reused, so an interrupted table resumes where it stopped.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

CORES = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")


def run_table(
    task: str,
    delays: tuple[int, ...],
    cores: tuple[str, ...],
    out: Path,
    episodes: int = 200,
    steps: int = 500,
    eval_episodes: int = 50,
    image_size: int = 32,
    seed: int = 0,
) -> dict:
    from envs.collect import Args, collect
    from eval.compare import compare
    from eval.evaluate import EvalConfig, evaluate
    from eval.quickstart import QuickstartConfig, train_config
    from train.train import checkpoint_steps, train
    from ttm_policy import CausalTransformerConfig, LSTMConfig

    rows, evals = {}, []
    for delay in delays:
        root = out / f"{task}_delay{delay}"
        data = root / "demos.hdf5"
        if not data.exists():
            collect(
                Args(
                    task=task,
                    out=data,
                    episodes=episodes,
                    image_size=image_size,
                    seed=seed,
                    delay_steps=delay,
                    overwrite=True,
                )
            )
        qs = QuickstartConfig(out=root, steps=steps, seed=seed)
        for core in cores:
            t0 = time.perf_counter()
            cfg = replace(train_config(qs, data), out=root / core, policy=core)
            # Baselines at the TTM's size: one layer, D=32 (LSTM: 2 x 64, as small as the TTM's unit).
            cfg.model.lstm = LSTMConfig(hidden=64, layers=2)
            cfg.model.transformer = CausalTransformerConfig(window=6, layers=1, heads=4, mlp_dim=64)
            done = checkpoint_steps(cfg.out)
            if not (done and done[-1] >= steps):
                train(replace(cfg, resume=bool(done)))
            train_s = time.perf_counter() - t0
            ev_path = root / core / "eval" / "eval.json"
            if not ev_path.exists():
                evaluate(
                    EvalConfig(
                        checkpoint=root / core / "checkpoints" / "last",
                        episodes=eval_episodes,
                        envs=2,
                        seed=seed,
                        out=ev_path.parent,
                    )
                )
            ev = json.loads(ev_path.read_text())
            summary = json.loads((root / core / "summary.json").read_text())
            rows[f"{task}/delay{delay}/{core}"] = {
                "success_rate": ev["success_rate"],
                "successes": ev["successes"],
                "episodes": ev["episodes_run"],
                "ci95_wilson": ev["ci95_wilson"],
                "train_steps": summary["steps"],
                "parameters": summary["parameters"],
                "train_wall_s_this_call": train_s,
            }
            evals.append(ev_path)
    md, png = compare(
        evals, out, title=f"{task}: success over {eval_episodes} episodes (95% Wilson interval)"
    )
    payload = {
        "task": task,
        "delays": delays,
        "cores": cores,
        "demos": episodes,
        "train_steps": steps,
        "eval_episodes": eval_episodes,
        "image_size": image_size,
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "rows": rows,
        "table": str(md),
        "chart": str(png),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    return payload

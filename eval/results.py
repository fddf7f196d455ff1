"""The results table: every temporal core on the same demonstrations with the same budget.

    ttm-bench results --task PointCue --delays 10 30 --out runs/results
    ttm-bench results --task LiftCued --delays 10 30 --out runs/results
    ttm-bench results --task Lift --out runs/results

For each delay (or once, for a task without a cue): collect expert demonstrations once, train
each core with the same recipe (the quickstart's: whole episodes, D=32, one layer, AdamW 2e-3,
the same steps and batch), evaluate each over the same seeded episodes, then write
`out/table_<task>/compare.md` / `compare.png` (success with 95% Wilson intervals) and
`out/results_<task>.json` (budgets, wall times, hardware). Finished demos, training runs and
evaluations are reused, so an interrupted table resumes where it stopped, and several
processes may each run some of the cores (`--cores`); the table lists every core whose
evaluation exists.

Demonstrations and cameras follow `eval.quickstart.recipe` (each overridable): PointCue 200
demonstrations at 32 px; robosuite tasks 100 demonstrations from the `agentview` camera at
64 px, with robot proprioception and object poses (on the cued tasks the object poses do not
reveal the cue, which only the images show).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

CORES = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")


def cell_dir(out: Path, task: str, delay: int | None) -> Path:
    return out / (task if delay is None else f"{task}_delay{delay}")


def run_cell(root: Path, core: str, steps: int, eval_episodes: int, seed: int) -> Path:
    """Train `core` on root/demos.hdf5 and evaluate it; returns its eval.json (reused if done)."""
    from eval.evaluate import EvalConfig, evaluate
    from eval.quickstart import QuickstartConfig, train_config
    from train.train import checkpoint_steps, train
    from ttm_policy import CausalTransformerConfig, LSTMConfig

    qs = QuickstartConfig(out=root, steps=steps, seed=seed)
    data = root / "demos.hdf5"
    cfg = replace(train_config(qs, data), out=root / core, policy=core)
    # Baselines at the TTM's size: one layer, D=32 (LSTM: 2 x 64, as small as the TTM's unit).
    cfg.model.lstm = LSTMConfig(hidden=64, layers=2)
    cfg.model.transformer = CausalTransformerConfig(window=6, layers=1, heads=4, mlp_dim=64)
    timing = root / core / "timing.json"
    done = checkpoint_steps(cfg.out)
    if not (done and done[-1] >= steps):
        t0 = time.perf_counter()
        train(replace(cfg, resume=bool(done)))
        spent = time.perf_counter() - t0
        if done:  # resumed: add to the time spent before the interruption, when it was recorded
            spent += (
                json.loads(timing.read_text()).get("train_wall_s", 0.0) if timing.exists() else 0
            )
        timing.write_text(json.dumps({"train_wall_s": spent, "resumed": bool(done)}))
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
    return ev_path


def run_table(
    task: str,
    delays: tuple[int, ...],
    cores: tuple[str, ...],
    out: Path,
    episodes: int | None = None,
    steps: int | None = None,
    eval_episodes: int = 50,
    image_size: int | None = None,
    cameras: tuple[str, ...] | None = None,
    seed: int = 0,
) -> dict:
    """Run the missing cells of `task`'s rows; `delays=()` means one row without a delay."""
    from envs.collect import Args, collect
    from eval.compare import compare
    from eval.quickstart import recipe

    r = recipe(task)
    episodes = episodes or r["episodes"]
    steps = steps or r["steps"]
    image_size = image_size or r["image_size"]
    cameras = cameras or r["cameras"]
    unknown = [c for c in cores if c not in CORES]
    if unknown:
        raise ValueError(f"unknown cores {unknown}; known: {', '.join(CORES)}")
    rows, evals = {}, []
    for delay in delays or (None,):
        root = cell_dir(out, task, delay)
        data = root / "demos.hdf5"
        if not data.exists():
            t0 = time.perf_counter()
            collect(
                Args(
                    task=task,
                    out=data,
                    episodes=episodes,
                    workers=2,
                    cameras=cameras,
                    image_size=image_size,
                    seed=seed,
                    delay_steps=delay,
                    overwrite=True,
                )
            )
            (root / "collect_timing.json").write_text(
                json.dumps({"collect_wall_s": time.perf_counter() - t0})
            )
        for core in cores:
            run_cell(root, core, steps, eval_episodes, seed)
        # The table lists every core evaluated so far (other processes may run other cores).
        for core in CORES:
            ev_path = root / core / "eval" / "eval.json"
            if not ev_path.exists():
                continue
            ev = json.loads(ev_path.read_text())
            summary = json.loads((root / core / "summary.json").read_text())
            timing = root / core / "timing.json"
            rows[f"{task}/delay{delay}/{core}" if delay is not None else f"{task}/{core}"] = {
                "success_rate": ev["success_rate"],
                "successes": ev["successes"],
                "episodes": ev["episodes_run"],
                "ci95_wilson": ev["ci95_wilson"],
                "train_steps": summary["steps"],
                "parameters": summary["parameters"],
                "train_wall_s": json.loads(timing.read_text())["train_wall_s"]
                if timing.exists()
                else None,
                "eval_wall_s": ev.get("wall_time_s"),
            }
            evals.append(ev_path)
    md, png = compare(
        evals,
        out / f"table_{task}",
        title=f"{task}: success over {eval_episodes} episodes (95% Wilson interval)",
    )
    payload = {
        "task": task,
        "delays": delays,
        "cores": [c for c in CORES if any(k.endswith("/" + c) for k in rows)],
        "demos": episodes,
        "cameras": cameras,
        "image_size": image_size,
        "train_steps": steps,
        "eval_episodes": eval_episodes,
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "rows": rows,
        "table": str(md),
        "chart": str(png),
    }
    (out / f"results_{task}.json").write_text(json.dumps(payload, indent=2, default=str))
    return payload

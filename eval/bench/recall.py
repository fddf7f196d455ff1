"""`ttm-bench recall`: the memory-initialisation study on the synthetic recall task (zeros vs
learned initial memory); the task itself is `eval.recall`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import print_table, report
from ttm_policy.introspect import token_influence, token_retention


@dataclass
class Recall:
    """Iterations to solve the synthetic recall task, zeros vs learned initial memory."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One training run per seed and initialisation."""
    steps: int = 30
    """T: distance from the cue to the answer."""
    max_iters: int = 400
    """Budget per run."""
    out: Path = Path("runs/bench")
    """Where recall.json goes."""
    extra: dict = field(default_factory=dict)
    """Extra TTMConfig overrides applied to both arms, e.g. {"summariser": "tl-mha"}."""

    def run(self) -> dict:
        from eval.recall import RecallConfig, small_ttm, train_recall

        torch.set_num_threads(1)
        cfg = RecallConfig(steps=self.steps, max_iters=self.max_iters)
        runs = []
        jobs = [(init, s) for init in ("zeros", "learned") for s in self.seeds]
        for init, seed in tqdm(jobs, desc="recall", unit="run"):
            torch.manual_seed(seed)
            ttm = small_ttm(cfg.dim, memory_init=init, **self.extra)
            probe = torch.randn(64, cfg.steps, cfg.tokens, cfg.dim)
            before = token_retention(ttm, probe)[-1].item()
            influence_before = token_influence(ttm.eval(), probe)[-1].item()
            r = train_recall(ttm.train(), cfg, seed=seed)
            after = token_retention(ttm, probe)[-1].item()  # the t=0 token, at t=T-1
            influence_after = token_influence(ttm.eval(), probe)[-1].item()
            runs.append(
                {
                    "memory_init": init,
                    "seed": seed,
                    "retention_init": before,
                    "retention_trained": after,
                    "influence_init": influence_before,
                    "influence_trained": influence_after,
                    **r,
                }
            )
        print(
            f"\nrecall task, T={self.steps}, budget {self.max_iters} iterations, target {cfg.target}"
        )
        metrics = ("retention_init", "retention_trained", "influence_init", "influence_trained")
        rows = [["init", "solved", "median iters", "median acc", *metrics]]
        summary = {}
        for init in ("zeros", "learned"):
            rs = [r for r in runs if r["memory_init"] == init]
            solved = sum(r["accuracy"] >= cfg.target for r in rs)
            s = {
                "solved": solved,
                "runs": len(rs),
                "median_iters": statistics.median(r["iters"] for r in rs),
                "median_accuracy": statistics.median(r["accuracy"] for r in rs),
            }
            s.update({f"median_{m}": statistics.median(r[m] for r in rs) for m in metrics})
            summary[init] = s
            rows.append(
                [init, f"{solved:>5}/{len(rs):<2}", s["median_iters"]]
                + [f"{s['median_accuracy']:.3f}", *(f"{s['median_' + m]:.2e}" for m in metrics)]
            )
        print_table(rows, [9, 8, 14, 12] + [20] * len(metrics))
        print(
            "retention: share of the t=0 token still in memory at t=T-1 through the direct write "
            "path; influence: change of memory at T-1 when that token is nudged, relative to t=0"
        )
        config = {"steps": self.steps, "max_iters": self.max_iters, "extra": self.extra}
        return report(self.out, "recall", config, summary=summary, runs=runs)

"""`ttm-bench memory-sweep`: success against parameters, TTM memory size against LSTM width.

    ttm-bench memory-sweep --dataset data/sequencecue.hdf5 --out runs/sweep_sc

On one dataset (a memory task's demonstrations), train the TTM at several memory sizes M and
the LSTM at several hidden widths with the default recipe otherwise (`ttm-train --dataset X
--policy ttm --model.ttm.memory-tokens M`, `--policy lstm --model.lstm.hidden H`; the same
demonstrations, steps and batch for every cell), the causal Transformer over a window of
steps and over the full history (`--policy transformer --model.transformer.window K`; the
full history is the perfect-memory anchor whose cost grows with the episode), plus the
memory-less TTM as the floor, and evaluate each over the same seeded episodes. Writes
`memory_sweep.json` (per cell: parameters, successes, Wilson interval, training wall time)
and `memory_sweep.png` (success against parameters, one line per core): the figure that
shows what a set of memory tokens buys per parameter. Finished cells are reused, so an interrupted sweep resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import _pyplot, _save, config_strings, print_table, report, wilson_yerr


@dataclass
class MemorySweep:
    """TTM memory sizes and LSTM widths on one dataset, success against parameters."""

    dataset: Path
    """The demonstrations (every cell trains on the same file)."""
    ttm_memory: tuple[int, ...] = (2, 4, 8, 16, 32)
    """M: memory tokens of the TTM cells (the default recipe has 8)."""
    lstm_hidden: tuple[int, ...] = (16, 32, 64, 128)
    """Hidden width of the LSTM cells (the default recipe has 64)."""
    transformer_window: tuple[int, ...] = (6, 0)
    """Window K (steps attended) of the causal-Transformer cells; 0 = the full history. The
    window does not change the parameters: these cells sit at one parameter count."""
    memoryless: bool = True
    """Also train the memory-less TTM (the floor: no path from the cue to the decision)."""
    steps: int | None = None
    """Training steps per cell; None: the recipe's."""
    episodes: int = 50
    """Seeded evaluation episodes per cell."""
    seed: int = 0
    """Training and evaluation seed."""
    out: Path = Path("runs/memory_sweep")
    """One run directory per cell, memory_sweep.json and memory_sweep.png."""

    def cells(self) -> list[tuple[str, str, str | None, int | None]]:
        """(run name, core, settings field it sizes or None, size) per cell, in order."""
        cells = [(f"ttm_M{m}", "ttm", "memory_tokens", m) for m in self.ttm_memory]
        cells += [(f"lstm_H{h}", "lstm", "hidden", h) for h in self.lstm_hidden]
        cells += [
            (f"transformer_K{k}" if k else "transformer_full", "transformer", "window", k or None)
            for k in self.transformer_window
        ]
        if self.memoryless:
            cells.append(("ttm-memoryless", "ttm-memoryless", None, None))
        return cells

    def run(self) -> dict:
        from eval.results import train_and_evaluate
        from train.presets import preset
        from ttm_policy import TTMPolicy
        from ttm_policy.cores import spec
        from ttm_policy.state import num_bytes

        if not self.dataset.is_file():
            raise FileNotFoundError(f"--dataset {self.dataset}: no such file")
        rows = []
        for name, core, sized, size in tqdm(self.cells(), desc="memory-sweep", unit="cell"):
            cfg = preset(
                "cpu", dataset=self.dataset, out=self.out / name, policy=core, seed=self.seed
            )
            if self.steps:
                cfg.steps = self.steps
            if not torch.cuda.is_available():
                cfg.threads = 1  # two sweeps at a time on 2 cores
            if sized is not None:  # the core's own settings group (ttm_policy.cores)
                group = spec(core).config_field
                setattr(cfg.model, group, replace(getattr(cfg.model, group), **{sized: size}))
            ev = json.loads(train_and_evaluate(cfg, self.episodes, self.seed).read_text())
            summary = json.loads((cfg.out / "summary.json").read_text())
            policy = TTMPolicy.from_pretrained(cfg.out / "checkpoints" / "last")
            timing = json.loads((cfg.out / "timing.json").read_text())
            grows = sized == "window" and size is None  # the full history: no fixed state
            rows.append(
                {
                    "run": name,
                    "core": core,
                    "series": "transformer (full history)" if grows else core,
                    "size": size,
                    "parameters": summary["parameters"],
                    # what the robot carries from step to step (the TTM's M x D memory does not
                    # add parameters: M changes this number, not the one above); None: it
                    # grows with every step of the episode
                    "state_floats": None if grows else num_bytes(policy.core.init_memory(1)) // 4,
                    "successes": ev["successes"],
                    "episodes": ev["episodes_run"],
                    "success_rate": ev["success_rate"],
                    "ci95_wilson": ev["ci95_wilson"],
                    "train_wall_s": timing["train_wall_s"],
                    "steps": cfg.steps,
                }
            )
        table = [["cell", "params", "state", "success", "95% CI", "train s"]]
        for r in rows:
            lo, hi = r["ci95_wilson"]
            table.append(
                [
                    r["run"],
                    f"{r['parameters']:,}",
                    "grows" if r["state_floats"] is None else f"{r['state_floats']:,}",
                    f"{r['successes']}/{r['episodes']}",
                    f"[{lo:.0%}, {hi:.0%}]",
                    f"{r['train_wall_s']:.0f}",
                ]
            )
        print(f"\nmemory sweep on {self.dataset} ({self.episodes} seeded episodes per cell)")
        print_table(table, [18, 10, 8, 9, 13, 9])
        png = success_vs_parameters(self.out / "memory_sweep.png", rows, str(self.dataset.name))
        return report(self.out, "memory_sweep", config_strings(self), (png,), cells=rows)


def success_vs_parameters(path: Path, rows: list[dict], title: str) -> Path:
    """Two panels: success (with Wilson intervals) against parameters and against the state
    carried between steps, one line per core, each point labelled with its size (M, hidden
    width or window K). The full-history Transformer's state grows with the episode: it is on
    the parameters panel only."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    names = list(dict.fromkeys(r.get("series", r["core"]) for r in rows))
    color = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per core, both panels
    for ax, key, label in zip(
        axes, ("parameters", "state_floats"), ("parameters", "state carried (floats)")
    ):
        for series in names:
            rs = [r for r in rows if r.get("series", r["core"]) == series and r[key] is not None]
            if not rs:
                continue
            rs.sort(key=lambda r: r[key])
            xs, ys = [r[key] for r in rs], [r["success_rate"] for r in rs]
            ax.errorbar(
                xs, ys, yerr=wilson_yerr(rs), marker="o", capsize=3, label=series,
                color=color[series],
            )  # fmt: skip
            for x, y, r in zip(xs, ys, rs):
                if r["size"] is not None:
                    ax.annotate(str(r["size"]), (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set_xscale("symlog" if key == "state_floats" else "log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(label)
        ax.set_ylabel("success rate (95% Wilson)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"memory sweep: {title}")
    return _save(fig, path)

"""`ttm-bench memory-items`: success against the number of items to remember.

    ttm-bench memory-sweep --dataset data/sc_1item.hdf5 --out runs/sweep_1item   # one per size
    ttm-bench memory-items --sweeps runs/sweep_1item runs/sweep_2items runs/sweep_3items

Reads finished `ttm-bench memory-sweep` directories, each on a SequenceCue dataset with its
own number of cued items (`n_items`, from the cells' `env_args`), and draws one line per cell
name (a TTM memory size, an LSTM width, the memory-less floor) across them: success with its
Wilson interval against the items, each tick labelled with the bits the cue holds
(log2 of the number of ordered sequences). Sweeps of the same size (other training seeds)
are pooled: their episodes are added up into one rate and interval per cell and size.
Writes `memory_items.json` (every sweep's rows and the pooled points) and `memory_items.png`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from envs.rollout import wilson
from eval.bench.report import _pyplot, _save, config_strings, print_table, report, wilson_yerr


def sweep_task(sweep: Path) -> dict:
    """{"n_goals", "n_items", "bits"} of a finished memory sweep's task (its first cell's
    env_args); ValueError if the sweep is unfinished or not on SequenceCue."""
    table = sweep / "memory_sweep.json"
    if not table.is_file():
        raise FileNotFoundError(f"{sweep}: no memory_sweep.json (run ttm-bench memory-sweep)")
    cells = json.loads(table.read_text())["cells"]
    env_args = sweep / cells[0]["run"] / "checkpoints" / "last" / "env_args.json"
    kwargs = json.loads(env_args.read_text()).get("env_kwargs", {})
    if "n_items" not in kwargs or "n_goals" not in kwargs:
        raise ValueError(
            f"{sweep}: its task has no n_items / n_goals (env_args {env_args}); memory-items "
            "compares SequenceCue sweeps"
        )
    goals, items = int(kwargs["n_goals"]), int(kwargs["n_items"])
    sequences = math.perm(goals, items)  # ordered sequences of distinct pads
    return {"n_goals": goals, "n_items": items, "bits": math.log2(sequences)}


@dataclass
class MemoryItems:
    """Success against the number of items to remember, across finished memory sweeps."""

    sweeps: tuple[Path, ...]
    """`ttm-bench memory-sweep` output directories, one per SequenceCue size."""
    out: Path = Path("runs/memory_items")
    """Where memory_items.json and memory_items.png go."""

    def run(self) -> dict:
        if not self.sweeps:
            raise ValueError("--sweeps: name at least one memory-sweep directory")
        rows = []
        for sweep in self.sweeps:
            task = sweep_task(sweep)
            for cell in json.loads((sweep / "memory_sweep.json").read_text())["cells"]:
                rows.append({"sweep": str(sweep), **task, **cell})
        rows.sort(key=lambda r: (r["n_items"], r["bits"], r["run"]))
        table = [["cell", "items", "bits", "params", "success", "95% CI"]]
        for r in rows:
            lo, hi = r["ci95_wilson"]
            table.append(
                [
                    r["run"],
                    str(r["n_items"]),
                    f"{r['bits']:.1f}",
                    f"{r['parameters']:,}",
                    f"{r['successes']}/{r['episodes']}",
                    f"[{lo:.0%}, {hi:.0%}]",
                ]
            )
        print_table(table, [18, 6, 6, 10, 9, 13])
        points = pooled(rows)
        png = success_vs_items(self.out / "memory_items.png", points)
        return report(
            self.out, "memory_items", config_strings(self), (png,), cells=rows, pooled=points
        )


def pooled(rows: list[dict]) -> list[dict]:
    """One point per (cell name, task size): the episodes of every sweep at that size summed,
    with their Wilson interval and the sweeps' own rates."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["run"], r["n_goals"], r["n_items"]), []).append(r)
    points = []
    for (run, goals, items), rs in groups.items():
        k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        points.append(
            {
                "run": run,
                "n_goals": goals,
                "n_items": items,
                "bits": rs[0]["bits"],
                "parameters": rs[0]["parameters"],
                "sweeps": len(rs),
                "successes": k,
                "episodes": n,
                "success_rate": k / n if n else 0.0,
                "ci95_wilson": list(wilson(k, n)),
                "rates": [r["success_rate"] for r in rs],
            }
        )
    return points


def success_vs_items(path: Path, rows: list[dict]) -> Path:
    """Success (Wilson interval) of the pooled points against bits to remember, one line per
    cell name; the x ticks name the items and pads of each task."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(dict.fromkeys(r["run"] for r in rows))  # a core's sizes side by side
    for i, name in enumerate(names):
        rs = sorted((r for r in rows if r["run"] == name), key=lambda r: r["bits"])
        xs, ys = [r["bits"] for r in rs], [r["success_rate"] for r in rs]
        params = f"{rs[0]['parameters'] / 1000:.1f}k"
        ax.errorbar(
            xs, ys, yerr=wilson_yerr(rs), marker="o", capsize=3, label=f"{name} ({params})",
            color=plt.cm.tab20(i % 20),  # distinct beyond the default cycle's ten colours
        )  # fmt: skip
    ticks = {r["bits"]: f"{r['n_items']} of {r['n_goals']}\n{r['bits']:.1f} bits" for r in rows}
    ax.set_xticks(list(ticks), list(ticks.values()))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("items cued (of pads), bits to remember")
    ax.set_ylabel("success rate (95% Wilson)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("SequenceCue: success against the items to remember")
    return _save(fig, path)

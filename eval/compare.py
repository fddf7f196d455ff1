"""Compare evaluations: several eval.json files (policies x tasks) -> a markdown table and a
bar chart of success rates with 95% Wilson intervals, ready for the README.

    ttm-bench compare runs/*/eval/*/eval.json --out docs/compare
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import get_args

from ttm_policy.policy import Core


def task_label(report: dict, varying: tuple[str, ...] = ()) -> str:
    """`ttm/PointCue-v0` -> `PointCue`, plus the env kwargs that differ between the reports
    compared (e.g. `PointCue (delay_steps=30)`)."""
    name = str(report.get("env", "?")).removeprefix("ttm/").removesuffix("-v0")
    kwargs = {**report.get("env_kwargs", {}), **report.get("env_overrides", {})}
    extra = ", ".join(f"{k}={kwargs[k]}" for k in varying if k in kwargs)
    return f"{name} ({extra})" if extra else name


def varying_kwargs(reports: list[dict]) -> tuple[str, ...]:
    """Scalar env kwargs whose values are not the same in every report (delays, seeds...).
    Nested settings (controller configs, camera lists) describe the setup, not the row."""
    kws = [{**r.get("env_kwargs", {}), **r.get("env_overrides", {})} for r in reports]
    keys = sorted({k for kw in kws for k, v in kw.items() if not isinstance(v, (dict, list))})
    return tuple(k for k in keys if len({json.dumps(kw.get(k), sort_keys=True) for kw in kws}) > 1)


CORE_ORDER = get_args(Core)  # ttm, ttm-memoryless, lstm, transformer, none


def load_reports(paths: list[Path]) -> list[dict]:
    reports = []
    for p in paths:
        try:
            r = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a readable eval.json ({e})") from e
        for key in ("success_rate", "successes", "episodes_run", "ci95_wilson", "core"):
            if key not in r:
                raise ValueError(f"{p}: lacks {key!r}; is it an eval.json written by ttm-eval?")
        reports.append({**r, "path": str(p)})
    return reports


def compare(
    paths: list[Path], out: Path, title: str = "Success rate (95% Wilson interval)"
) -> tuple[Path, Path]:
    """Write `out/compare.md` and `out/compare.png`; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = load_reports(paths)
    cells: dict[str, dict[str, dict]] = defaultdict(dict)
    cores: list[str] = []
    varying = varying_kwargs(reports)
    for r in reports:
        cells[task_label(r, varying)][r["core"]] = r
        if r["core"] not in cores:
            cores.append(r["core"])
    tasks = list(cells)
    cores.sort(key=lambda c: CORE_ORDER.index(c) if c in CORE_ORDER else len(CORE_ORDER))
    lines = [f"| task | {' | '.join(cores)} |", "|---|" + "---|" * len(cores)]
    for t in tasks:
        row = []
        for c in cores:
            r = cells[t].get(c)
            if r is None:
                row.append("not run")
            else:
                lo, hi = r["ci95_wilson"]
                row.append(
                    f"{r['success_rate']:.0%} ({r['successes']}/{r['episodes_run']}, [{lo:.0%}, {hi:.0%}])"
                )
        lines.append(f"| {t} | {' | '.join(row)} |")
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(f"**{title}**\n\n" + "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * max(1, len(cores)) / 2), 4))
    width = 0.8 / max(1, len(cores))
    for j, c in enumerate(cores):
        xs, ys, err = [], [], [[], []]
        for i, t in enumerate(tasks):
            r = cells[t].get(c)
            if r is None:
                continue
            lo, hi = r["ci95_wilson"]
            xs.append(i + (j - (len(cores) - 1) / 2) * width)
            ys.append(r["success_rate"])
            err[0].append(r["success_rate"] - lo)
            err[1].append(hi - r["success_rate"])
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=c)
    ax.set_xticks(range(len(tasks)), tasks, rotation=15, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = out / "compare.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return md, png

"""What every benchmark reports with: the machine it ran on, the JSON file, the console table
and the PNG chart (bars, or lines against history length)."""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict
from pathlib import Path

import torch


def machine() -> dict:
    """torch, Python, CPU and intra-op threads: the context a timing needs to be read."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def write_json(out: Path, name: str, payload: dict) -> Path:
    """`out/<name>.json` (creating `out`); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def config_strings(benchmark) -> dict:
    """A benchmark's flags with every value as its string, for the JSON's "config"."""
    return {k: str(v) for k, v in asdict(benchmark).items()}


def report(out: Path, name: str, config: dict, pngs: tuple[Path, ...] = (), **sections) -> dict:
    """Write `{"config", "machine", **sections}` to `out/<name>.json` (a `machine` section
    replaces the default one), say which files the benchmark wrote, and return the payload."""
    payload = {"config": config, "machine": machine(), **sections}
    path = write_json(out, name, payload)
    print(f"wrote {path}" + "".join(f" and {png}" for png in pngs))
    return payload


def median_p90_ms(seconds: list[float]) -> dict:
    """Median, 90th percentile (lower) and minimum of timings in seconds, in milliseconds (the
    minimum: the cost without the preemptions of a shared machine)."""
    return {
        "median_ms": 1e3 * statistics.median(seconds),
        "min_ms": 1e3 * min(seconds),
        "p90_ms": 1e3 * sorted(seconds)[int(0.9 * (len(seconds) - 1))],
    }


def print_table(rows: list[list], widths: list[int]) -> None:
    """Print `rows` (the header first), the first column left-aligned and the others right-
    aligned, each padded to its width; cells come formatted (e.g. f"{ms:.3f}")."""
    for row in rows:
        first, *rest = row
        print(f"{first:<{widths[0]}}" + "".join(f"{c:>{w}}" for c, w in zip(rest, widths[1:])))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wilson_yerr(rows: list[dict]) -> list[list[float]]:
    """matplotlib `yerr` (below, above) of rows with `success_rate` and `ci95_wilson`, clamped
    at zero: at 0/n or n/n an interval's end meets the rate only up to rounding."""
    return [
        [max(0.0, r["success_rate"] - r["ci95_wilson"][0]) for r in rows],
        [max(0.0, r["ci95_wilson"][1] - r["success_rate"]) for r in rows],
    ]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def bar_png(path: Path, bars: dict[str, float], ylabel: str, title: str) -> Path:
    """One bar per `{label: value}`."""
    fig, ax = _pyplot().subplots(figsize=(max(5, 0.9 * len(bars)), 3.5))
    ax.bar(range(len(bars)), list(bars.values()))
    ax.set_xticks(range(len(bars)), list(bars), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def lines_png(
    path: Path,
    panels: list[tuple[str, dict[str, dict[int, float]]]],
    *,
    xlabel: str,
    title: str,
    figsize: tuple[float, float],
    ylog: bool = False,
    legend_fontsize: float | None = None,
) -> Path:
    """Side-by-side panels, each `(ylabel, {line name: {history length: value}})`, with the
    history on a log2 axis; the legend goes on the first panel."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=figsize, squeeze=False)
    for ax, (ylabel, lines) in zip(axes[0], panels):
        for name, points in lines.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        if ylog:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=legend_fontsize)
    if len(panels) > 1:
        fig.suptitle(title)
    else:
        axes[0][0].set_title(title)
    return _save(fig, path)

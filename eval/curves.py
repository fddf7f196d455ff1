"""Learning curves: rollout success against training time, one line per run, in one figure.

    python -m eval.curves --runs ttm=runs/lift_ttm lstm=runs/lift_lstm --out docs/lift_curve.png

Each run is a `ttm-train` output directory trained with `--eval-every N`: its metrics.jsonl
holds `rollout/success_rate` (with its Wilson interval) every N steps and `charts/train_s`, the
seconds spent in optimiser steps so far (rollouts, validation and checkpoints excluded, so
runs that evaluated at different rates compare fairly). The figure marks where each run first
reaches `--target` (80% by default) and the JSON beside it gives the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro


def read_curve(run: Path) -> list[dict]:
    """(step, train_s, success, lo, hi) of every rollout evaluation logged in `run`, by step.
    A run logged before `charts/train_s` existed is an error naming the run."""
    from train.train import read_metrics

    points = []
    for row in read_metrics(run / "metrics.jsonl"):
        if "rollout/success_rate" not in row:
            continue
        if "charts/train_s" not in row:
            raise ValueError(
                f"{run}/metrics.jsonl has rollouts without charts/train_s (a run from before the "
                "training clock was logged): re-train it to draw its curve"
            )
        points.append(
            {
                "step": row["step"],
                "train_s": row["charts/train_s"],
                "success": row["rollout/success_rate"],
                "lo": row.get("rollout/ci95_low", row["rollout/success_rate"]),
                "hi": row.get("rollout/ci95_high", row["rollout/success_rate"]),
            }
        )
    if not points:
        raise ValueError(f"{run}/metrics.jsonl has no rollout evaluations: train with --eval-every")
    return sorted(points, key=lambda p: p["step"])


def time_to(points: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation with success >= target (None: never)."""
    return next((p["train_s"] for p in points if p["success"] >= target), None)


def plot_curves(runs: dict[str, Path], out: Path, title: str, target: float = 0.8) -> dict:
    """Draw every run's success against training minutes with its Wilson band, mark the time
    to `target`, write `out` (PNG) and `out` with .json; returns the JSON payload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    payload = {"title": title, "target": target, "runs": {}}
    for label, run in runs.items():
        pts = read_curve(Path(run))
        minutes = [p["train_s"] / 60 for p in pts]
        (line,) = ax.plot(minutes, [p["success"] for p in pts], marker="o", ms=3, label=label)
        ax.fill_between(
            minutes, [p["lo"] for p in pts], [p["hi"] for p in pts], alpha=0.15,
            color=line.get_color(),
        )  # fmt: skip
        reached = time_to(pts, target)
        if reached is not None:
            ax.axvline(reached / 60, color=line.get_color(), ls="--", lw=1)
            ax.annotate(
                f"{reached / 60:.1f} min", (reached / 60, target), color=line.get_color(),
                textcoords="offset points", xytext=(3, -12), fontsize=8,
            )  # fmt: skip
        payload["runs"][label] = {"run": str(run), "points": pts, "time_to_target_s": reached}
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training time (minutes, optimiser steps only)", ylabel="rollout success",
           ylim=(-0.02, 1.02))  # fmt: skip
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


@dataclass
class Args:
    runs: tuple[str, ...]
    """label=run_dir pairs, e.g. ttm=runs/lift_ttm lstm=runs/lift_lstm."""
    out: Path = Path("runs/learning_curve.png")
    """Where the figure goes (and its numbers, as .json beside it)."""
    title: str = "success against training time"
    """Figure title."""
    target: float = 0.8
    """Success rate whose first crossing is marked."""


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv)
    runs = {}
    for pair in args.runs:
        label, sep, run = pair.partition("=")
        if not sep:
            raise SystemExit(f"eval.curves: --runs takes label=run_dir pairs, got {pair!r}")
        runs[label] = Path(run)
    try:
        payload = plot_curves(runs, args.out, args.title, args.target)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"eval.curves: {e}") from None
    for label, r in payload["runs"].items():
        t = r["time_to_target_s"]
        reached = f"{t / 60:.1f} min" if t is not None else "not reached"
        print(f"{label}: {args.target:.0%} at {reached}; last {r['points'][-1]['success']:.0%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

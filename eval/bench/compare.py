"""`ttm-bench compare`: eval.json files -> markdown table and bar chart of success with
intervals; the table and chart are built by `eval.compare.compare`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Compare:
    """Several eval.json files (policies x tasks) -> markdown table + bar chart with intervals."""

    evals: tyro.conf.Positional[tuple[Path, ...]]
    """eval.json files written by ttm-eval."""
    out: Path = Path("runs/compare")
    """Where compare.md and compare.png go."""

    def run(self) -> None:
        from eval.compare import compare

        compare(list(self.evals), self.out)

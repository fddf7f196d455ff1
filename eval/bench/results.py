"""`ttm-bench results`: every temporal core on one memory task, same demos and budget, per
delay; the table itself is built by `eval.results.run_table`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Results:
    """The results table: every temporal core on the same demonstrations and budget, per delay."""

    task: str = "PointCue"
    """Task (envs.TASKS): PointCue, LiftCued, PlaceCued (with delays), Lift, PickPlaceCan, ..."""
    delays: tuple[int, ...] = (10, 30)
    """Delay steps between the cue and the decision (short and long); none for tasks without
    a cue (`--delays` with no value)."""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """Temporal cores to run (the table lists every core evaluated so far)."""
    episodes: int | None = None
    """Expert demonstrations per delay; default: 200 on PointCue, 100 on robosuite tasks."""
    steps: int | None = None
    """Training steps per core (the same budget for all); default: ttm-train's (the recipe)."""
    eval_episodes: int = 50
    """Evaluation episodes per cell."""
    image_size: int | None = None
    """Camera side; default: 32 on PointCue, 64 on robosuite tasks."""
    cameras: tuple[str, ...] | None = None
    """Cameras; default: the task's own on PointCue, agentview and the wrist camera on
    robosuite tasks."""
    out: Path = Path("runs/results")
    """Where each run, table_<task>/compare.md|png and results_<task>.json go."""
    paired_cues: bool = False
    """Memory tasks: record each scene once per cue (ttm-collect --paired-cues)."""
    write_gate: bool = False
    """TTM cores: the gated memory write (TTMConfig.write_gate)."""
    aux_final_keys: tuple[str, ...] = ()
    """Every core: predict these low-dim keys' final values from every step, an auxiliary
    loss (PolicyConfig.aux_final_keys), e.g. `robot0_eef_pos`."""
    object_state: bool = False
    """Ablation: also give the policies the simulator's object poses (`object`), which a real
    robot does not have; the table labels such rows."""

    def run(self) -> None:
        from eval.results import run_table

        kw = asdict(self)  # the flags after `out` are run_table's keyword arguments, by name
        run_table(kw.pop("task"), kw.pop("delays"), kw.pop("cores"), kw.pop("out"), **kw)

"""`ttm-bench`: benchmarks that print tables and write JSON (and PNG plots) into `--out`.

Subcommands, one module each (all report through `eval.bench.report`):
  step-latency  time per streaming step at batch 1 against history length, per temporal core
  recall        memory-initialisation study on the synthetic recall task (zeros vs learned)
  train-throughput  behaviour-cloning samples/s and images/s per temporal core
  compare       eval.json files -> markdown table and bar chart of success with intervals
  results       every temporal core on one memory task, same demos and budget, per delay
  runtime-latency     exported ONNX policy latency at batch 1 (p50/p99) and file sizes
  control-latency     end-to-end control step (images -> action) per core against history
  rollout-throughput  env steps/s in vector envs with 1, 2, 4 envs, with and without images
  memory-sweep  success against parameters: TTM memory sizes vs LSTM widths on one dataset
  memory-items  success against the number of items to remember, across memory sweeps
  observation-cost  training, control and simulation time per image size and camera set

Benchmarks report medians and ratios; nothing here asserts a speed (the machine is shared).
"""

from __future__ import annotations

import sys
from typing import Annotated

import tyro

from eval.bench.compare import Compare
from eval.bench.control_latency import ControlLatency
from eval.bench.memory_items import MemoryItems
from eval.bench.memory_sweep import MemorySweep
from eval.bench.observation_cost import ObservationCost
from eval.bench.recall import Recall
from eval.bench.results import Results
from eval.bench.rollout_throughput import RolloutThroughput
from eval.bench.runtime_latency import RuntimeLatency
from eval.bench.step_latency import StepLatency
from eval.bench.train_throughput import TrainThroughput

Command = (
    Annotated[StepLatency, tyro.conf.subcommand("step-latency")]
    | Annotated[Recall, tyro.conf.subcommand("recall")]
    | Annotated[TrainThroughput, tyro.conf.subcommand("train-throughput")]
    | Annotated[Compare, tyro.conf.subcommand("compare")]
    | Annotated[Results, tyro.conf.subcommand("results")]
    | Annotated[ControlLatency, tyro.conf.subcommand("control-latency")]
    | Annotated[RolloutThroughput, tyro.conf.subcommand("rollout-throughput")]
    | Annotated[RuntimeLatency, tyro.conf.subcommand("runtime-latency")]
    | Annotated[MemorySweep, tyro.conf.subcommand("memory-sweep")]
    | Annotated[MemoryItems, tyro.conf.subcommand("memory-items")]
    | Annotated[ObservationCost, tyro.conf.subcommand("observation-cost")]
)


def main(argv: list[str] | None = None) -> None:
    from envs import gl
    from envs.collect import UsageError

    gl.setup()  # headless rendering (MUJOCO_GL=egl) unless chosen, before any env is made
    command = tyro.cli(Command, args=argv)
    try:
        command.run()
    except (UsageError, ValueError, FileNotFoundError) as e:
        # What the user asked for cannot be done (a bad task, delay, core, file, or cells on
        # disk made otherwise): one line, exit 2, as ttm-collect, ttm-train and ttm-eval.
        print(f"ttm-bench: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2) from None

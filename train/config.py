"""A training run's settings (`TrainConfig`) and ttm-train's command line (`parse_args`).

`TrainConfig()`'s defaults are preset `cpu` (train/presets.py), the recipe of
docs/results.md. The command line starts from a preset (`--preset`), offers only the chosen
core's settings group (`--policy`), and overrides the rest flag by flag. Imports: ttm_policy
and train.presets; not train.train (which re-exports both names).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import tyro

from train.presets import cpu_model, split_preset
from ttm_policy.config import cli_view, plain
from ttm_policy.policy import Core, PolicyConfig


@dataclass
class TrainConfig:
    """One training run. The defaults are preset `cpu`, the recipe of docs/results.md
    (`train/presets.py`); `ttm-train --preset gpu` starts from the larger one."""

    dataset: tuple[Path, ...]
    """robomimic-format HDF5 demonstrations (from `ttm-collect` or robomimic's tools). Several
    files of different tasks (`--dataset a.hdf5 b.hdf5`, each file's task named by its
    env_args) train one multi-task policy told its task by a learned FiLM of its tokens: the
    batches mix the tasks, the normalisation covers them all, and the checkpoint keeps the task
    names (`model.tasks`). Files of one task train a single-task policy on all of them."""
    out: Path = Path("runs/train")
    """Output directory: config.json, metrics.jsonl, checkpoints/."""
    policy: Core = "ttm"
    """Temporal core: ttm, ttm-memoryless, lstm, transformer, none (sets model.core)."""
    steps: int = 2000
    """Optimiser steps in total (a resumed run continues up to this count)."""
    batch_size: int = 16
    """Global batch (split across ranks under torchrun): episodes, or with `chunk` the lanes
    that read them."""
    chunk: int = 64
    """Steps per sample: each batch row reads one episode from its first step in consecutive
    pieces of `chunk` steps, one piece per optimiser step, and the memory (any core's state)
    is carried from one piece to the next, as a rollout carries it; gradients stop at the
    piece boundary (train/data.py `EpisodeStreams`). So a step costs `chunk` steps per row
    however long the episodes are. Episodes no longer than this train whole (the batches are
    then exactly those of whole-episode training). A memory task learns to keep a cue only if
    the cue and the decision fall in the same piece: the first piece starts at step 0, so
    keep `chunk` above the cue-to-decision span. 0: whole episodes always."""
    obs_keys: tuple[str, ...] | None = None
    """Observation keys; None: every `*_image` key in the file plus the robot's proprioception
    (robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos), never simulator object state."""
    crop: float = 0.9
    """Side of the random training crop (central at inference) as a fraction of the image side
    (robomimic: 76 of 84 px); 1 turns cropping off. Sets model.crop_size from the data."""
    lr: float = 2e-3
    """AdamW peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup: int = 50
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    ema: float | None = None
    """EMA decay of the weights (e.g. 0.999); checkpoints then hold the EMA weights."""
    seed: int = 0
    """Seeds torch and the data order."""
    device: str = "auto"
    """`auto` (CUDA if available), `cpu`, `cuda`, `cuda:1`, ..."""
    log_every: int = 10
    """Steps between metrics.jsonl lines."""
    save_every: int = 500
    """Steps between checkpoints (and one at the end)."""
    keep_last: int = 3
    """Numbered checkpoints kept (older ones deleted; `last` is always kept)."""
    valid_every: int = 500
    """Steps between validation losses on the `mask/valid` demos (0 disables)."""
    valid_batches: int = 8
    """Batches per validation."""
    eval_every: int = 0
    """Steps between simulated rollouts (`rollout/success_rate`; keeps checkpoints/best); 0: never."""
    eval_episodes: int = 10
    """Episodes per rollout evaluation."""
    eval_envs: int = 1
    """Parallel envs for rollout evaluation."""
    eval_video: int = 0
    """Videos per rollout evaluation, logged to wandb when it is enabled."""
    eval_env_kwargs: str = "{}"
    """JSON overrides of the dataset env's kwargs for rollouts."""
    resume: bool = False
    """Continue from the newest complete checkpoint in `out`."""
    wandb: Literal["disabled", "online", "offline"] = "disabled"
    """Weights & Biases logging mode."""
    wandb_project: str = "ttm_policy"
    """Weights & Biases project."""
    threads: int | None = None
    """torch intra-op threads on CPU (None: torch's default)."""
    model: PolicyConfig = field(default_factory=cpu_model)
    """Policy architecture (obs_keys, image_size and core are filled from the data and --policy)."""

    def __post_init__(self):
        if isinstance(self.dataset, (str, Path)):  # TrainConfig(dataset=path): one file
            self.dataset = (Path(self.dataset),)
        elif self.dataset is not tyro.MISSING:
            self.dataset = tuple(Path(p) for p in self.dataset)
            if not self.dataset:
                raise ValueError("--dataset needs at least one file")
            dups = sorted({str(p) for p in self.dataset if self.dataset.count(p) > 1})
            if dups:
                raise ValueError(f"--dataset lists {dups} more than once: list each file once")
        if self.chunk < 0:
            raise ValueError(f"--chunk must be >= 0 (0: whole episodes), got {self.chunk}")
        for name in ("steps", "batch_size", "log_every", "save_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(
                f"--crop must be in (0, 1] (a fraction of the image side), got {self.crop}"
            )
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"--ema must be in (0, 1), e.g. 0.999, got {self.ema}")


CLI_HELP = """`ttm-train`: behaviour cloning of a policy on robomimic-format demonstrations.

With `--dataset X` alone it trains preset `cpu`, the recipe of docs/results.md (64-step
pieces of episodes with the memory carried between them, pixels and proprioception, a small
TTM sized for 2 CPU cores); `--preset gpu` starts from the paper-sized model instead
(train/presets.py). Every flag below overrides the preset's value, and the defaults shown are
the chosen preset's. `--policy NAME` chooses the temporal core, and the `--model.<core>.*`
group below is that core's settings only (`--policy lstm --help` shows the LSTM's)."""


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """ttm-train's command line -> TrainConfig: `--preset NAME` picks the defaults (train/presets.py),
    every other flag overrides them. A bad preset name exits 2 naming the presets."""
    from train.presets import preset

    try:
        name, rest = split_preset(sys.argv[1:] if argv is None else list(argv))
    except ValueError as e:
        print(f"ttm-train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    base = preset(name)
    core = chosen_policy(rest, base.policy)
    other_core_flag(rest, core)
    # The command line's view: the model group offers only the chosen core's settings.
    model_view = cli_view(core)
    view = dataclass(
        type(
            "TrainConfig",
            (TrainConfig,),
            {"__annotations__": {"model": model_view}, "model": field(default_factory=cpu_model)},
        )
    )
    default = view(**{**_fields_of(base), "model": model_view(**_fields_of(base.model))})
    cfg = tyro.cli(view, args=rest, default=default, description=CLI_HELP)
    return TrainConfig(**{**_fields_of(cfg), "model": plain(cfg.model)})


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}


def other_core_flag(argv: list[str], core: str) -> None:
    """Exit 2 with a clear line when `argv` sets another core's settings than `core`'s."""
    from ttm_policy.cores import CORES

    mine = CORES[core].config_field
    for a in argv:
        group = re.match(r"--model\.([a-z_]+)\.", a)
        if group and group[1] != mine and any(s.config_field == group[1] for s in CORES.values()):
            readers = ", ".join(n for n, s in CORES.items() if s.config_field == group[1])
            print(
                f"ttm-train: error: {a.split('=')[0]} sets the {group[1]} settings, which --policy "
                f"{core} does not read (they apply to --policy {readers})",
                file=sys.stderr,
            )
            raise SystemExit(2)


def chosen_policy(argv: list[str], default: str) -> str:
    """The core `--policy NAME` (or `--policy=NAME`) in `argv` names, else `default`; a name
    that is not a core is left for the parser to refuse."""
    from ttm_policy.cores import CORES

    name = default
    for i, a in enumerate(argv):
        if a == "--policy" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--policy="):
            name = a.split("=", 1)[1]
    return name if name in CORES else default

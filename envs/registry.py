"""The one task registry: short name -> `TaskSpec` (env class, scripted expert, recipe defaults).

Adding a task is one module (its env class following `envs/base.py`, and its expert) plus one
entry in `TASKS` below. Everything else reads this dict: `import envs` registers the gymnasium
id `ttm/<name>-v0` of every entry, `env.unwrapped.make_expert()` builds the entry's expert,
`envs.env_args` re-creates a robosuite task from the entry of its `env_name`, and the
quickstart and the results table take the entry's recipe defaults.

Classes are named by "module:attribute" strings, as gymnasium entry points are, so that reading
the registry imports neither robosuite nor MuJoCo (vector-env workers import `envs` first).
A robosuite task's name is its robosuite env name (`env_args["env_name"]`, the env class's
`ENV_NAME`). The Meta-World entries `MW-<task>` are generated from `METAWORLD_TASKS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Defaults for collecting and evaluating a task on 2 CPU cores (each can be overridden on
    the command line of the quickstart and the results table). Training is not here: every
    task trains with ttm-train's default recipe (train/presets.py)."""

    episodes: int = 100
    """Expert demonstrations to collect."""
    image_size: int = 64
    """Camera side in pixels (robomimic's image datasets use 84; 64 px renders and trains
    faster on CPU; docs/results.md measures the choice)."""
    cameras: tuple[str, ...] | None = ("agentview", "robot0_eye_in_hand")
    """Cameras to record; None: the env's own choice."""
    delay_steps: int | None = None
    """Memory tasks: held-still steps between the cue and the decision; None: the env's own."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its env and expert live, whether it is a memory task, its recipe."""

    env: str
    """The gymnasium env class as "module:Class" (the contract of `envs/base.py`)."""
    expert: str
    """Its scripted expert class as "module:Class", made as `Class(env, noise=, seed=)`."""
    cued: bool = False
    """A memory task: a class attribute `cues`, `reset(options={"cue": i})`, `delay_steps`."""
    recipe: Recipe = field(default_factory=Recipe)
    """Collection and training defaults of the quickstart and the results table."""


_ROBOSUITE = Recipe()  # 100 demonstrations, agentview and wrist cameras at 64 px
# The cued robosuite tasks: a 10-step delay after their 10-step cue.
_CUED_ROBOSUITE = Recipe(delay_steps=10)

# Short task name -> spec. Ids are `ttm/<name>-v0`.
_RS, _CUED = "envs.robosuite_tasks", "envs.cued_tasks"
TASKS: dict[str, TaskSpec] = {
    "Lift": TaskSpec(f"{_RS}:LiftEnv", "envs.experts:LiftExpert", recipe=_ROBOSUITE),
    "Stack": TaskSpec(f"{_RS}:StackEnv", "envs.experts:StackExpert", recipe=_ROBOSUITE),
    "PickPlaceCan": TaskSpec(f"{_RS}:PickPlaceCanEnv", "envs.experts:PickPlaceCanExpert", recipe=_ROBOSUITE),
    "NutAssemblySquare": TaskSpec(f"{_RS}:NutAssemblySquareEnv", "envs.experts:NutAssemblySquareExpert", recipe=_ROBOSUITE),
    "Door": TaskSpec(f"{_RS}:DoorEnv", "envs.experts:DoorExpert", recipe=_ROBOSUITE),
    "LiftCued": TaskSpec(f"{_CUED}:LiftCuedEnv", f"{_CUED}:LiftCuedExpert", cued=True, recipe=_CUED_ROBOSUITE),
    "PlaceCued": TaskSpec(f"{_CUED}:PlaceCuedEnv", f"{_CUED}:PlaceCuedExpert", cued=True, recipe=_CUED_ROBOSUITE),
    # Several cubes to touch in a cued order (4.6 bits at the defaults; its own delay is 10).
    "TouchSequenceCued": TaskSpec("envs.touch_sequence_cued:TouchSequenceCuedEnv", "envs.touch_sequence_cued:TouchSequenceCuedExpert", cued=True, recipe=_CUED_ROBOSUITE),
    # Plain MuJoCo, the CPU-friendly memory task: 200 demonstrations from its own camera at
    # 32 px with the env's own delay (10).
    "PointCue": TaskSpec("envs.point_cue:PointCueEnv", "envs.point_cue:PointCueExpert", cued=True,
                         recipe=Recipe(episodes=200, image_size=32, cameras=None)),
    # Plain MuJoCo, several items to remember in order (6.9 bits at the defaults), same recipe.
    "SequenceCue": TaskSpec("envs.sequence_cue:SequenceCueEnv", "envs.sequence_cue:SequenceCueExpert",
                            cued=True, recipe=Recipe(episodes=200, image_size=32, cameras=None)),
}  # fmt: skip

# Meta-World v3 (`envs/metaworld_tasks.py`, optional: scripts/setup.sh installs metaworld): the
# tasks of its MT50 benchmark, named as Meta-World names them without "-v3". Each is the entry
# `MW-<task>` (id `ttm/MW-<task>-v0`), its env class `metaworld_class_name(task)`, its expert
# Meta-World's own scripted policy. The MT10 benchmark's ten come first.
METAWORLD_MT10 = (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close",
    "button-press-topdown", "peg-insert-side", "window-open", "window-close",
)  # fmt: skip
METAWORLD_TASKS = METAWORLD_MT10 + (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown-wall",
    "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push",
    "dial-turn", "disassemble", "door-close", "door-lock", "door-unlock", "hand-insert",
    "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press",
    "handle-pull-side", "handle-pull", "lever-pull", "pick-place-wall", "pick-out-of-hole",
    "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side",
    "peg-unplug-side", "soccer", "stick-push", "stick-pull", "push-wall", "push-back",
    "reach-wall", "shelf-place", "sweep-into", "sweep",
)  # fmt: skip
# 100 demonstrations from the third-person `corner` camera (turned upright) and the camera
# behind the gripper, at 64 px, with the hand position and finger joints.
_METAWORLD = Recipe(cameras=("corner", "behindGripper"))


def metaworld_class_name(task: str) -> str:
    """`pick-place` -> `MWPickPlaceEnv`, the class `envs.metaworld_tasks` makes for the task."""
    return "MW" + "".join(part.capitalize() for part in task.split("-")) + "Env"


_MW = "envs.metaworld_tasks"
TASKS.update(
    (f"MW-{t}", TaskSpec(f"{_MW}:{metaworld_class_name(t)}", f"{_MW}:MetaWorldExpert", recipe=_METAWORLD))
    for t in METAWORLD_TASKS
)  # fmt: skip


def task_id(task: str) -> str:
    """`Lift` -> `ttm/Lift-v0`; raises ValueError naming the known tasks."""
    task_spec(task)
    return f"ttm/{task}-v0"


def task_spec(task: str) -> TaskSpec:
    """The entry of `task`; raises ValueError naming the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]


def load(entry: str) -> Any:
    """The attribute an entry "module:attribute" names (imports the module)."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_gym_ids() -> None:
    """Register `ttm/<name>-v0` with gymnasium for every task (idempotent)."""
    import gymnasium as gym

    for name, spec in TASKS.items():
        if f"ttm/{name}-v0" not in gym.registry:
            gym.register(id=f"ttm/{name}-v0", entry_point=spec.env, disable_env_checker=True)

"""Simulation tasks as gymnasium environments, scripted experts and demonstration collection.

`import envs` registers the gymnasium ids below. Every task env follows the contract in
`envs/base.py` (observation dict, 7-D OSC_POSE action in [-1, 1], `info["success"]`,
simulator state get/set for robomimic-style replay, `env_args` that re-create the env).
"""

import os

# Headless rendering: EGL works on CPU (Mesa llvmpipe) and on NVIDIA GPUs. Must be set
# before mujoco / robosuite are imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import gymnasium as gym  # noqa: E402

# Short task name -> entry point. Ids are `ttm/<Task>-v0`.
TASKS: dict[str, str] = {
    "Lift": "envs.robosuite_tasks:LiftEnv",
    "Stack": "envs.robosuite_tasks:StackEnv",
    "PickPlaceCan": "envs.robosuite_tasks:PickPlaceCanEnv",
    "NutAssemblySquare": "envs.robosuite_tasks:NutAssemblySquareEnv",
    "Door": "envs.robosuite_tasks:DoorEnv",
    "LiftCued": "envs.cued_tasks:LiftCuedEnv",
    "PlaceCued": "envs.cued_tasks:PlaceCuedEnv",
    "PointCue": "envs.point_cue:PointCueEnv",
}


def task_id(task: str) -> str:
    """`Lift` -> `ttm/Lift-v0`; raises ValueError naming the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return f"ttm/{task}-v0"


for _name, _entry in TASKS.items():
    if f"ttm/{_name}-v0" not in gym.registry:
        gym.register(id=f"ttm/{_name}-v0", entry_point=_entry, disable_env_checker=True)

"""Simulation tasks as gymnasium environments, scripted experts and demonstration collection.

`import envs` registers the gymnasium id `ttm/<Task>-v0` of every task in `envs.TASKS` (the one
task registry, `envs/registry.py`: env class, expert, recipe defaults). Every task env follows
the contract in `envs/base.py` (observation dict, action in [-1, 1] of the env's width,
`info["success"]`, simulator state get/set for robomimic-style replay, `env_args` that
re-create the env).

Importing the package loads neither MuJoCo nor robosuite and leaves the process environment
alone; rendering is set up (`envs.gl.setup`: MUJOCO_GL defaults to egl) by the modules that
make envs, before they import MuJoCo or robosuite, and by the console scripts.

Layers: `envs` imports nothing from `ttm_policy`, `train` or `eval`; it depends only on the
simulators (and gymnasium, numpy, h5py).
"""

from envs.registry import TASKS, Recipe, TaskSpec, register_gym_ids, task_id, task_spec

__all__ = ["TASKS", "Recipe", "TaskSpec", "task_id", "task_spec"]

register_gym_ids()

"""The contract every task environment in `envs/` follows.

Observations (robomimic names): `<camera>_image` uint8 (H, W, 3) upright, plus low-dim
float arrays such as `robot0_eef_pos` (3,), `robot0_eef_quat` (4,), `robot0_gripper_qpos` (2,)
and privileged `object` state for experts. Actions in [-1, 1]: 7-D OSC_POSE delta + gripper
(robosuite, the planar tasks) or 4-D xyz delta + gripper (Meta-World).
`step` returns `info["success"]` (bool) every step. `reset(seed=...)` is reproducible.

Beyond gymnasium's API, a task env offers what demonstration collection and replay need
(robomimic's `states` / `model_file` / `env_args`):
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    """A scripted expert using privileged simulator state."""

    def reset(self) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action for the current step: the env's width (7, or 4 for Meta-World), in
        [-1, 1], float32/float64."""
        ...


class TaskEnv(Protocol):
    """Methods a task env adds to `gymnasium.Env` (reachable through `env.unwrapped`).

    A memory task also has a class attribute `cues` (how many cue values there are) and takes
    `reset(options={"cue": i})`, which forces cue i without changing the scene the seed draws.
    """

    def get_sim_state(self) -> np.ndarray:
        """Flat simulator state (robomimic `states` row): enough to restore the scene."""
        ...

    def set_sim_state(self, state: np.ndarray) -> None:
        """Restore a state returned by `get_sim_state` (after a `reset`)."""
        ...

    def model_xml(self) -> str:
        """The MJCF of the current scene (robomimic `model_file`)."""
        ...

    def env_args(self) -> dict[str, Any]:
        """robomimic `env_args`: {env_name, env_version, type, env_kwargs}; `envs.make_from_env_args`
        turns it back into an equal env."""
        ...

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> Expert:
        """A scripted expert for this env, with Gaussian action noise of std `noise`."""
        ...

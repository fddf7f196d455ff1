"""Re-create an environment from robomimic-style `env_args` (stored in every dataset).

`type` follows robomimic's EnvType: 1 = robosuite, 2 = gym. Our robosuite tasks (and
datasets made by robomimic's own tools) are type 1; pure-MuJoCo tasks such as PointCue are
type 2 with a gymnasium id as `env_name`.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym

import envs  # noqa: F401  (registers the ttm/* ids)

ROBOSUITE_TYPE = 1
GYM_TYPE = 2


def parse_env_args(env_args: str | dict[str, Any]) -> dict[str, Any]:
    """Accept the JSON string stored in `data.attrs["env_args"]` or an already-parsed dict."""
    if isinstance(env_args, bytes):
        env_args = env_args.decode()
    if isinstance(env_args, str):
        try:
            env_args = json.loads(env_args)
        except json.JSONDecodeError as e:
            raise ValueError(f"env_args is not valid JSON: {e}") from e
    for key in ("env_name", "type", "env_kwargs"):
        if key not in env_args:
            raise ValueError(f"env_args lacks key {key!r}; got keys {sorted(env_args)}")
    return env_args


def make_from_env_args(env_args: str | dict[str, Any], **overrides: Any) -> gym.Env:
    """Build the env that `env_args` describes; `overrides` replace entries of `env_kwargs`.
    A new `cue_steps` / `delay_steps` without a new episode limit (`max_steps`, `horizon`)
    gets the task's default limit for that delay, not the one stored for the old delay."""
    args = parse_env_args(env_args)
    if args["type"] == GYM_TYPE:
        kwargs = dict(args["env_kwargs"])
        if {"cue_steps", "delay_steps"} & set(overrides) and "max_steps" not in overrides:
            kwargs.pop("max_steps", None)  # stored for the stored delay: the task's default
        return gym.make(args["env_name"], **{**kwargs, **overrides})
    if args["type"] == ROBOSUITE_TYPE:
        from envs.robosuite_tasks import make_from_robosuite_env_args

        return make_from_robosuite_env_args(args, **overrides)
    raise ValueError(
        f"env_args type {args['type']!r} is not supported; expected {ROBOSUITE_TYPE} "
        f"(robosuite) or {GYM_TYPE} (gym)"
    )


def make_on_egl_device(
    egl_device: int | None, env_args: str | dict[str, Any], overrides: dict[str, Any]
) -> gym.Env:
    """`make_from_env_args` for a vector-env worker: picks the EGL device (one GPU per worker
    on multi-GPU machines) before the renderer exists. Importing this module loads no torch,
    so spawned workers start quickly."""
    if egl_device is not None:
        import os

        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl_device)
    return make_from_env_args(env_args, **overrides)

"""What the plain-MuJoCo memory tasks share (`envs/point_cue.py`, `envs/sequence_cue.py`).

A point mass moves on a 1 m x 1 m plane among flat goal pads, seen by one top-down camera
(`agentview`). The pads look identical (grey) except during the first `cue_steps` steps, when
the task lights one of them red (`lit_pad`). For the cue and a further `delay_steps` the point
is held still (actions are ignored); then dims 0 and 1 of the 7-D action are its velocity
command (x, y), 1.0 = MAX_SPEED = 1 m/s = 5 cm per control step at 20 Hz. After every step the
point within GOAL_RADIUS of a pad centre has reached that pad; what that means is the task's
(`_outcome`), and `max_steps` truncates.

`PlanarCueEnv` is the gymnasium env of that scene: physics stepping and holding, rendering,
observations, sim state, env_args and the option checks. A task subclass sets `TASK`, `MODEL`
and `TASK_STATE`, checks its own constructor arguments, writes its pads into the scene XML and
implements the hooks `_draw_start`, `_forced_cue`, `lit_pad`, `_outcome`, `_task_state`,
`_set_task_state` and `_task_kwargs`; its scripted expert subclasses `PlanarExpert`.
"""

from __future__ import annotations

import atexit
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from envs import gl, registry

gl.setup()  # before mujoco is imported: it picks its GL backend then

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

CAMERAS = ("agentview",)  # the cameras these envs can render
GOAL_RADIUS = 0.05  # m; the point within this distance of a pad centre has reached it
CONTROL_DT = 0.05  # s per env step (20 Hz, like robosuite)
PHYSICS_DT = 0.005  # s per MuJoCo step
MAX_SPEED = 1.0  # m/s for an action of 1.0 (5 cm per env step)
PAD_RGBA = np.array([0.8, 0.8, 0.8, 1.0], dtype=np.float32)  # every pad, outside the cue
CUE_RGBA = np.array([0.9, 0.1, 0.1, 1.0], dtype=np.float32)  # the lit pad during the cue
POINT_Z = 0.04  # m; height of the point's centre (it rests on the floor), constant


def scene_xml(model: str, pads: str, image_size: int) -> str:
    """The MJCF of the scene; `pads` is the task's pad geoms (`pad0`, `pad1`, ...) as XML lines."""
    # Rendering cost under Mesa llvmpipe (48x48, measured): a `plane` floor is drawn as a grid of
    # small quads (2.2 ms/frame); a thin box floor, no shadow map, no multisampling and coarse
    # spheres/cylinders (numslices/numstacks) bring it to ~0.4 ms with the same picture.
    off = max(image_size, 64)
    return f"""
<mujoco model="{model}">
  <option timestep="{PHYSICS_DT}" gravity="0 0 0" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="8" numstacks="4"/>
    <global offwidth="{off}" offheight="{off}"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <worldbody>
    <geom name="floor" type="box" size="0.5 0.5 0.001" pos="0 0 -0.001" rgba="0.25 0.25 0.25 1"
          contype="0" conaffinity="0"/>
{pads}
    <camera name="agentview" pos="0 0 1.2" fovy="45"/>
    <body name="point" pos="0 0 {POINT_Z}">
      <joint name="x" type="slide" axis="1 0 0" range="-0.45 0.45" limited="true"/>
      <joint name="y" type="slide" axis="0 1 0" range="-0.45 0.45" limited="true"/>
      <geom name="point" type="sphere" size="0.04" mass="1" rgba="0.2 0.4 1 1"
            contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <!-- velocity servos: force = kv * (ctrl * MAX_SPEED - qvel); time constant 1/kv = 20 ms -->
    <velocity name="vx" joint="x" kv="50" ctrlrange="-{MAX_SPEED} {MAX_SPEED}"/>
    <velocity name="vy" joint="y" kv="50" ctrlrange="-{MAX_SPEED} {MAX_SPEED}"/>
  </actuator>
</mujoco>
"""


class Renderer(mujoco.Renderer):
    """`mujoco.Renderer` whose `close()` (and collection) frees in its own GL context
    (`envs/gl.py`): mujoco's frees in whichever context is current, e.g. a robosuite env's."""

    def close(self) -> None:
        gl_ctx = self.__dict__.get("_gl_context")
        con = self.__dict__.get("_mjr_context")
        self._gl_context = None
        self._mjr_context = None
        if gl_ctx is not None or con is not None:
            gl.free_render_context(gl_ctx, con)


def _package_version() -> str:
    try:
        return metadata.version("ttm_policy")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _close_if_alive(ref: weakref.ref) -> None:
    env = ref()
    if env is not None:
        env.close()


class PlanarCueEnv(gym.Env, ABC):
    """The point-mass scene as a gymnasium env; a task subclasses it (see the module docstring).

    State: `_t` env steps taken in this episode, `_cue` the episode's cue (an index).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / CONTROL_DT)}
    TASK: str  # task name, e.g. "PointCue": error messages, env_args, the registry's expert
    MODEL: str  # the MJCF model name
    TASK_STATE: tuple[str, ...]  # names of the get_sim_state entries after time, qpos, qvel
    cues: int  # cue values; reset(options={"cue": i}) forces one (see envs/base.py)
    # After mj_step the positions derived from qpos (xpos, which the image draws) are one
    # substep behind qpos; True recomputes them so that the image shows the state get_sim_state
    # returns and set_sim_state (which ends in mj_forward) restores the same image mid-episode.
    forward_after_step = True
    reject_unknown_options = True  # reset(options=...) raises on keys other than "cue"

    def __init__(
        self,
        *,
        goals: np.ndarray,  # (n, 2) pad centres (x, y), m; pad k is the geom `pad{k}`
        pads: str,  # the pad geoms as XML lines (`scene_xml`)
        cue_steps: int,
        delay_steps: int,
        max_steps: int,
        image_size: int,
        cameras: Sequence[str],
        render_images: bool,
        render_mode: str | None,
    ):
        if image_size < 1:
            raise ValueError(f"{self.TASK} image_size must be positive; got {image_size}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {', '.join(map(repr, unknown))}; {self.TASK} has: "
                f"{', '.join(CAMERAS)}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.cue_steps, self.delay_steps, self.max_steps = cue_steps, delay_steps, max_steps
        self.image_size, self.cameras = image_size, tuple(cameras)
        # cameras=() turns images off, as for the robosuite tasks.
        self.render_images, self.render_mode = render_images and bool(self.cameras), render_mode
        self.goals = goals

        self._xml = scene_xml(self.MODEL, pads, image_size)
        self.model = mujoco.MjModel.from_xml_string(self._xml)
        self.data = mujoco.MjData(self.model)
        self._n_substeps = round(CONTROL_DT / PHYSICS_DT)
        self._pad_ids = [self.model.geom(f"pad{k}").id for k in range(len(goals))]
        self._renderer: Renderer | None = None  # made on first use, then reused
        self._t = 0  # env steps taken in this episode
        self._cue = 0  # the episode's cue

        spaces = {"robot0_eef_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)}
        if self.render_images:
            for cam in self.cameras:
                shape = (image_size, image_size, 3)
                spaces[f"{cam}_image"] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    # --- the task's hooks ----------------------------------------------------------------------

    @abstractmethod
    def _draw_start(self) -> np.ndarray:
        """(2,) start position (x, y), m, drawn from `self.np_random`."""

    @abstractmethod
    def _forced_cue(self, value: Any) -> int:
        """The cue that reset(options={"cue": value}) forces; raises ValueError if invalid."""

    @abstractmethod
    def lit_pad(self) -> int:
        """The pad the image shows lit now, or -1."""

    @abstractmethod
    def _outcome(self, reached: int) -> tuple[bool, bool, dict[str, Any]]:
        """(success, terminated, info) after a step that left the point in pad `reached` (-1:
        none, or held)."""

    @abstractmethod
    def _task_state(self) -> list[int]:
        """The values of TASK_STATE, for get_sim_state."""

    @abstractmethod
    def _set_task_state(self, values: np.ndarray) -> None:
        """Restores the values of TASK_STATE (set_sim_state)."""

    @abstractmethod
    def _task_kwargs(self) -> dict[str, Any]:
        """The task's own constructor arguments, for env_args (before delay_steps, ...)."""

    # --- gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.reject_unknown_options:
            unknown = set(options or {}) - {"cue"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; expected only 'cue'")
        mujoco.mj_resetData(self.model, self.data)
        # Draw the start first and the cue always, so a forced cue leaves the scene unchanged.
        self.data.qpos[:] = self._draw_start()
        cue = int(self.np_random.integers(self.cues))
        if options and "cue" in options:
            cue = self._forced_cue(options["cue"])
        self._cue, self._t = cue, 0
        mujoco.mj_forward(self.model, self.data)
        return self.get_obs(), {"success": False, "cue": self._cue}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"{self.TASK} action must have shape (7,); got {action.shape}")
        held = self._t < self.cue_steps + self.delay_steps
        # (2,) velocity command; ignored (zero) while the point is held still
        self.data.ctrl[:] = 0.0 if held else np.clip(action[:2], -1.0, 1.0) * MAX_SPEED
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)
        if self.forward_after_step:
            mujoco.mj_forward(self.model, self.data)
        self._t += 1

        dist = np.linalg.norm(self.goals - self.data.qpos[:2], axis=1)  # (n,) to each pad
        reached = int(np.argmin(dist)) if dist.min() < GOAL_RADIUS and not held else -1
        success, terminated, info = self._outcome(reached)
        truncated = not terminated and self._t >= self.max_steps
        return self.get_obs(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        return self._render() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        """Free the renderer and its GL context (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --- observations --------------------------------------------------------------------------

    def get_obs(self) -> dict[str, np.ndarray]:
        """The observation of the current state (what `reset`/`step` return)."""
        pos = np.array([self.data.qpos[0], self.data.qpos[1], POINT_Z])  # (3,) m
        obs = {"robot0_eef_pos": pos}
        if self.render_images:
            for cam in self.cameras:
                obs[f"{cam}_image"] = self._render(cam)
        return obs

    def _render(self, camera: str = "agentview") -> np.ndarray:
        """(S, S, 3) uint8 frame; the pad `lit_pad()` names is red, the others grey."""
        lit = self.lit_pad()
        for k, gid in enumerate(self._pad_ids):
            self.model.geom_rgba[gid] = CUE_RGBA if k == lit else PAD_RGBA
        if self._renderer is None:
            gl.check_mujoco_backend()
            # Renderer: frees its GL objects in its own context (mujoco.Renderer frees them in
            # whichever is current, e.g. a robosuite env's), also when garbage-collected.
            self._renderer = Renderer(self.model, self.image_size, self.image_size)
            # Free the GL context before interpreter teardown unloads EGL (else noisy errors).
            atexit.register(_close_if_alive, weakref.ref(self))
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()  # a fresh array, upright (mujoco.Renderer flips rows)

    # --- envs/base.py contract -----------------------------------------------------------------

    def get_sim_state(self) -> np.ndarray:
        """float64: time, qpos x, y, qvel x, y, then the task's TASK_STATE (the step counter t,
        the cue, ...): replay needs them, they decide what the image shows and whether actions
        are ignored."""
        d = self.data
        return np.concatenate([[d.time], d.qpos, d.qvel, self._task_state()]).astype(np.float64)

    def set_sim_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        size = 5 + len(self.TASK_STATE)
        if state.shape != (size,):
            raise ValueError(
                f"{self.TASK} state must have shape ({size},) = time, qpos (2), qvel (2), "
                f"{', '.join(self.TASK_STATE)}; got {state.shape}"
            )
        self.data.time = state[0]
        self.data.qpos[:] = state[1:3]
        self.data.qvel[:] = state[3:5]
        self._set_task_state(state[5:])
        mujoco.mj_forward(self.model, self.data)

    def model_xml(self) -> str:
        return self._xml

    def env_args(self) -> dict[str, Any]:
        kwargs = dict(
            **self._task_kwargs(),
            delay_steps=self.delay_steps,
            max_steps=self.max_steps,
            image_size=self.image_size,
            cameras=list(self.cameras),
            render_images=self.render_images,
        )
        return {
            "env_name": f"ttm/{self.TASK}-v0",
            "env_version": _package_version(),
            "type": 2,  # robomimic EnvType.GYM_TYPE
            "env_kwargs": kwargs,
        }

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> Any:
        """The expert of the task registry's entry (`envs/registry.py`)."""
        return registry.load(registry.task_spec(self.TASK).expert)(self, noise=noise, seed=seed)


class PlanarExpert:
    """What the tasks' scripted experts share: a seeded noise source and the steering law. A
    task's expert reads the privileged state from `self.env` and calls `_steer` in `act`."""

    def __init__(self, env: PlanarCueEnv, *, noise: float = 0.0, seed: int | None = None):
        self.env, self.noise = env, noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to reset: the steering reads the env's state at every step."""

    def _steer(self, pos: np.ndarray, aim: np.ndarray) -> np.ndarray:
        """(7,) action from `pos` towards `aim` ((2,) m each): the speed command that would
        cover 80% of the remaining distance in one step, capped, plus Gaussian noise of std
        `noise`, in dims 0 and 1; dims 2..6 are always zero."""
        v = 0.8 * (aim - pos) / (MAX_SPEED * CONTROL_DT)
        v /= max(1.0, float(np.linalg.norm(v)))
        action = np.zeros(7)
        action[:2] = np.clip(v + self.noise * self.rng.standard_normal(2), -1.0, 1.0)
        return action

"""robosuite 1.5 tasks as gymnasium environments (Panda, OSC_POSE arm, 20 Hz).

One wrapper, `RobosuiteTask`, holds a real robosuite env (composition, not inheritance) and
turns it into the contract of `envs/base.py`. Each task is a two-line subclass naming the
robosuite env and its horizon; its expert and recipe are its entry in `envs/registry.py`.

Observations (all float64 except images, as robosuite / robomimic store them):
    <camera>_image        uint8 (H, W, 3), upright (robosuite renders bottom-up; we flip rows)
    robot0_eef_pos        (3,)  metres, world frame
    robot0_eef_quat       (4,)  xyzw
    robot0_gripper_qpos   (2,)  finger joint positions, metres
    object                (K,)  robosuite's `object-state` (privileged, for experts)
Action: (7,) in [-1, 1]: OSC_POSE delta position (x 0.05 m), delta axis-angle (x 0.5 rad),
gripper (-1 open, +1 close).

Seeding: robosuite 1.5 draws every random choice of a reset (placement samplers, robot init
noise, object choice) from the one generator `env.rng`, shared by reference. `reset(seed=s)`
overwrites that generator's state in place with `default_rng(s)`'s, so every holder of the
reference is reseeded. We keep robosuite's `hard_reset=False` (a hard reset rebuilds the whole
MuJoCo model and render context each episode: ~0.4 s here, and loses our render settings);
the few quantities robosuite samples only at model build (e.g. Lift's cube size) come from the
construction seed `env_kwargs["seed"]` (default 0), stored in `env_args`.

Rendering: `render_quality="fast"` (default) turns off the shadow map, offscreen multisampling
and planar reflections before the render context is made, and renders only the cameras asked
for; `"robosuite"` keeps robosuite's settings. `python -m envs.render_bench` measures each
(84x84 on Mesa llvmpipe: ~100 ms -> ~35 ms per frame). What remains is vertex work on the
~168k triangles of the Panda and pedestal visual meshes (hiding them renders in ~1 ms).

GL contexts: several envs (and PointCue renderers) may live in one process, each with its own
EGL context. The wrapper makes its context current before anything renders, and every render
context is freed inside its own GL context, leaving the caller's current (`RenderContext`,
`envs/gl.py`), whether by `close()` or later by the garbage collector (unclosed envs).
robosuite makes the contexts of our envs as `RenderContext`s only while our code calls it
(`_our_render_contexts`): its class is not replaced process-wide.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from envs import experts, gl, registry

gl.setup()  # before mujoco / robosuite are imported: they pick their GL backend then

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import robosuite  # noqa: E402
import robosuite.environments.base  # noqa: E402
from robosuite.controllers import load_composite_controller_config  # noqa: E402
from robosuite.utils.binding_utils import MjRenderContextOffscreen  # noqa: E402

DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")
LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
RENDER_QUALITIES = ("fast", "robosuite")
# Key inside env_args["env_kwargs"] holding this wrapper's own settings (not robosuite kwargs).
WRAPPER_KEY = "ttm_wrapper"
# Wrapper settings that may be given as overrides to `make_from_robosuite_env_args`.
WRAPPER_ARGS = ("cameras", "image_size", "horizon", "render_quality", "terminate_on_success")


class RenderContext(MjRenderContextOffscreen):
    """robosuite's offscreen render context, freed inside its own GL context (`envs/gl.py`).

    robosuite's `MjRenderContext.__del__` frees the `mjrContext` in whatever GL context is
    current and then unbinds it (`eglReleaseThread`). Its sim and render context reference each
    other, so an env that is never closed, or one whose constructor raised after the context
    was made (e.g. an unknown camera name), is freed by the cyclic garbage collector at an
    arbitrary later moment: that deleted the framebuffer/textures of whichever env was rendering
    then (same GL names in every context) and left it without a current context. `free()` is
    idempotent; `close()` calls it explicitly and `__del__` is then a no-op."""

    def free(self) -> None:
        gl_ctx, con = self.__dict__.pop("gl_ctx", None), self.__dict__.pop("con", None)
        if gl_ctx is not None:
            gl.free_render_context(gl_ctx, con)

    def update_offscreen_size(self, width: int, height: int) -> None:
        self.gl_ctx.make_current()  # robosuite frees and remakes `con` here
        super().update_offscreen_size(width, height)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter teardown: EGL may be unloaded
            self.free()


@contextlib.contextmanager
def _our_render_contexts():
    """robosuite makes its render context (in its constructor, and when a model is reloaded)
    from the module global `robosuite.environments.base.MjRenderContextOffscreen`: while our
    code makes or reloads an env, that global is `RenderContext`, so a context that robosuite
    makes for us frees itself safely, even one of a constructor that raised and is left to the
    garbage collector. Put back afterwards: robosuite envs made elsewhere keep robosuite's."""
    base = robosuite.environments.base
    saved, base.MjRenderContextOffscreen = base.MjRenderContextOffscreen, RenderContext
    try:
        yield
    finally:
        base.MjRenderContextOffscreen = saved


def default_controller_config() -> dict[str, Any]:
    """robosuite 1.5's BASIC composite controller: OSC_POSE arm + gripper (as robomimic stores it).

    The BASIC file also configures body parts a Panda does not have (left arm, torso, head,
    base, legs), about which robosuite logs five warnings per env; only the arm is kept."""
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    cfg["body_parts"] = {k: v for k, v in cfg["body_parts"].items() if k == "right"}
    return cfg


def remap_asset_paths(xml: str) -> str:
    """Point mesh/texture `file=` paths of another machine's robosuite install at ours.

    `/home/demo/robosuite/robosuite/models/assets/x.stl` -> `<local robosuite>/models/assets/x.stl`
    (everything after the last `/robosuite/` component is kept).
    """
    local = os.path.dirname(robosuite.__file__)

    def repl(m: re.Match) -> str:
        path = m.group(2)
        parts = path.split("/")
        if "robosuite" not in parts:
            return m.group(0)
        i = len(parts) - 1 - parts[::-1].index("robosuite")
        return f'{m.group(1)}"{"/".join([local, *parts[i + 1 :]])}"'

    return re.sub(r'(\bfile=)"([^"]*)"', repl, xml)


def load_model_xml(env: gym.Env, xml: str) -> None:
    """Rebuild the scene of `env` from an MJCF string (robomimic `model_file`), like robomimic's
    `reset_to({"model": xml})`: asset paths are remapped to the local robosuite, the sim is
    rebuilt and reset. Follow with `set_sim_state(states[0])`."""
    task: RobosuiteTask = env.unwrapped
    ctx = task.suite.sim._render_context_offscreen
    if ctx is not None:
        ctx.free()  # robosuite drops the old sim (and context) inside: free it now, safely
    with _our_render_contexts():
        task.suite.reset_from_xml_string(remap_asset_paths(xml))
    task.suite.sim.reset()
    task.suite.sim.forward()
    task._configure_renderer()
    task._t = 0


class RobosuiteTask(gym.Env):
    """A robosuite env as a gymnasium env following `envs/base.py`.

    Subclasses set `ENV_NAME` (a registered robosuite env, also the task's name in
    `envs/registry.py`, which names its expert) and `DEFAULT_HORIZON`.
    """

    ENV_NAME: ClassVar[str] = ""
    DEFAULT_HORIZON: ClassVar[int] = 200
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        *,
        cameras: Sequence[str] = DEFAULT_CAMERAS,  # () turns images (and the renderer) off
        image_size: int | Sequence[int] = 84,  # side, or (height, width)
        horizon: int | None = None,  # steps before truncation; None = task default
        render_quality: str = "fast",  # "fast" (no shadows/MSAA/reflections) or "robosuite"
        terminate_on_success: bool = True,  # end the episode at the first successful step
        render_mode: str | None = None,
        suite_kwargs: dict[str, Any] | None = None,  # further robosuite kwargs (env_args)
    ):
        if not self.ENV_NAME:
            raise TypeError("RobosuiteTask is abstract: use a task subclass such as LiftEnv")
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(
                f"render_quality={render_quality!r}; expected one of {RENDER_QUALITIES}"
            )
        if isinstance(cameras, str):
            cameras = (cameras,)
        self.cameras = tuple(cameras)
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(hw) != 2 or min(hw) <= 0:
            raise ValueError(
                f"image_size={image_size!r}; expected a positive int or (height, width)"
            )
        self.image_hw = (int(hw[0]), int(hw[1]))
        self.horizon = int(horizon or self.DEFAULT_HORIZON)
        self.render_quality = render_quality
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode

        kw: dict[str, Any] = {
            "robots": "Panda",
            "controller_configs": default_controller_config(),
            "control_freq": 20,
            "reward_shaping": False,
            "seed": 0,
            **copy.deepcopy(suite_kwargs or {}),
        }
        # Settings this wrapper relies on; they replace whatever the caller passed.
        use_images = len(self.cameras) > 0
        kw.update(
            has_renderer=False,
            has_offscreen_renderer=use_images,
            use_camera_obs=use_images,
            use_object_obs=True,
            camera_names=list(self.cameras) if use_images else ["agentview"],
            camera_heights=self.image_hw[0],
            camera_widths=self.image_hw[1],
            camera_depths=False,
            ignore_done=True,  # the wrapper owns the horizon
            hard_reset=False,  # see module docstring
        )
        self.suite_kwargs = kw
        try:
            with _our_render_contexts():
                self.suite = robosuite.make(self.ENV_NAME, **kw)
        except (AssertionError, ValueError) as e:
            bad = [c for c in self.cameras if f"{c}_image" in str(e)]
            if bad:  # robosuite only says "Current sensor for observable x_image is invalid"
                raise ValueError(
                    f"{self.ENV_NAME} has no camera {bad[0]!r}; robosuite table scenes have "
                    "agentview, robot0_eye_in_hand, frontview, birdview, sideview, robot0_robotview"
                ) from e
            raise
        self._configure_renderer()
        self._t = 0
        self._scene_seed: int | None = None

        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        if self.suite.action_dim != 7:
            raise ValueError(
                f"{self.ENV_NAME}: robosuite action_dim is {self.suite.action_dim}, expected 7 "
                "(single Panda arm with OSC_POSE + gripper); check controller_configs"
            )
        obs = self._observe(self.suite._get_observations(force_update=True))
        spaces = {}
        for k, v in obs.items():
            if v.dtype == np.uint8:
                spaces[k] = gym.spaces.Box(0, 255, shape=v.shape, dtype=np.uint8)
            else:
                spaces[k] = gym.spaces.Box(-np.inf, np.inf, shape=v.shape, dtype=v.dtype)
        self.observation_space = gym.spaces.Dict(spaces)

    # ----------------------------------------------------------------------------------- render
    def _configure_renderer(self) -> None:
        """Apply `render_quality` to the current sim: quality settings must be in the model before
        the render context is created, so we recreate the context once."""
        sim = self.suite.sim
        if not self.cameras or self.render_quality == "robosuite":
            return
        vis = sim.model._model.vis
        vis.quality.shadowsize = 0  # no shadow map (4096^2 depth pass per frame)
        vis.quality.offsamples = 0  # no multisampled offscreen buffer
        h, w = self.image_hw
        vis.global_.offwidth, vis.global_.offheight = max(w, 1), max(h, 1)
        old = sim._render_context_offscreen
        sim._render_context_offscreen = None
        if old is not None:
            old.free()  # in its own GL context (RenderContext)
        ctx = RenderContext(sim, device_id=self.suite.render_gpu_device_id)
        ctx.vopt.geomgroup[0] = 1 if self.suite.render_collision_mesh else 0
        ctx.vopt.geomgroup[1] = 1 if self.suite.render_visual_mesh else 0
        # Planar reflections re-render the scene once more per reflective geom (table, floor;
        # reflectance 0.01-0.1: barely visible at 84x84).
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def _make_gl_current(self) -> None:
        """robosuite never makes its EGL context current before rendering: with several envs
        (or PointCue renderers) in one process, another one's context may be current. Call
        before anything that renders (reset, step, get_obs, render, model reload)."""
        ctx = self.suite.sim._render_context_offscreen if self.cameras else None
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def render(self) -> np.ndarray | None:
        """rgb_array: the first camera (or agentview) at `image_size`, upright."""
        if self.render_mode != "rgb_array":
            return None
        if not self.cameras:
            raise RuntimeError("render() needs a renderer; create the env with cameras=(...)")
        h, w = self.image_hw
        self._make_gl_current()
        img = self.suite.sim.render(camera_name=self.cameras[0], width=w, height=h)
        return np.ascontiguousarray(img[::-1])

    # ------------------------------------------------------------------------------ gym API
    def _observe(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            obs[f"{cam}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1])  # upright
        for k in LOW_DIM_KEYS:
            obs[k] = np.asarray(raw[k], dtype=np.float64)
        obs["object"] = np.asarray(raw["object-state"], dtype=np.float64)
        return obs

    def get_obs(self) -> dict[str, np.ndarray]:
        """Observation of the current sim state (e.g. after `set_sim_state`).

        robosuite samples observables on a timer advanced by every update, forced or not, so
        a forced read would shift when the next step renders its images (by one 2 ms
        substep) and break exact replay; we restore the timers afterwards."""
        timers = [
            (o, o._time_since_last_sample, o._sampled) for o in self.suite._observables.values()
        ]
        self._make_gl_current()
        raw = self.suite._get_observations(force_update=True)
        for o, since, sampled in timers:
            o._time_since_last_sample, o._sampled = since, sampled
        return self._observe(raw)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:  # continue the stream started by the last seeded reset
            seed = int(self.np_random.integers(2**31 - 1))
        self._scene_seed = int(seed)
        # Reseed robosuite's shared generator in place (placement samplers hold references).
        self.suite.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        if hasattr(self.suite, "configure_episode"):  # task-specific options (cued tasks)
            self.suite.configure_episode(seed=self._scene_seed, options=options or {})
        elif options:
            raise ValueError(f"{self.ENV_NAME} takes no reset options; got {sorted(options)}")
        self._t = 0
        self._make_gl_current()
        raw = self.suite.reset()
        return self._observe(raw), {"success": bool(self.suite._check_success())}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ValueError(f"action has shape {a.shape}; expected (7,) OSC_POSE delta + gripper")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        self._make_gl_current()
        raw, reward, _, _ = self.suite.step(np.clip(a, -1.0, 1.0))
        self._t += 1
        success = bool(self.suite._check_success())
        failure = bool(getattr(self.suite, "_check_failure", lambda: False)())
        terminated = failure or (success and self.terminate_on_success)
        truncated = self._t >= self.horizon and not terminated
        info = {"success": success, "failure": failure}
        return self._observe(raw), float(reward), terminated, truncated, info

    def close(self):
        """Free the render context (in its own GL context) and the sim; idempotent."""
        if getattr(self, "suite", None) is not None:
            sim = getattr(self.suite, "sim", None)
            ctx = getattr(sim, "_render_context_offscreen", None)
            if ctx is not None:
                ctx.free()  # now, not whenever the garbage collector gets to it
            self.suite.close()
            self.suite = None

    # --------------------------------------------------------------- envs/base.py contract
    def get_sim_state(self) -> np.ndarray:
        """robomimic `states` row: [time, qpos (nq), qvel (nv)] (+ task extras, see cued tasks)."""
        flat = self.suite.sim.get_state().flatten()
        if hasattr(self.suite, "extra_state"):
            flat = np.concatenate([flat, self.suite.extra_state()])
        return flat

    def set_sim_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        model = self.suite.sim.model
        n = 1 + model.nq + model.nv
        n_extra = len(self.suite.extra_state()) if hasattr(self.suite, "extra_state") else 0
        if state.ndim != 1 or state.shape[0] not in (n, n + n_extra):
            raise ValueError(
                f"{self.ENV_NAME}: sim state has shape {state.shape}; expected ({n},) = 1 + nq "
                f"{model.nq} + nv {model.nv}" + (f" (+{n_extra} task extras)" if n_extra else "")
            )
        self.suite.sim.set_state_from_flattened(state[:n])
        self.suite.sim.forward()
        # Keep the step counters consistent with the restored time (cued tasks schedule on it).
        step = int(round(state[0] / self.suite.control_timestep))
        self.suite.timestep, self.suite.cur_time, self._t = step, float(state[0]), step
        if n_extra and state.shape[0] == n + n_extra:
            self.suite.set_extra_state(state[n:])
        self.suite.update_state()

    def model_xml(self) -> str:
        return self.suite.sim.model.get_xml()

    def env_args(self) -> dict[str, Any]:
        return {
            "env_name": self.ENV_NAME,
            "env_version": robosuite.__version__,
            "type": 1,
            "env_kwargs": {
                **copy.deepcopy(self.suite_kwargs),
                WRAPPER_KEY: {
                    "cameras": list(self.cameras),
                    "image_size": list(self.image_hw),
                    "horizon": self.horizon,
                    "render_quality": self.render_quality,
                    "terminate_on_success": self.terminate_on_success,
                },
            },
        }

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> experts.Expert:
        """The expert of this task's entry in `envs/registry.py`."""
        expert = registry.load(registry.task_spec(self.ENV_NAME).expert)
        return expert(self, noise=noise, seed=seed)


class LiftEnv(RobosuiteTask):
    ENV_NAME = "Lift"
    DEFAULT_HORIZON = 150


class StackEnv(RobosuiteTask):
    ENV_NAME = "Stack"
    DEFAULT_HORIZON = 250


class PickPlaceCanEnv(RobosuiteTask):
    ENV_NAME = "PickPlaceCan"  # robosuite's PickPlace with single_object_mode=2, object "can"
    DEFAULT_HORIZON = 300


class NutAssemblySquareEnv(RobosuiteTask):
    ENV_NAME = "NutAssemblySquare"
    DEFAULT_HORIZON = 300


class DoorEnv(RobosuiteTask):
    ENV_NAME = "Door"
    DEFAULT_HORIZON = 300


def robosuite_task_class(name: str) -> type[RobosuiteTask]:
    """The env class of the registered robosuite task `name` (its robosuite env name); loading
    it imports its module, which registers its robosuite env (e.g. the cued tasks)."""
    spec = registry.TASKS.get(name)
    cls = registry.load(spec.env) if spec is not None else None
    if not (isinstance(cls, type) and issubclass(cls, RobosuiteTask)):
        known = [
            n for n, t in registry.TASKS.items() if issubclass(registry.load(t.env), RobosuiteTask)
        ]
        raise ValueError(f"env_args env_name {name!r} is not a task here; known: {sorted(known)}")
    return cls


def make_from_robosuite_env_args(args: dict[str, Any], **overrides: Any) -> gym.Env:
    """Build the env of robomimic-style `env_args` (type 1), ours or robomimic's own.

    `env_kwargs` are robosuite kwargs plus, for envs made here, `ttm_wrapper` (our settings).
    robomimic's camera kwargs (`camera_names`, `camera_heights`, `camera_widths`,
    `use_camera_obs`) become `cameras` / `image_size`. `overrides` may name wrapper settings
    (`cameras`, `image_size`, `horizon`, `render_quality`, `terminate_on_success`) or robosuite
    kwargs. Overriding `cue_steps` or `delay_steps` without `horizon` drops the stored horizon,
    so the task's default for the new delay applies (the episode grows with the delay).

    Rendering follows the record: our collections store `render_quality` (what their frames
    were rendered with); `env_args` without our settings (robomimic's own datasets) render
    with robosuite's quality, as their frames were, unless `overrides` say otherwise.
    """
    cls = robosuite_task_class(args["env_name"])
    kw = copy.deepcopy(dict(args["env_kwargs"]))
    ours = WRAPPER_KEY in kw
    wrapper = dict(kw.pop(WRAPPER_KEY, {}) or {})
    if not ours:
        # A dataset made elsewhere (robomimic's tools) records no render settings: its frames
        # were rendered with robosuite's (shadows, multisampling), so evaluation renders the
        # same way. Our fast rendering differs from such frames by 2-3 grey levels on average.
        wrapper["render_quality"] = "robosuite"
    cams = kw.pop("camera_names", None)
    heights, widths = kw.pop("camera_heights", None), kw.pop("camera_widths", None)
    use_cams = kw.pop("use_camera_obs", cams is not None)
    if "cameras" not in wrapper and cams is not None:
        wrapper["cameras"] = ([cams] if isinstance(cams, str) else list(cams)) if use_cams else []
    if "image_size" not in wrapper and heights is not None:
        h = heights[0] if isinstance(heights, list) else heights
        w = widths[0] if isinstance(widths, list) else (widths if widths is not None else h)
        wrapper["image_size"] = [int(h), int(w)]
    if {"cue_steps", "delay_steps"} & set(overrides) and "horizon" not in overrides:
        wrapper.pop("horizon", None)  # the stored one was for the stored delay: use the default
    for k, v in overrides.items():
        (wrapper if k in WRAPPER_ARGS else kw)[k] = v
    unknown = set(wrapper) - set(WRAPPER_ARGS)
    if unknown:
        raise ValueError(f"env_args {WRAPPER_KEY} has unknown keys {sorted(unknown)}")
    return cls(**wrapper, suite_kwargs=kw)

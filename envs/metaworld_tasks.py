"""Meta-World v3 tasks (Sawyer arm, 4-D actions) as gymnasium environments.

Meta-World (PyPI `metaworld`, 3.1.1) is optional: `scripts/setup.sh` installs it with
`pip install --no-deps metaworld==3.1.1` (it pins mujoco==3.3.0; we keep robosuite's 3.3.x).
This module imports it only when an env is made, so `import envs` and the registry work
without it; making an env without it raises ImportError saying how to install it.

One wrapper, `MetaWorldTask`, holds a Meta-World env (composition) and turns it into the
contract of `envs/base.py`, except that the action is Meta-World's 4-D one. A task is a
generated subclass per name of `registry.METAWORLD_TASKS` (`MWPickPlaceEnv` for `pick-place`);
its registry entry is `MW-<task>`, its id `ttm/MW-<task>-v0`.

Observations (float64 except images):
    <camera>_image        uint8 (H, W, 3), upright (see below)
    robot0_eef_pos        (3,)  hand position, metres, world frame (Meta-World's obs[0:3])
    robot0_gripper_qpos   (2,)  finger joints r_close, l_close, metres (0, 0 open)
    object                (39,) Meta-World's observation (privileged, for the expert): hand
                          (3), finger opening (1), object poses (14), the same 18 of the step
                          before, goal position (3)
Action: (4,) in [-1, 1], clipped: hand position delta (x 1 cm) and gripper effort (+1 close,
-1 open). 80 Hz (5 MuJoCo steps of 2.5 ms). The hand orientation is fixed (no quaternion key).

Layouts: Meta-World draws each episode's object and goal positions (its `rand_vec`) by its own
rules. `layouts="seeded"` (default): `reset(seed=s)` draws them from `default_rng(s)` through
Meta-World's seeded sampling, so a seed is one layout, the same for every policy, and seeds
give unlimited distinct layouts. `layouts="mt1"`: seed s takes layout s % 50 of Meta-World's
MT1 benchmark (its 50 pre-sampled layouts, benchmark seed 0), the benchmark's own protocol:
ttm-eval's 50 episodes under seed 0 visit each once. Meta-World's own `reset(seed=...)`
ignores the seed (its benchmark wrappers take a random one of the 50 at each reset), hence
this choice here.

Episodes end at the first successful step (`terminate_on_success`, as for the robosuite
tasks; the reward is 1.0 there, else 0.0) or are truncated at `horizon` (Meta-World's 500).

Views. `view="ttm"` (default) is the above. `view="lerobot"` is the observation LeRobot 0.4.4's
`MetaworldEnv` gives a policy, as the TTM LeRobot plugin sees it (docs/lerobot.md): camera
corner2 moved where LeRobot puts it (LEROBOT_CAMERA_POS), rendered at 480x480 with
Meta-World's settings, upright, then area-averaged to `image_size` exactly as the plugin
resizes it (`ttm_policy.lerobot_checkpoint.area_resize`), and `agent_pos` (4,), Meta-World's
observation [0:4] (hand xyz, finger opening), LeRobot's state; the keys above are there too.
A policy trained through `lerobot-train` and converted by `ttm-convert lerobot-policy` meets
the same pixels and state in this env as in `lerobot-eval`. `image_size` must be square there.

Cameras: Meta-World's scene has topview, corner, corner2, corner3, corner4, behindGripper and
gripperPOV. The corner cameras' image "up" axis points down in the world (z of -0.5..-1), so
MuJoCo renders them upside down; such a camera's frame is rotated by 180 degrees (not
mirrored). behindGripper and gripperPOV ride on the hand. `render_quality="fast"` (default)
turns off the shadow map, multisampling and reflections (64x64 or 84x84 on Mesa llvmpipe,
2 loaded cores: 6-13 ms per camera, against 90-160 ms with Meta-World's settings); `"metaworld"`
keeps them.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from envs import gl, registry

gl.setup()  # before mujoco is imported: it picks its GL backend then

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from envs.planar import Renderer  # noqa: E402  (mujoco's, freed in its own GL context)

DEFAULT_CAMERAS = ("corner", "behindGripper")
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
LAYOUTS = ("seeded", "mt1")
RENDER_QUALITIES = ("fast", "metaworld")
VIEWS = ("ttm", "lerobot")
# LeRobot 0.4.4's MetaworldEnv (lerobot/envs/metaworld.py): camera corner2 moved here, 480 px.
LEROBOT_CAMERA, LEROBOT_CAMERA_POS, LEROBOT_RENDER_SIZE = "corner2", (0.75, 0.075, 0.7), 480
MAX_PATH_LENGTH = 500  # Meta-World's episode limit
FINGER_JOINTS = ("r_close", "l_close")
INSTALL_HINT = (
    "Meta-World is not installed: run scripts/setup.sh, or "
    ".venv/bin/pip install --no-deps metaworld==3.1.1 (--no-deps: it pins mujoco==3.3.0, "
    "and robosuite needs the mujoco 3.3.x installed here)"
)


def import_metaworld() -> Any:
    """The `metaworld` module (with `metaworld.policies`); ImportError saying how to install it."""
    try:
        import metaworld
        import metaworld.policies  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({type(e).__name__}: {e})") from e
    return metaworld


_benchmark_layouts: dict[str, list] = {}  # task -> MT1's 50 tasks (made once per process)


def benchmark_layouts(task: str) -> list:
    """Meta-World's MT1 benchmark tasks of `task` (benchmark seed 0): 50 pre-sampled layouts."""
    if task not in _benchmark_layouts:
        _benchmark_layouts[task] = import_metaworld().MT1(f"{task}-v3", seed=0).train_tasks
    return _benchmark_layouts[task]


class MetaWorldTask(gym.Env):
    """A Meta-World v3 env as a gymnasium env following `envs/base.py` (4-D actions).

    Subclasses (generated below, one per `registry.METAWORLD_TASKS` name) set `TASK`.
    """

    TASK: ClassVar[str] = ""  # Meta-World's name without "-v3", e.g. "pick-place"
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        *,
        cameras: Sequence[str] | None = None,  # None: the view's; () turns images off
        image_size: int | Sequence[int] = 64,  # side, or (height, width)
        horizon: int | None = None,  # steps before truncation; None = 500 (Meta-World's)
        layouts: str = "seeded",  # "seeded" or "mt1" (see the module docstring)
        render_quality: str | None = None,  # "fast" or "metaworld"; None: the view's
        terminate_on_success: bool = True,  # end the episode at the first successful step
        view: str = "ttm",  # "ttm" or "lerobot" (see the module docstring)
        render_mode: str | None = None,
    ):
        if not self.TASK:
            raise TypeError("MetaWorldTask is abstract: use a task subclass such as MWReachEnv")
        if view not in VIEWS:
            raise ValueError(f"view={view!r}; expected one of {VIEWS}")
        self.view = view
        if view == "lerobot":
            if cameras is not None and tuple(cameras) != (LEROBOT_CAMERA,):
                raise ValueError(f"view='lerobot' has one camera, {LEROBOT_CAMERA}; got {cameras}")
            if render_quality not in (None, "metaworld"):
                raise ValueError(
                    "view='lerobot' renders as Meta-World does: render_quality='metaworld'"
                )
            cameras, render_quality = (LEROBOT_CAMERA,), "metaworld"
        cameras = DEFAULT_CAMERAS if cameras is None else cameras
        render_quality = "fast" if render_quality is None else render_quality
        if isinstance(cameras, str):
            cameras = (cameras,)
        self.cameras = tuple(cameras)
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {', '.join(map(repr, unknown))}; Meta-World has: "
                f"{', '.join(CAMERAS)}"
            )
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(hw) != 2 or min(hw) <= 0:
            raise ValueError(
                f"image_size={image_size!r}; expected a positive int or (height, width)"
            )
        self.image_hw = (int(hw[0]), int(hw[1]))
        if view == "lerobot" and self.image_hw[0] != self.image_hw[1]:
            raise ValueError(f"view='lerobot' resizes to a square; got image_size={image_size!r}")
        self.horizon = int(MAX_PATH_LENGTH if horizon is None else horizon)
        if self.horizon < 1:
            raise ValueError(f"horizon must be positive; got {horizon}")
        if layouts not in LAYOUTS:
            raise ValueError(f"layouts={layouts!r}; expected one of {LAYOUTS}")
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(
                f"render_quality={render_quality!r}; expected one of {RENDER_QUALITIES}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.layouts, self.render_quality = layouts, render_quality
        self.terminate_on_success, self.render_mode = terminate_on_success, render_mode

        metaworld = import_metaworld()
        self.mw = metaworld.env_dict.ALL_V3_ENVIRONMENTS[f"{self.TASK}-v3"]()
        self.mw.max_path_length = max(MAX_PATH_LENGTH, self.horizon)  # ours truncates
        # What set_task does for an MT benchmark task: the goal is part of the observation.
        self.mw._set_task_called = True
        self.mw._partially_observable = False
        self.mw.__dict__.pop("sawyer_observation_space", None)  # a cached_property: recompute
        model = self.mw.model
        if view == "lerobot":
            model.cam_pos[model.camera(LEROBOT_CAMERA).id] = LEROBOT_CAMERA_POS
        self._fingers = [model.joint(j).qposadr[0] for j in FINGER_JOINTS]
        self._layout_size = int(self.mw._random_reset_space.low.size)
        self._layout: np.ndarray | None = None  # this episode's rand_vec
        self._obs39: np.ndarray | None = None  # the last observation Meta-World returned
        self._t = 0
        self._spec: mujoco.MjSpec | None = None  # the scene's MJCF (model_xml)

        self._renderer: Renderer | None = None
        self._upside_down: dict[str, bool] = {}
        if self.cameras or render_mode == "rgb_array":
            self._make_renderer()

        h, w = self.image_hw
        spaces = {f"{c}_image": gym.spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.cameras}
        spaces["robot0_eef_pos"] = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        spaces["robot0_gripper_qpos"] = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        spaces["object"] = gym.spaces.Box(-np.inf, np.inf, (39,), np.float64)
        if view == "lerobot":
            spaces["agent_pos"] = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    # ----------------------------------------------------------------------------------- render
    def _make_renderer(self) -> None:
        model, data = self.mw.model, self.mw.data
        h, w = self.image_hw
        if self.view == "lerobot":  # rendered as LeRobot does, then area-resized (_render)
            h = w = LEROBOT_RENDER_SIZE
        if self.render_quality == "fast":
            model.vis.quality.shadowsize = 0  # no shadow map (a 4096^2 depth pass per frame)
            model.vis.quality.offsamples = 0  # no multisampled offscreen buffer
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, w)
        model.vis.global_.offheight = max(model.vis.global_.offheight, h)
        gl.check_mujoco_backend()
        self._renderer = renderer = Renderer(model, h, w)
        if self.render_quality == "fast":  # the table's reflection: one more scene pass
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        # Free the GL context when this env goes, or before interpreter teardown unloads EGL.
        self._finalizer = weakref.finalize(self, renderer.close)
        mujoco.mj_forward(model, data)
        for cam in CAMERAS:  # the world z of the camera's image "up" axis (xmat column 1)
            self._upside_down[cam] = bool(data.cam(cam).xmat[7] < 0)

    def _render(self, camera: str) -> np.ndarray:
        """(H, W, 3) uint8 frame of `camera`, upright."""
        assert self._renderer is not None
        self._renderer.update_scene(self.mw.data, camera=camera)
        img = self._renderer.render()  # rows top to bottom (mujoco.Renderer flips GL's)
        img = np.ascontiguousarray(img[::-1, ::-1]) if self._upside_down[camera] else img
        if self.view == "lerobot" and img.shape[:2] != self.image_hw:
            import torch

            from ttm_policy.lerobot_checkpoint import area_resize

            x = torch.from_numpy(img).permute(2, 0, 1).float() / 255  # LeRobot's float CHW
            img = area_resize(x[None], self.image_hw[0])[0].numpy()
        return img

    def render(self) -> np.ndarray | None:
        """rgb_array: the first camera (or corner) at `image_size`, upright."""
        if self.render_mode != "rgb_array":
            return None
        return self._render(self.cameras[0] if self.cameras else "corner")

    # ------------------------------------------------------------------------------ gym API
    def _observe(self, obs39: np.ndarray) -> dict[str, np.ndarray]:
        self._obs39 = np.array(obs39, dtype=np.float64)
        obs = {f"{cam}_image": self._render(cam) for cam in self.cameras}
        obs["robot0_eef_pos"] = self._obs39[:3].copy()
        obs["robot0_gripper_qpos"] = self.mw.data.qpos[self._fingers].astype(np.float64)
        obs["object"] = self._obs39.copy()
        if self.view == "lerobot":
            obs["agent_pos"] = self._obs39[:4].copy()  # LeRobot's state: hand xyz, gripper
        return obs

    def get_obs(self) -> dict[str, np.ndarray]:
        """Observation of the current state (after `reset`, `step` or `set_sim_state`)."""
        if self._obs39 is None:
            raise RuntimeError(f"MW-{self.TASK}: call reset() first")
        return self._observe(self._obs39)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"MW-{self.TASK} takes no reset options; got {sorted(options)}")
        if seed is None:  # continue the stream started by the last seeded reset
            seed = int(self.np_random.integers(2**31 - 1))
        mw = self.mw
        if self.layouts == "mt1":
            tasks = benchmark_layouts(self.TASK)
            mw.set_task(tasks[seed % len(tasks)])  # frozen to that task's rand_vec
        else:  # Meta-World's own sampling (its rejection loops included), from this seed
            mw._freeze_rand_vec, mw.seeded_rand_vec = False, True
            mw.np_random = np.random.default_rng(seed)
        obs39, _ = mw.reset()
        mw._freeze_rand_vec = True  # a later reset (set_sim_state) re-creates this layout
        self._layout = np.array(mw._last_rand_vec, dtype=np.float64)
        self._t = 0
        return self._observe(obs39), {"success": False}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,):
            raise ValueError(
                f"MW-{self.TASK}: action has shape {a.shape}; expected (4,) hand xyz delta + gripper"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        if self._obs39 is None:
            raise RuntimeError(f"MW-{self.TASK}: call reset() first")
        obs39, _, _, _, info = self.mw.step(np.clip(a, -1.0, 1.0))
        self._t += 1
        success = bool(info["success"])
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.horizon and not terminated
        return self._observe(obs39), float(success), terminated, truncated, {"success": success}

    def close(self) -> None:
        """Free the renderer (in its own GL context) and the Meta-World env; idempotent."""
        if self._renderer is not None:
            self._finalizer()
            self._renderer = None
        if getattr(self, "mw", None) is not None:
            self.mw.close()
            self.mw = None

    # --------------------------------------------------------------- envs/base.py contract
    def _state_sizes(self) -> list[tuple[str, int]]:
        m = self.mw.model
        return [
            ("time", 1),
            ("qpos", m.nq),
            ("qvel", m.nv),
            ("mocap_pos", 3 * m.nmocap),
            ("mocap_quat", 4 * m.nmocap),
            ("t", 1),
            ("stacked", 18),
            ("layout", self._layout_size),
        ]

    def get_sim_state(self) -> np.ndarray:
        """float64: time, qpos, qvel, mocap pos and quat (the hand's target), the step count,
        the observation's 18 stacked values of the step before, and the layout (Meta-World's
        rand_vec: where objects and goal were put, which also moves model bodies and sites)."""
        if self._obs39 is None or self._layout is None:
            raise RuntimeError(f"MW-{self.TASK}: call reset() first")
        d = self.mw.data
        return np.concatenate(
            [[d.time], d.qpos, d.qvel, d.mocap_pos.ravel(), d.mocap_quat.ravel(), [self._t]]
            + [self._obs39[18:36], self._layout]
        ).astype(np.float64)

    def set_sim_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        sizes = self._state_sizes()
        total = sum(n for _, n in sizes)
        if state.shape != (total,):
            names = ", ".join(f"{k} ({n})" for k, n in sizes)
            raise ValueError(
                f"MW-{self.TASK} state must have shape ({total},) = {names}; got {state.shape}"
            )
        parts, i = {}, 0
        for name, n in sizes:
            parts[name], i = state[i : i + n], i + n
        mw, d = self.mw, self.mw.data
        if self._layout is None or not np.array_equal(parts["layout"], self._layout):
            # Another layout: Meta-World's reset puts objects, model bodies and sites for it.
            mw._last_rand_vec, mw._freeze_rand_vec = parts["layout"].copy(), True
            mw.reset()
            self._layout = parts["layout"].copy()
        d.time = parts["time"][0]
        d.qpos[:], d.qvel[:] = parts["qpos"], parts["qvel"]
        d.mocap_pos[:] = parts["mocap_pos"].reshape(-1, 3)
        d.mocap_quat[:] = parts["mocap_quat"].reshape(-1, 4)
        mujoco.mj_forward(mw.model, d)
        self._t = mw.curr_path_length = int(round(parts["t"][0]))
        # As after a step: the next observation stacks this one's current 18 values.
        mw._prev_obs = current = mw._get_curr_obs_combined_no_goal()
        obs39 = np.hstack([current, parts["stacked"], mw._get_pos_goal()])
        space = mw.sawyer_observation_space
        self._obs39 = np.clip(obs39, space.low, space.high)

    def model_xml(self) -> str:
        """The task's MJCF with this episode's body and site positions (Meta-World moves some
        per layout), asset directories absolute so the string loads anywhere here."""
        model, spec = self.mw.model, self._spec
        if spec is None:  # parsed once; its first to_xml compiles it (~0.2 s), later ~20 ms
            spec = self._spec = mujoco.MjSpec.from_file(self.mw.fullpath)
            base = os.path.dirname(os.path.abspath(self.mw.fullpath))
            spec.meshdir = os.path.join(base, spec.meshdir)
            spec.texturedir = os.path.join(base, spec.texturedir)
        for i, body in enumerate(spec.bodies):  # the compiled model's order
            if i:  # not the world
                body.pos, body.quat = model.body_pos[i], model.body_quat[i]
        for i, site in enumerate(spec.sites):
            site.pos = model.site_pos[i]
        return spec.to_xml()

    def env_args(self) -> dict[str, Any]:
        from importlib import metadata

        return {
            "env_name": f"ttm/MW-{self.TASK}-v0",
            "env_version": f"metaworld {metadata.version('metaworld')}",
            "type": 2,  # robomimic EnvType.GYM_TYPE: gymnasium.make(env_name, **env_kwargs)
            "env_kwargs": {
                "cameras": list(self.cameras),
                "image_size": list(self.image_hw),
                "horizon": self.horizon,
                "layouts": self.layouts,
                "render_quality": self.render_quality,
                "terminate_on_success": self.terminate_on_success,
                **({"view": self.view} if self.view != "ttm" else {}),
            },
        }

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> MetaWorldExpert:
        """The expert of this task's entry in `envs/registry.py`."""
        expert = registry.load(registry.task_spec(f"MW-{self.TASK}").expert)
        return expert(self, noise=noise, seed=seed)


class MetaWorldExpert:
    """Meta-World's scripted policy for the task (`metaworld.policies`), reading the privileged
    39-D observation (`object`), clipped to [-1, 1], plus Gaussian noise of std `noise` on all
    4 entries (then clipped again)."""

    def __init__(self, env: MetaWorldTask, *, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        policies = import_metaworld().policies
        self.env, self.noise = env, float(noise)
        self.policy = policies.ENV_POLICY_MAP[f"{env.TASK}-v3"]()
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass  # Meta-World's policies act on the current observation alone

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip, as the env does
            warnings.simplefilter("ignore", UserWarning)
            a = np.asarray(self.policy.get_action(obs["object"]), dtype=np.float64)
        a = np.clip(a, -1.0, 1.0)
        if self.noise > 0:
            a = np.clip(a + self.rng.normal(0.0, self.noise, size=4), -1.0, 1.0)
        return a


def _task_class(task: str) -> type[MetaWorldTask]:
    name = registry.metaworld_class_name(task)
    doc = f"Meta-World's `{task}-v3` (registry entry `MW-{task}`, id `ttm/MW-{task}-v0`)."
    return type(name, (MetaWorldTask,), {"TASK": task, "__module__": __name__, "__doc__": doc})


for _task in registry.METAWORLD_TASKS:
    globals()[registry.metaworld_class_name(_task)] = _task_class(_task)
del _task

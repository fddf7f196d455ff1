"""`ttm/PointCue-v0`: a light memory task in plain MuJoCo (no robosuite).

A point mass moves on a 1 m x 1 m plane, seen by one top-down camera (`agentview`). Two goal
pads look identical, except during the first `cue_steps` steps, when the target pad is lit
red. For the cue and a further `delay_steps` the point is held still (actions are ignored),
so neither the image nor the point's position says which pad is the target once the cue is
gone. Then the point moves under the action; reaching the cued pad is a success, reaching
the other pad ends the episode as a failure, and `max_steps` truncates it. By default
`max_steps` grows with the delay: max(60, cue_steps + delay_steps + 25), i.e. 60 up to a
30-step delay after the 5-step cue, and always at least 25 steps to move.

Timeline (t = number of `step` calls so far; obs_t is the observation before action t):
    t <  cue_steps                  obs_t shows the cue; action_t is ignored
    t <  cue_steps + delay_steps    action_t is ignored (the point stays exactly where it is)
    t >= cue_steps + delay_steps    action_t moves the point

Action: 7-D in [-1, 1] to match the OSC_POSE contract. Dims 0 and 1 are the planar velocity
command (x, y), 1.0 = 1 m/s = 5 cm per control step at 20 Hz; dims 2..6 are ignored.

Observations: `agentview_image` uint8 (S, S, 3), upright (row 0 = +y, column 0 = -x), and
`robot0_eef_pos` float64 (3,) position of the point in metres (z is constant). Nothing in the
observation depends on the cue once the cue is over. The start position is drawn from the
seed; the goal pads are fixed; the cue is drawn from the seed unless
`reset(options={"cue": i})` forces it, and the start position does not depend on the cue.
"""

from __future__ import annotations

import atexit
import weakref
from importlib import metadata
from typing import Any

from envs import gl, registry

gl.setup()  # before mujoco is imported: it picks its GL backend then

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

CAMERAS = ("agentview",)  # the cameras this env can render
GOALS = np.array([[-0.25, 0.25], [0.25, 0.25]])  # (2, 2) goal pad centres (x, y) in metres
GOAL_RADIUS = 0.05  # m; the point within this distance of a pad centre has reached it
CONTROL_DT = 0.05  # s per env step (20 Hz, like robosuite)
PHYSICS_DT = 0.005  # s per MuJoCo step
MAX_SPEED = 1.0  # m/s for an action of 1.0 (5 cm per env step)
START_LOW, START_HIGH = np.array([-0.1, -0.3]), np.array([0.1, -0.2])  # start box (x, y), m
PAD_RGBA = np.array([0.8, 0.8, 0.8, 1.0], dtype=np.float32)  # both pads, outside the cue
CUE_RGBA = np.array([0.9, 0.1, 0.1, 1.0], dtype=np.float32)  # the target pad during the cue
STATE_SIZE = 7  # get_sim_state: time, qpos (2), qvel (2), t, cue
MAX_STEPS = 60  # default episode limit: the expert takes 15 held + ~11 moving steps
MOVE_STEPS = 25  # steps left to move after cue + delay, at least (60 - 5 - 30 at delay 30)


def _scene_xml(image_size: int) -> str:
    # Rendering cost under Mesa llvmpipe (48x48, measured): a `plane` floor is drawn as a grid of
    # small quads (2.2 ms/frame); a thin box floor, no shadow map, no multisampling and coarse
    # spheres/cylinders (numslices/numstacks) bring it to ~0.4 ms with the same picture.
    off = max(image_size, 64)
    return f"""
<mujoco model="point_cue">
  <option timestep="{PHYSICS_DT}" gravity="0 0 0" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="8" numstacks="4"/>
    <global offwidth="{off}" offheight="{off}"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <worldbody>
    <geom name="floor" type="box" size="0.5 0.5 0.001" pos="0 0 -0.001" rgba="0.25 0.25 0.25 1"
          contype="0" conaffinity="0"/>
    <geom name="pad0" type="cylinder" size="0.06 0.001" pos="{GOALS[0, 0]} {GOALS[0, 1]} 0.001"
          rgba="{" ".join(map(str, PAD_RGBA))}" contype="0" conaffinity="0"/>
    <geom name="pad1" type="cylinder" size="0.06 0.001" pos="{GOALS[1, 0]} {GOALS[1, 1]} 0.001"
          rgba="{" ".join(map(str, PAD_RGBA))}" contype="0" conaffinity="0"/>
    <camera name="agentview" pos="0 0 1.2" fovy="45"/>
    <body name="point" pos="0 0 0.04">
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


class PointCueEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / CONTROL_DT)}
    cues = 2  # cue values; reset(options={"cue": i}) forces one (see envs/base.py)

    def __init__(
        self,
        *,
        cue_steps: int = 5,  # steps the cue is visible (the default)
        delay_steps: int = 10,  # further held-still steps after the cue: the memory gap
        max_steps: int | None = None,  # truncation; None: max(MAX_STEPS, cue+delay+MOVE_STEPS)
        image_size: int = 48,  # square camera image side, pixels
        cameras: tuple[str, ...] | list[str] = CAMERAS,  # only `agentview` exists
        render_images: bool = True,  # False: low-dim observations only (fast)
        render_mode: str | None = None,  # "rgb_array": `render()` returns the agentview frame
    ):
        if max_steps is None:  # grows with the delay; 60 (as always) up to delay 30
            max_steps = max(MAX_STEPS, cue_steps + delay_steps + MOVE_STEPS)
        if cue_steps < 1 or delay_steps < 0 or max_steps <= cue_steps + delay_steps:
            raise ValueError(
                f"PointCue needs cue_steps >= 1, delay_steps >= 0 and max_steps > cue_steps + "
                f"delay_steps; got cue_steps={cue_steps}, delay_steps={delay_steps}, "
                f"max_steps={max_steps}"
            )
        if image_size < 1:
            raise ValueError(f"PointCue image_size must be positive; got {image_size}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {', '.join(map(repr, unknown))}; PointCue has: "
                f"{', '.join(CAMERAS)}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.cue_steps, self.delay_steps, self.max_steps = cue_steps, delay_steps, max_steps
        self.image_size, self.cameras = image_size, tuple(cameras)
        # cameras=() turns images off, as for the robosuite tasks.
        self.render_images, self.render_mode = render_images and bool(self.cameras), render_mode

        self._xml = _scene_xml(image_size)
        self.model = mujoco.MjModel.from_xml_string(self._xml)
        self.data = mujoco.MjData(self.model)
        self._n_substeps = round(CONTROL_DT / PHYSICS_DT)
        self._pad_ids = [self.model.geom(f"pad{i}").id for i in range(2)]
        self._renderer: Renderer | None = None  # made on first use, then reused
        self._t = 0  # env steps taken in this episode
        self._cue = 0  # index of the target pad

        spaces = {"robot0_eef_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)}
        if self.render_images:
            for cam in self.cameras:
                shape = (image_size, image_size, 3)
                spaces[f"{cam}_image"] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    # --- gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        # Draw the start first and the cue always, so a forced cue leaves the scene unchanged.
        self.data.qpos[:] = self.np_random.uniform(START_LOW, START_HIGH)
        cue = int(self.np_random.integers(2))
        if options and "cue" in options:
            cue = int(options["cue"])
            if cue not in (0, 1):
                raise ValueError(f"options['cue'] must be 0 or 1; got {options['cue']!r}")
        self._cue, self._t = cue, 0
        mujoco.mj_forward(self.model, self.data)
        return self.get_obs(), {"success": False, "cue": self._cue}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"PointCue action must have shape (7,); got {action.shape}")
        held = self._t < self.cue_steps + self.delay_steps
        # (2,) velocity command; ignored (zero) while the point is held still
        self.data.ctrl[:] = 0.0 if held else np.clip(action[:2], -1.0, 1.0) * MAX_SPEED
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)
        self._t += 1

        dist = np.linalg.norm(GOALS - self.data.qpos[:2], axis=1)  # (2,) to each pad
        reached = int(np.argmin(dist)) if dist.min() < GOAL_RADIUS and not held else -1
        success = reached == self._cue
        terminated = reached >= 0
        truncated = not terminated and self._t >= self.max_steps
        info = {"success": success, "cue": self._cue, "reached": reached}
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
        pos = np.array([self.data.qpos[0], self.data.qpos[1], 0.04])  # (3,) m
        obs = {"robot0_eef_pos": pos}
        if self.render_images:
            for cam in self.cameras:
                obs[f"{cam}_image"] = self._render(cam)
        return obs

    def _render(self, camera: str = "agentview") -> np.ndarray:
        """(S, S, 3) uint8 frame; the target pad is red only while t < cue_steps."""
        for i, gid in enumerate(self._pad_ids):
            lit = i == self._cue and self._t < self.cue_steps
            self.model.geom_rgba[gid] = CUE_RGBA if lit else PAD_RGBA
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
        """(7,) float64: time, qpos x, y, qvel x, y, step counter t, cue. The cue and t are part of
        the state because replay needs them: they decide what the image shows and whether
        actions are ignored."""
        d = self.data
        return np.concatenate([[d.time], d.qpos, d.qvel, [self._t, self._cue]]).astype(np.float64)

    def set_sim_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (STATE_SIZE,):
            raise ValueError(
                f"PointCue state must have shape ({STATE_SIZE},) = time, qpos (2), qvel (2), t, "
                f"cue; got {state.shape}"
            )
        self.data.time = state[0]
        self.data.qpos[:] = state[1:3]
        self.data.qvel[:] = state[3:5]
        self._t, self._cue = int(state[5]), int(state[6])
        mujoco.mj_forward(self.model, self.data)

    def model_xml(self) -> str:
        return self._xml

    def env_args(self) -> dict[str, Any]:
        kwargs = dict(
            cue_steps=self.cue_steps,
            delay_steps=self.delay_steps,
            max_steps=self.max_steps,
            image_size=self.image_size,
            cameras=list(self.cameras),
            render_images=self.render_images,
        )
        return {
            "env_name": "ttm/PointCue-v0",
            "env_version": _package_version(),
            "type": 2,  # robomimic EnvType.GYM_TYPE
            "env_kwargs": kwargs,
        }

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> PointCueExpert:
        """The expert of the task registry's entry (`envs/registry.py`)."""
        return registry.load(registry.task_spec("PointCue").expert)(self, noise=noise, seed=seed)


class PointCueExpert:
    """Steers straight to the cued pad; while the env holds the point (cue + delay) it already
    commands that first move, which the env ignores.

    Why the held steps carry the steering action rather than zeros: any action is equally
    expert on a step the env ignores, and zeros there make a policy learn to *count* 15
    identical frames and decide only on the one release step (measured: a TTM then stayed at
    1/50 after 600 training steps). With the intent as the label, the cue-dependent choice is
    made while the cue is visible and memory has to *keep* it through the delay, which is the
    memory skill the task is about. Nothing observable changes: the point still does not move
    before the delay ends, so its position leaks nothing.

    Reads the cue from the env (privileged). Gaussian noise of std `noise` is added to the two
    used action dims; dims 2..6 are always zero.
    """

    def __init__(self, env: PointCueEnv, *, noise: float = 0.0, seed: int | None = None):
        self.env, self.noise = env, noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action = np.zeros(7)
        to_goal = GOALS[self.env._cue] - obs["robot0_eef_pos"][:2]  # (2,) m
        # Speed command that would cover 80% of the remaining distance in one step, capped.
        v = 0.8 * to_goal / (MAX_SPEED * CONTROL_DT)
        v /= max(1.0, float(np.linalg.norm(v)))
        action[:2] = np.clip(v + self.noise * self.rng.standard_normal(2), -1.0, 1.0)
        return action


def _bench(episodes: int = 100, frames: int = 2000) -> dict[str, float]:
    """`python -m envs.point_cue`: ms per frame, steps/s with and without images, expert success
    over `episodes` seeded episodes per cue (noise 0.05). Prints a table, returns the numbers."""
    import json
    import time

    results: dict[str, float] = {}
    for size in (48, 84):
        env = PointCueEnv(image_size=size)
        env.reset(seed=0)
        env._render()  # make the renderer
        start = time.perf_counter()
        for _ in range(frames):
            env._render()
        results[f"ms_per_frame_{size}px"] = (time.perf_counter() - start) / frames * 1e3
        env.close()
    for images in (True, False):
        env = PointCueEnv(render_images=images)
        steps = successes = 0
        start = time.perf_counter()
        for cue in (0, 1):
            for seed in range(episodes):
                obs, info = env.reset(seed=seed, options={"cue": cue})
                expert, done = env.make_expert(noise=0.05, seed=seed), False
                while not done:
                    obs, _, terminated, truncated, info = env.step(expert.act(obs))
                    steps, done = steps + 1, terminated or truncated
                successes += info["success"]
        key = "with_images" if images else "without_images"
        results[f"steps_per_s_{key}"] = steps / (time.perf_counter() - start)
        results["expert_success"] = successes / (2 * episodes)
        results["expert_episodes"] = 2 * episodes
        results["mean_episode_steps"] = steps / (2 * episodes)
        env.close()
    for k, v in results.items():
        print(f"{k:28s} {v:10.3f}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    _bench()

"""`ttm/SequenceCue-v0`: a light multi-item memory task in plain MuJoCo (no robosuite).

PointCue asks a policy to remember one bit; here it remembers an ordered list. A point mass
moves on a 1 m x 1 m plane seen by one top-down camera (`agentview`). `n_goals` identical grey
goal pads (default 6) lie evenly on a circle of radius 0.3 m around the centre of the plane,
pad k at angle 90 + 360 k / n_goals degrees (pad 0 straight up in the image, then
anticlockwise), so pads are >= 0.23 m apart and every pad is 0.3 m from the centre, where the
point starts. The target is a sequence of `n_items` distinct pads (default 3). During the cue
the items are shown one after another: item i's pad is lit red for `item_steps` steps
(default 4). For the cue and a further `delay_steps` (default 10) the point is held still
exactly as PointCue holds it (actions are ignored). Then the point moves under the action and
must visit the pads in the cued order.

Visits: the point within GOAL_RADIUS of a pad centre is in that pad (checked after every
moving step). Entering the next pad of the sequence advances it; being in a pad that was
already visited in order (e.g. staying in it, or passing over it again on the way to the next
one) is allowed and changes nothing; being in any other pad, a non-target pad or a target out
of order, ends the episode at once as a failure (terminated, info["success"] False). Visiting
the last item ends it as a success (reward 1.0 on that step, else 0.0); `max_steps` truncates.

No progress feedback: the pads look identical and grey after the cue whatever has been
visited, so the images never show which pads have been visited; a policy has to remember the
sequence and where it is in it (its own path tells it).

Cue encoding: an integer `cue` in [0, cues), the index of the sequence in the order of
`itertools.permutations(range(n_goals), n_items)` (lexicographic: at the defaults cue 0 =
pads (0, 1, 2), cue 1 = (0, 1, 3), ..., cue 119 = (5, 4, 3)); `env.sequence_of(cue)` and
`env.cue_of(sequence)` convert. The cue is drawn uniformly from the seed (= the items are
drawn without replacement) unless `reset(options={"cue": c})` forces it, where c is that index
or the sequence itself (a tuple/list of pad indices). The class attribute `cues` is the count
at the default sizes (120); an env's own `cues` is the count at its sizes. Because the cue is
an integer, `ttm-collect --paired-cues` applies, but it records every scene once per cue:
120 episodes per scene at the defaults (--episodes a multiple of 120).

Information content and chance: there are n_goals! / (n_goals - n_items)! ordered sequences,
6 * 5 * 4 = 120 at the defaults, so the policy has to carry log2(120) = 6.9 bits through the
delay (PointCue: 1 bit). A perfect navigator that ignores the cue succeeds with probability
1 / 120 = 0.83% (any wrong entry fails, so guessing one pad at a time is no better).

Timeline (t = number of `step` calls so far; obs_t is the observation before action t):
    t <  cue_steps                  obs_t shows pad sequence[t // item_steps] lit; action ignored
    t <  cue_steps + delay_steps    action_t is ignored (the point stays exactly where it is)
    t >= cue_steps + delay_steps    action_t moves the point
where cue_steps = n_items * item_steps (12 at the defaults; an attribute, not a constructor
argument). Episode length: max_steps defaults to cue_steps + delay_steps + 15 * n_items
= 12 + 10 + 45 = 67 at the defaults (22 held steps, 45 to move); the scripted expert moves
for 24 steps on average and at most 30 (1000 seeds; a leg is at most 0.6 m at 5 cm per step),
so its episodes are 46 steps long on average.

Action: 7-D in [-1, 1] as for PointCue: dims 0 and 1 are the planar velocity command (x, y),
1.0 = 1 m/s = 5 cm per control step at 20 Hz; dims 2..6 are ignored.

Observations: `agentview_image` uint8 (S, S, 3) (S = `image_size`, default 32), upright
(row 0 = +y, column 0 = -x), and `robot0_eef_pos` float64 (3,) position of the point in
metres (z is constant). Nothing in any observation depends on the cue once the cue is over.
The start position is drawn from the seed in a small box around the centre, before the cue,
so forcing the cue does not change it; the pads are fixed.
"""

from __future__ import annotations

import atexit
import itertools
import math
import weakref
from collections.abc import Sequence
from typing import Any

from envs import gl, registry

gl.setup()  # before mujoco is imported: it picks its GL backend then

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from envs.point_cue import (  # noqa: E402  (the same physics, colours and renderer as PointCue)
    CONTROL_DT,
    CUE_RGBA,
    GOAL_RADIUS,
    MAX_SPEED,
    PAD_RGBA,
    PHYSICS_DT,
    Renderer,
    _close_if_alive,
    _package_version,
)

CAMERAS = ("agentview",)  # the cameras this env can render
N_GOALS, N_ITEMS = 6, 3  # default pad count and sequence length
MAX_GOALS = 8  # more pads would crowd the circle (pad spacing, the expert's clear routes)
RING_RADIUS = 0.3  # m; pads lie on this circle around the centre of the plane
START_HALF = 0.05  # m; the start is uniform in [-START_HALF, START_HALF]^2
MOVE_STEPS_PER_ITEM = 15  # default steps to move per item (a leg is <= 12 expert steps)
STATE_SIZE = 8  # get_sim_state: time, qpos (2), qvel (2), t, progress, cue
CLEARANCE = 0.04  # m; the expert keeps its straight route this far outside forbidden pads


def goal_positions(n_goals: int) -> np.ndarray:
    """(n_goals, 2) pad centres (x, y) in metres: pad k at angle 90 + 360 k / n_goals degrees."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(n_goals) / n_goals
    return RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _scene_xml(goals: np.ndarray, image_size: int) -> str:
    # As cheap to render as PointCue's scene: a thin box floor, no shadow map, no multisampling,
    # coarse cylinders and sphere.
    off = max(image_size, 64)
    rgba = " ".join(map(str, PAD_RGBA))
    pads = "\n".join(
        f'    <geom name="pad{k}" type="cylinder" size="0.06 0.001" pos="{x:.6f} {y:.6f} 0.001" '
        f'rgba="{rgba}" contype="0" conaffinity="0"/>'
        for k, (x, y) in enumerate(goals)
    )
    return f"""
<mujoco model="sequence_cue">
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


class SequenceCueEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / CONTROL_DT)}
    # Cue values at the default sizes (an env's own `cues` counts its sizes); reset(options=
    # {"cue": i}) forces one (see envs/base.py).
    cues = math.perm(N_GOALS, N_ITEMS)

    def __init__(
        self,
        *,
        n_goals: int = N_GOALS,  # identical pads on the ring, 2..MAX_GOALS
        n_items: int = N_ITEMS,  # length of the cued sequence, 1..n_goals
        item_steps: int = 4,  # steps each item is shown; the cue lasts n_items * item_steps
        delay_steps: int = 10,  # further held-still steps after the cue: the memory gap
        max_steps: int | None = None,  # None: cue + delay + MOVE_STEPS_PER_ITEM * n_items
        image_size: int = 32,  # square camera image side, pixels
        cameras: tuple[str, ...] | list[str] = CAMERAS,  # only `agentview` exists
        render_images: bool = True,  # False: low-dim observations only (fast)
        render_mode: str | None = None,  # "rgb_array": `render()` returns the agentview frame
    ):
        if not 2 <= n_goals <= MAX_GOALS or not 1 <= n_items <= n_goals:
            raise ValueError(
                f"SequenceCue needs 2 <= n_goals <= {MAX_GOALS} and 1 <= n_items <= n_goals; "
                f"got n_goals={n_goals}, n_items={n_items}"
            )
        cue_steps = n_items * item_steps
        if max_steps is None:
            max_steps = cue_steps + delay_steps + MOVE_STEPS_PER_ITEM * n_items
        if item_steps < 1 or delay_steps < 0 or max_steps <= cue_steps + delay_steps:
            raise ValueError(
                f"SequenceCue needs item_steps >= 1, delay_steps >= 0 and max_steps > n_items * "
                f"item_steps + delay_steps; got item_steps={item_steps}, delay_steps="
                f"{delay_steps}, max_steps={max_steps} (n_items={n_items})"
            )
        if image_size < 1:
            raise ValueError(f"SequenceCue image_size must be positive; got {image_size}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {', '.join(map(repr, unknown))}; SequenceCue has: "
                f"{', '.join(CAMERAS)}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.n_goals, self.n_items, self.item_steps = n_goals, n_items, item_steps
        self.cue_steps, self.delay_steps, self.max_steps = cue_steps, delay_steps, max_steps
        self.image_size, self.cameras = image_size, tuple(cameras)
        # cameras=() turns images off, as for the other tasks.
        self.render_images, self.render_mode = render_images and bool(self.cameras), render_mode
        self.goals = goal_positions(n_goals)  # (n_goals, 2) m
        # Every ordered sequence; the cue is an index into this list.
        self._sequences = list(itertools.permutations(range(n_goals), n_items))
        self.cues = len(self._sequences)

        self._xml = _scene_xml(self.goals, image_size)
        self.model = mujoco.MjModel.from_xml_string(self._xml)
        self.data = mujoco.MjData(self.model)
        self._n_substeps = round(CONTROL_DT / PHYSICS_DT)
        self._pad_ids = [self.model.geom(f"pad{k}").id for k in range(n_goals)]
        self._renderer: Renderer | None = None  # made on first use, then reused
        self._t = 0  # env steps taken in this episode
        self._cue = 0  # index of the target sequence in self._sequences
        self._progress = 0  # items of the sequence visited so far, in order

        spaces = {"robot0_eef_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)}
        if self.render_images:
            for cam in self.cameras:
                shape = (image_size, image_size, 3)
                spaces[f"{cam}_image"] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    # --- cue encoding --------------------------------------------------------------------------

    def sequence_of(self, cue: int) -> tuple[int, ...]:
        """The pad indices, in visiting order, of cue index `cue`."""
        if not 0 <= cue < self.cues:
            raise ValueError(f"cue must be in [0, {self.cues}); got {cue!r}")
        return self._sequences[cue]

    def cue_of(self, sequence: Sequence[int]) -> int:
        """The cue index of an ordered sequence of `n_items` distinct pad indices."""
        seq = tuple(int(k) for k in sequence)
        if len(seq) != self.n_items or len(set(seq)) != len(seq):
            raise ValueError(f"a cue sequence has {self.n_items} distinct pads; got {sequence!r}")
        if not all(0 <= k < self.n_goals for k in seq):
            raise ValueError(f"cue pads must be in [0, {self.n_goals}); got {sequence!r}")
        return self._sequences.index(seq)

    @property
    def sequence(self) -> tuple[int, ...]:
        """This episode's target pads in visiting order (privileged)."""
        return self._sequences[self._cue]

    @property
    def progress(self) -> int:
        """Items of the sequence visited so far, in order (privileged)."""
        return self._progress

    # --- gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"cue"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected only 'cue'")
        mujoco.mj_resetData(self.model, self.data)
        # Draw the start first and the cue always, so a forced cue leaves the scene unchanged.
        self.data.qpos[:] = self.np_random.uniform(-START_HALF, START_HALF, 2)
        cue = int(self.np_random.integers(self.cues))
        if "cue" in options:
            forced = options["cue"]
            if isinstance(forced, (int, np.integer)):
                self.sequence_of(int(forced))  # checks the range
                cue = int(forced)
            else:
                cue = self.cue_of(forced)
        self._cue, self._t, self._progress = cue, 0, 0
        mujoco.mj_forward(self.model, self.data)
        return self.get_obs(), {"success": False, "cue": cue, "sequence": self.sequence}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"SequenceCue action must have shape (7,); got {action.shape}")
        held = self._t < self.cue_steps + self.delay_steps
        # (2,) velocity command; ignored (zero) while the point is held still
        self.data.ctrl[:] = 0.0 if held else np.clip(action[:2], -1.0, 1.0) * MAX_SPEED
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)
        # mj_step leaves positions derived from qpos (xpos, which the image draws) one substep
        # behind qpos; recompute them so that the image shows the state get_sim_state returns and
        # set_sim_state (which ends in mj_forward) restores the same image mid-episode.
        mujoco.mj_forward(self.model, self.data)
        self._t += 1

        dist = np.linalg.norm(self.goals - self.data.qpos[:2], axis=1)  # (n_goals,) to each pad
        reached = int(np.argmin(dist)) if dist.min() < GOAL_RADIUS and not held else -1
        seq, failed = self.sequence, False
        if reached >= 0:
            if self._progress < self.n_items and reached == seq[self._progress]:
                self._progress += 1  # the next item, in order
            elif reached not in seq[: self._progress]:  # visited ones may be passed again
                failed = True  # a non-target pad, or a target out of order
        success = self._progress == self.n_items
        terminated = success or failed
        truncated = not terminated and self._t >= self.max_steps
        info = {
            "success": success,
            "cue": self._cue,
            "sequence": seq,
            "progress": self._progress,
            "reached": reached,
        }
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

    def lit_pad(self) -> int:
        """The pad the image shows lit now (sequence[t // item_steps] during the cue), or -1."""
        return self.sequence[self._t // self.item_steps] if self._t < self.cue_steps else -1

    def _render(self, camera: str = "agentview") -> np.ndarray:
        """(S, S, 3) uint8 frame; one pad is red only while t < cue_steps."""
        lit = self.lit_pad()
        for k, gid in enumerate(self._pad_ids):
            self.model.geom_rgba[gid] = CUE_RGBA if k == lit else PAD_RGBA
        if self._renderer is None:
            gl.check_mujoco_backend()
            # Renderer (PointCue's): frees its GL objects in its own context.
            self._renderer = Renderer(self.model, self.image_size, self.image_size)
            # Free the GL context before interpreter teardown unloads EGL (else noisy errors).
            atexit.register(_close_if_alive, weakref.ref(self))
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()  # a fresh array, upright (mujoco.Renderer flips rows)

    # --- envs/base.py contract -----------------------------------------------------------------

    def get_sim_state(self) -> np.ndarray:
        """(8,) float64: time, qpos x, y, qvel x, y, step counter t, progress, cue. t, progress
        and the cue are part of the state because replay needs them: they decide what the image
        shows, whether actions are ignored and what a visit means."""
        d = self.data
        extra = [self._t, self._progress, self._cue]
        return np.concatenate([[d.time], d.qpos, d.qvel, extra]).astype(np.float64)

    def set_sim_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (STATE_SIZE,):
            raise ValueError(
                f"SequenceCue state must have shape ({STATE_SIZE},) = time, qpos (2), qvel (2), "
                f"t, progress, cue; got {state.shape}"
            )
        self.data.time = state[0]
        self.data.qpos[:] = state[1:3]
        self.data.qvel[:] = state[3:5]
        self._t, self._progress, self._cue = int(state[5]), int(state[6]), int(state[7])
        mujoco.mj_forward(self.model, self.data)

    def model_xml(self) -> str:
        return self._xml

    def env_args(self) -> dict[str, Any]:
        kwargs = dict(
            n_goals=self.n_goals,
            n_items=self.n_items,
            item_steps=self.item_steps,
            delay_steps=self.delay_steps,
            max_steps=self.max_steps,
            image_size=self.image_size,
            cameras=list(self.cameras),
            render_images=self.render_images,
        )
        return {
            "env_name": "ttm/SequenceCue-v0",
            "env_version": _package_version(),
            "type": 2,  # robomimic EnvType.GYM_TYPE
            "env_kwargs": kwargs,
        }

    def make_expert(self, noise: float = 0.0, seed: int | None = None) -> SequenceCueExpert:
        """The expert of the task registry's entry (`envs/registry.py`)."""
        spec = registry.task_spec("SequenceCue")
        return registry.load(spec.expert)(self, noise=noise, seed=seed)


def _segment_distance(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K,) distance of each of `points` (K, 2) from the segment a-b."""
    ab = b - a
    s = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)  # (K,)
    return np.linalg.norm(points - (a + s[:, None] * ab), axis=1)


class SequenceCueExpert:
    """Steers to the next pad of the cued sequence; while the env holds the point (cue + delay)
    it already commands the move to the first pad, which the env ignores (PointCueExpert says
    why the held steps carry the intent rather than zeros).

    It goes straight to the next pad unless that straight route passes within CLEARANCE of a pad
    it must not enter (not yet visited and not the next one); then it heads for the centre of
    the ring first, from where every pad is a clear radial route. At the default 6 pads every
    straight route between pads or from the start is clear, so the detour is for more pads.

    Reads the cue and the progress from the env (privileged). Gaussian noise of std `noise` is
    added to the two used action dims; dims 2..6 are always zero.
    """

    def __init__(self, env: SequenceCueEnv, *, noise: float = 0.0, seed: int | None = None):
        self.env, self.noise = env, noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        pos = obs["robot0_eef_pos"][:2]  # (2,) m
        seq = env.sequence
        k = min(env.progress, len(seq) - 1)
        target = env.goals[seq[k]]  # (2,) m
        allowed = set(seq[: k + 1])
        forbidden = env.goals[[j for j in range(env.n_goals) if j not in allowed]]  # (F, 2)
        blocked = len(forbidden) and _segment_distance(pos, target, forbidden).min() < (
            GOAL_RADIUS + CLEARANCE
        )
        aim = np.zeros(2) if blocked else target  # the ring's centre, or the pad
        # Speed command that would cover 80% of the remaining distance in one step, capped.
        v = 0.8 * (aim - pos) / (MAX_SPEED * CONTROL_DT)
        v /= max(1.0, float(np.linalg.norm(v)))
        action = np.zeros(7)
        action[:2] = np.clip(v + self.noise * self.rng.standard_normal(2), -1.0, 1.0)
        return action


def expert_success(
    episodes: int = 200, noise: float = 0.05, images: bool = False, **env_kwargs: Any
) -> dict[str, float]:
    """`python -m envs.sequence_cue [episodes]`: the expert's success over seeded episodes
    (seed i, cue drawn from the seed, noise 0.05 as ttm-collect), without images by default."""
    import time

    env = SequenceCueEnv(render_images=images, **env_kwargs)
    successes = steps = moving = 0
    longest = 0
    start = time.perf_counter()
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        expert, done, n = env.make_expert(noise=noise, seed=seed), False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            n, done = n + 1, terminated or truncated
        successes += info["success"]
        steps += n
        moving += n - env.cue_steps - env.delay_steps
        longest = max(longest, n)
    env.close()
    return {
        "episodes": episodes,
        "expert_success": successes / episodes,
        "mean_episode_steps": steps / episodes,
        "mean_moving_steps": moving / episodes,
        "longest_episode": longest,
        "max_steps": env.max_steps,
        "seconds": time.perf_counter() - start,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(expert_success(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))

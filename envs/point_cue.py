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

from typing import Any

import numpy as np

from envs.planar import (  # the scene, physics and rendering PointCue shares with SequenceCue
    CAMERAS,
    PAD_RGBA,
    PlanarCueEnv,
    PlanarExpert,
)

# isort: split
from envs.planar import (  # noqa: F401  (defined here before envs/planar.py; tests import some)
    CONTROL_DT,
    CUE_RGBA,
    GOAL_RADIUS,
    MAX_SPEED,
    PHYSICS_DT,
    Renderer,
)

GOALS = np.array([[-0.25, 0.25], [0.25, 0.25]])  # (2, 2) goal pad centres (x, y) in metres
START_LOW, START_HIGH = np.array([-0.1, -0.3]), np.array([0.1, -0.2])  # start box (x, y), m
STATE_SIZE = 7  # get_sim_state: time, qpos (2), qvel (2), t, cue
MAX_STEPS = 60  # default episode limit: the expert takes 15 held + ~11 moving steps
MOVE_STEPS = 25  # steps left to move after cue + delay, at least (60 - 5 - 30 at delay 30)


def _pads_xml() -> str:
    """The two pads' geoms for `scene_xml` (pad0 left, pad1 right)."""
    rgba = " ".join(map(str, PAD_RGBA))
    return f"""\
    <geom name="pad0" type="cylinder" size="0.06 0.001" pos="{GOALS[0, 0]} {GOALS[0, 1]} 0.001"
          rgba="{rgba}" contype="0" conaffinity="0"/>
    <geom name="pad1" type="cylinder" size="0.06 0.001" pos="{GOALS[1, 0]} {GOALS[1, 1]} 0.001"
          rgba="{rgba}" contype="0" conaffinity="0"/>"""


class PointCueEnv(PlanarCueEnv):
    TASK, MODEL, TASK_STATE = "PointCue", "point_cue", ("t", "cue")
    cues = 2  # cue values; reset(options={"cue": i}) forces one (see envs/base.py)
    # PointCue keeps the old behaviour so its recorded datasets and results stay valid:
    forward_after_step = False  # its image lags qpos by one physics substep after a step
    reject_unknown_options = False  # it ignores reset options other than "cue"

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
        super().__init__(
            goals=GOALS,
            pads=_pads_xml(),
            cue_steps=cue_steps,
            delay_steps=delay_steps,
            max_steps=max_steps,
            image_size=image_size,
            cameras=cameras,
            render_images=render_images,
            render_mode=render_mode,
        )

    # --- the task (hooks of PlanarCueEnv) ------------------------------------------------------

    def _draw_start(self) -> np.ndarray:
        return self.np_random.uniform(START_LOW, START_HIGH)

    def _forced_cue(self, value: Any) -> int:
        cue = int(value)
        if cue not in (0, 1):
            raise ValueError(f"options['cue'] must be 0 or 1; got {value!r}")
        return cue

    def lit_pad(self) -> int:
        """The pad the image shows lit now: the target pad while t < cue_steps, else -1."""
        return self._cue if self._t < self.cue_steps else -1

    def _outcome(self, reached: int) -> tuple[bool, bool, dict[str, Any]]:
        success = reached == self._cue  # reaching either pad ends the episode
        return success, reached >= 0, {"success": success, "cue": self._cue, "reached": reached}

    def _task_state(self) -> list[int]:
        # The cue and t are part of the sim state because replay needs them: they decide what
        # the image shows and whether actions are ignored.
        return [self._t, self._cue]

    def _set_task_state(self, values: np.ndarray) -> None:
        self._t, self._cue = int(values[0]), int(values[1])

    def _task_kwargs(self) -> dict[str, Any]:
        return {"cue_steps": self.cue_steps}


class PointCueExpert(PlanarExpert):
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

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self._steer(obs["robot0_eef_pos"][:2], GOALS[self.env._cue])


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

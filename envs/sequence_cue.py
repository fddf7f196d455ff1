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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.ordered_cues import OrderedCues
from envs.planar import (  # the same scene, physics and rendering as PointCue
    CAMERAS,
    GOAL_RADIUS,
    PAD_RGBA,
    PlanarCueEnv,
    PlanarExpert,
)

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


def _pads_xml(goals: np.ndarray) -> str:
    """The pads' geoms for `scene_xml`, one line each."""
    rgba = " ".join(map(str, PAD_RGBA))
    return "\n".join(
        f'    <geom name="pad{k}" type="cylinder" size="0.06 0.001" pos="{x:.6f} {y:.6f} 0.001" '
        f'rgba="{rgba}" contype="0" conaffinity="0"/>'
        for k, (x, y) in enumerate(goals)
    )


class SequenceCueEnv(PlanarCueEnv):
    TASK, MODEL, TASK_STATE = "SequenceCue", "sequence_cue", ("t", "progress", "cue")
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
        goals = goal_positions(n_goals)  # (n_goals, 2) m
        super().__init__(
            goals=goals,
            pads=_pads_xml(goals),
            cue_steps=cue_steps,
            delay_steps=delay_steps,
            max_steps=max_steps,
            image_size=image_size,
            cameras=cameras,
            render_images=render_images,
            render_mode=render_mode,
        )
        self.n_goals, self.n_items, self.item_steps = n_goals, n_items, item_steps
        # Every ordered sequence; the cue is an index into this list.
        self._codes = OrderedCues(n_goals, n_items, "pads")
        self.cues = len(self._codes)
        self._progress = 0  # items of the sequence visited so far, in order

    # --- cue encoding --------------------------------------------------------------------------

    def sequence_of(self, cue: int) -> tuple[int, ...]:
        """The pads, in order, of cue index `cue`."""
        return self._codes.sequence_of(cue)

    def cue_of(self, sequence: Sequence[int]) -> int:
        """The cue index of an ordered sequence of `n_items` distinct pads."""
        return self._codes.cue_of(sequence)

    @property
    def sequence(self) -> tuple[int, ...]:
        """This episode's target pads in visiting order (privileged)."""
        return self._codes.sequences[self._cue]

    @property
    def progress(self) -> int:
        """Items of the sequence visited so far, in order (privileged)."""
        return self._progress

    # --- the task (hooks of PlanarCueEnv) ------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._progress = 0
        return obs, {**info, "sequence": self.sequence}

    def _draw_start(self) -> np.ndarray:
        return self.np_random.uniform(-START_HALF, START_HALF, 2)

    def _forced_cue(self, value: Any) -> int:
        """`value` is a cue index or the sequence itself (pad indices)."""
        if isinstance(value, (int, np.integer)):
            self.sequence_of(int(value))  # checks the range
            return int(value)
        return self.cue_of(value)

    def lit_pad(self) -> int:
        """The pad the image shows lit now (sequence[t // item_steps] during the cue), or -1."""
        return self.sequence[self._t // self.item_steps] if self._t < self.cue_steps else -1

    def _outcome(self, reached: int) -> tuple[bool, bool, dict[str, Any]]:
        seq, failed = self.sequence, False
        if reached >= 0:
            if self._progress < self.n_items and reached == seq[self._progress]:
                self._progress += 1  # the next item, in order
            elif reached not in seq[: self._progress]:  # visited ones may be passed again
                failed = True  # a non-target pad, or a target out of order
        success = self._progress == self.n_items
        info = {
            "success": success,
            "cue": self._cue,
            "sequence": seq,
            "progress": self._progress,
            "reached": reached,
        }
        return success, success or failed, info

    def _task_state(self) -> list[int]:
        # t, progress and the cue are part of the sim state because replay needs them: they
        # decide what the image shows, whether actions are ignored and what a visit means.
        return [self._t, self._progress, self._cue]

    def _set_task_state(self, values: np.ndarray) -> None:
        self._t, self._progress, self._cue = int(values[0]), int(values[1]), int(values[2])

    def _task_kwargs(self) -> dict[str, Any]:
        return {"n_goals": self.n_goals, "n_items": self.n_items, "item_steps": self.item_steps}


def _segment_distance(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K,) distance of each of `points` (K, 2) from the segment a-b."""
    ab = b - a
    s = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)  # (K,)
    return np.linalg.norm(points - (a + s[:, None] * ab), axis=1)


class SequenceCueExpert(PlanarExpert):
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
        return self._steer(pos, aim)


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

"""TouchSequenceCued (`ttm/TouchSequenceCued-v0`): touch cubes in an order shown only in images.

The robosuite memory task with more than one bit (LiftCued and PlaceCued ask for one).

Scene: the table of the cued tasks (Panda, OSC_POSE, 20 Hz) with `n_cubes` identical red cubes
(default 4) in a row across the table (along y), each on its own grey square pad. Slot k's pad is
centred at x = 0, y = (k - (n_cubes - 1) / 2) * SLOT_SPACING (13 cm apart: y = -19.5, -6.5,
6.5, 19.5 cm at the defaults; slot 0 at -y, the left of the agentview image); its cube starts
within +-3 cm (x) and +-2 cm (y) of the pad centre, at any yaw, drawn from the reset seed.

The target is an ordered sequence of `n_items` distinct cubes (default 3). During the cue the
items are shown one after another: item i's pad is green for `item_steps` observations (default
5), so the cue lasts cue_steps = n_items * item_steps observations (15); then every pad is grey
again. For the cue and a further `delay_steps` (default 10) the arm is held still exactly as in
LiftCued (the env replaces the action by zero motion, gripper open). Then the agent must touch
the cubes in the cued order with the gripper.

Touches: after every step, a cube in contact with any collision geom of the gripper (hand,
fingers, finger pads) is touched. Touching the next cube of the sequence advances it; touching
one already touched in order (staying on it, brushing it again) changes nothing; touching any
other cube, a non-target or a target out of order, ends the episode as a failure (terminated,
info["failure"] True). Touching the last item ends it as a success (reward 1.0 on that step);
`horizon` truncates. The cubes look the same whatever has been touched: the images never show
the progress, so a policy has to remember the sequence and where it is in it.

Information content and chance: there are n_cubes! / (n_cubes - n_items)! ordered sequences,
4 * 3 * 2 = 24 at the defaults, so the policy carries log2(24) = 4.58 bits through the delay
(LiftCued, PlaceCued: 1 bit). A perfect manipulator that ignores the cue succeeds with
probability 1 / 24 = 4.2% (any wrong touch fails, so guessing one cube at a time is no better).
With `n_cubes=3, n_items=3`: 6 sequences, 2.58 bits, chance 1/6.

Episode length: cue + delay + MOVE_STEPS_PER_ITEM (45) steps per item to act, whatever the
delay: 15 + 10 + 135 = 160 steps at the defaults (delay 100: 250; delay 200: 350). The scripted
expert touches the three cubes in 72 moving steps on average (at most 92; 100 seeded episodes
with noise 0.05, all successful), so its demonstrations are about 97 steps long at the
defaults (187 at delay 100); the limit leaves a policy half as much time again.

Schedule (t = number of steps taken; observation t is the one returned after step t, 0 = reset):
    observations 0 .. cue_steps-1         show pad sequence[t // item_steps] green
    actions of steps 1 .. cue_steps+delay replaced by "hold still" (as LiftCued)
The cue only changes geom colours (model.geom_rgba), never physics, so two episodes with the
same scene seed and different cues are byte-identical after the cue, in every observation.
Observations are the cued tasks': `<camera>_image`, robot0_eef_pos / eef_quat / gripper_qpos,
and `object` (privileged, for the expert): every cube's position and quaternion in slot order,
which reveals neither the cue nor the progress.

Cue encoding: an integer `cue` in [0, cues), the index of the sequence in the order of
`itertools.permutations(range(n_cubes), n_items)` (at the defaults cue 0 = cubes (0, 1, 2),
cue 1 = (0, 1, 3), ..., cue 23 = (3, 2, 1)); `sequence_of(cue)` and `cue_of(sequence)`
convert. The cue is drawn uniformly from the reset seed with a generator separate from the
scene's (so the scene does not depend on it) unless `reset(options={"cue": c})` forces it, c
the index or the sequence itself. The class attribute `cues` is the count at the default sizes
(24); an env's own `cues` counts its sizes. `ttm-collect --paired-cues` records every scene once
per cue: 24 episodes per scene at the defaults.

State: `get_sim_state()` appends [cue, progress, failed] to MuJoCo's [time, qpos, qvel], so a
stored state restores the cue, the pads' colours and the touches so far.
`info["progress"]` (every step) counts the items touched in order; `ttm-eval` reports how many
episodes reached each count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from envs import experts, gl

gl.setup()  # before robosuite is imported: it picks its GL backend then

import numpy as np  # noqa: E402

from envs.cued_tasks import CUBE_HALF, CUE_SALT, GREEN, GREY, CuedTableEnv, _cube, _pad_bodies  # noqa: E402
from envs.ordered_cues import OrderedCues  # noqa: E402
from envs.robosuite_tasks import DEFAULT_CAMERAS, RobosuiteTask  # noqa: E402

N_CUBES, N_ITEMS = 4, 3  # default cube count and sequence length
ITEM_STEPS = 5  # default observations each item of the cue is shown
DELAY_STEPS = 10  # default held-still steps after the cue
MAX_CUBES = 4  # a fifth slot would be out of the arm's comfortable reach (|y| > 0.25 m)
SLOT_SPACING = 0.10  # m between neighbouring slot centres (along y)
PAD_HALF_X, PAD_HALF_Y = 0.07, 0.045  # m, the pad under each slot (1 cm between pads)
JITTER_X, JITTER_Y = 0.03, 0.015  # m, the cube's start within its slot (stays on its pad)
MOVE_STEPS_PER_ITEM = 45  # default steps to act per item (the expert: 24 on average, <= 31)


def slot_centers(n_cubes: int, top: float) -> np.ndarray:
    """(n_cubes, 3) pad centres on the table top (world, m), slot 0 at -y."""
    y = (np.arange(n_cubes) - (n_cubes - 1) / 2) * SLOT_SPACING
    return np.stack([np.zeros(n_cubes), y, np.full(n_cubes, top)], axis=1)


def _check_sizes(n_cubes: int, n_items: int, item_steps: int, delay_steps: int) -> None:
    if not 2 <= n_cubes <= MAX_CUBES or not 1 <= n_items <= n_cubes:
        raise ValueError(
            f"TouchSequenceCued needs 2 <= n_cubes <= {MAX_CUBES} and 1 <= n_items <= n_cubes; "
            f"got n_cubes={n_cubes}, n_items={n_items}"
        )
    if item_steps < 1 or delay_steps < 0:
        raise ValueError(
            f"TouchSequenceCued needs item_steps >= 1 and delay_steps >= 0; got item_steps="
            f"{item_steps}, delay_steps={delay_steps}"
        )


class TouchSequenceCued(CuedTableEnv):
    """The robosuite env (registered with robosuite under this class name)."""

    def __init__(
        self,
        robots,
        *,
        n_cubes: int = N_CUBES,  # identical cubes in a row, 2..MAX_CUBES
        n_items: int = N_ITEMS,  # length of the cued sequence, 1..n_cubes
        item_steps: int = ITEM_STEPS,  # observations each item is shown; cue = n_items * this
        delay_steps: int = DELAY_STEPS,  # further held-still steps after the cue
        **kwargs: Any,
    ):
        _check_sizes(n_cubes, n_items, item_steps, delay_steps)
        if "cue_steps" in kwargs:
            raise ValueError(
                "TouchSequenceCued: the cue lasts n_items * item_steps observations; pass "
                f"item_steps (got cue_steps={kwargs['cue_steps']})"
            )
        self.n_cubes, self.n_items, self.item_steps = int(n_cubes), int(n_items), int(item_steps)
        self.N_CHOICES = self.n_cubes  # one pad per cube (CuedTableEnv's `pad{i}_vis`)
        # Every ordered sequence; the cue is an index into this list.
        self._codes = OrderedCues(self.n_cubes, self.n_items, "cubes")
        self.cues = len(self._codes)
        self.progress = 0  # items touched so far, in order
        self.failed = False  # a cube was touched out of order, or a non-target one
        super().__init__(
            robots, cue_steps=self.n_items * self.item_steps, delay_steps=delay_steps, **kwargs
        )

    # --- cue ---
    def sequence_of(self, cue: int) -> tuple[int, ...]:
        """The cubes, in order, of cue index `cue`."""
        return self._codes.sequence_of(cue)

    def cue_of(self, sequence: Sequence[int]) -> int:
        """The cue index of an ordered sequence of `n_items` distinct cubes."""
        return self._codes.cue_of(sequence)

    @property
    def sequence(self) -> tuple[int, ...]:
        """This episode's cubes in touching order (privileged)."""
        return self._codes.sequences[self.cue]

    def configure_episode(self, seed: int, options: dict[str, Any]) -> None:
        """Called by the wrapper before each reset: the cue (an index or a sequence, forced, or
        drawn from the seed)."""
        unknown = set(options) - {"cue"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected only 'cue'")
        if "cue" in options:
            value = options["cue"]
            if isinstance(value, (int, np.integer)):
                self.sequence_of(int(value))  # checks the range
                self.cue = int(value)
            else:
                self.cue = self.cue_of(value)
        else:
            self.cue = int(np.random.default_rng([seed, CUE_SALT]).integers(self.cues))

    def lit_pad(self, t: int) -> int:
        """The slot whose pad observation t shows green, or -1 after the cue."""
        return self.sequence[t // self.item_steps] if t < self.cue_steps else -1

    def _paint_cue(self, t: int) -> None:
        lit = self.lit_pad(t)
        for i, gid in enumerate(self._cue_geom_ids):
            self.sim.model.geom_rgba[gid] = GREEN if i == lit else GREY

    def extra_state(self) -> np.ndarray:
        return np.array([float(self.cue), float(self.progress), float(self.failed)])

    def set_extra_state(self, extra: np.ndarray) -> None:
        self.progress, self.failed = int(round(float(extra[1]))), bool(round(float(extra[2])))
        super().set_extra_state(extra)  # the cue, and the pads' colours

    # --- scene ---
    def _add_objects(self):
        self.cubes = [_cube(f"cube{k}") for k in range(self.n_cubes)]
        jitter = np.array([[-JITTER_X, JITTER_X], [-JITTER_Y, JITTER_Y]])  # (x, y) ranges
        samplers = [
            self._sampler(f"slot{k}", cube, *(c[:2, None] + jitter))  # relative to the table
            for k, (cube, c) in enumerate(zip(self.cubes, slot_centers(self.n_cubes, 0.0)))
        ]
        return self.cubes, samplers

    def _extra_bodies(self):
        return _pad_bodies(slot_centers(self.n_cubes, self.table_offset[2]), PAD_HALF_X, PAD_HALF_Y)

    def _setup_references(self):
        super()._setup_references()
        self.cube_body_ids = [self.sim.model.body_name2id(c.root_body) for c in self.cubes]

    def _object_sensors(self):
        sensors = []
        for k in range(self.n_cubes):
            sensors += self._body_sensors(f"cube{k}", lambda k=k: self.cube_body_ids[k])
        return sensors

    def _reset_internal(self):
        super()._reset_internal()
        self.progress, self.failed = 0, False

    # --- touches ---
    def touching(self) -> list[int]:
        """Slots of the cubes the gripper is in contact with now."""
        gripper = self.robots[0].gripper["right"]
        return [k for k, cube in enumerate(self.cubes) if self.check_contact(gripper, cube)]

    def _post_action(self, action):
        # After the physics of a step, before robosuite computes its reward: count touches.
        touching = self.touching()
        seq = self.sequence
        while self.progress < self.n_items and seq[self.progress] in touching:
            self.progress += 1  # the next item, in order
        if any(k not in seq[: self.progress] for k in touching):
            self.failed = True  # a non-target cube, or a target out of order
        return super()._post_action(action)

    def _check_success(self):
        return self.progress == self.n_items

    def _check_failure(self):
        return self.failed


class TouchSequenceCuedExpert(experts.ArmExpert):
    """Touches the cued cubes in order with the closed gripper (privileged cue and progress).

    Per item: move to `hover` above the cube's top (gripper closing on the way), press down on
    its centre until the env counts the touch, rise straight up, go to the next. While the env
    holds the arm (cue + delay) the labels are the move towards the first cube (ArmExpert.act
    says why). A press that registers no touch in `press_limit` steps rises and tries again.
    """

    hover = 0.05  # m above the cube top while moving between cubes
    press_depth = 0.02  # m below the cube top the grip site aims at (the fingertips touch first)
    press_gain = 0.6  # slower descent: touch, do not hit
    press_limit = 30  # steps of pressing before rising to try again

    def reset(self) -> None:
        super().reset()
        self.phase, self.phase_t = "above", 0
        self.touched = 0  # the env's progress when last seen

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_t = phase, 0

    def target_item(self) -> int:
        """The slot of the cube to touch next (the last one once all are touched)."""
        s = self.suite
        return s.sequence[min(s.progress, s.n_items - 1)]

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        s = self.suite
        self.phase_t += 1
        if s.progress > self.touched:  # the touch counted: up, then on to the next cube
            self.touched = s.progress
            self._goto("rise")
        mat = self.gripper_mat(None)  # top-down, as at the start (touching ignores yaw)
        eef = self.eef_pos()
        top = self.body_pos(s.cube_body_ids[self.target_item()]) + np.array([0.0, 0.0, CUBE_HALF])
        if self.phase == "rise":
            target = np.array([eef[0], eef[1], top[2] + self.hover])
            if eef[2] > top[2] + self.hover - 0.03 or self.phase_t > 20:
                self._goto("above")
            return self.move(target, mat, experts.CLOSE)
        if self.phase == "above":
            target = top + np.array([0.0, 0.0, self.hover])
            err = target - eef
            if (np.linalg.norm(err[:2]) < 0.02 and abs(err[2]) < 0.03) or self.phase_t > 60:
                self._goto("press")
            return self.move(target, mat, experts.CLOSE)
        if self.phase_t > self.press_limit:
            self._goto("rise")
        target = top - np.array([0.0, 0.0, self.press_depth])
        return self.move(target, mat, experts.CLOSE, gain=self.press_gain)


class TouchSequenceCuedEnv(RobosuiteTask):
    """The gymnasium env (`envs/base.py`); `horizon` grows with the delay: by default
    MOVE_STEPS_PER_ITEM steps per item to act after the cue and the delay, whatever the delay.
    Size and schedule arguments given here override those in `suite_kwargs` (env_args)."""

    ENV_NAME = "TouchSequenceCued"
    # Cue values at the default sizes (an env's own `cues` counts its sizes); reset(options=
    # {"cue": i}) forces one (see envs/base.py).
    cues = math.perm(N_CUBES, N_ITEMS)

    def __init__(
        self,
        *,
        n_cubes: int | None = None,  # None: suite_kwargs' or N_CUBES
        n_items: int | None = None,  # None: suite_kwargs' or N_ITEMS
        item_steps: int | None = None,  # None: suite_kwargs' or ITEM_STEPS
        delay_steps: int | None = None,  # None: suite_kwargs' or DELAY_STEPS
        horizon: int | None = None,  # None: cue + delay + MOVE_STEPS_PER_ITEM * n_items
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        image_size: int | Sequence[int] = 84,
        render_quality: str = "fast",
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        suite_kwargs: dict[str, Any] | None = None,
    ):
        kw = dict(suite_kwargs or {})
        given = {"n_cubes": n_cubes, "n_items": n_items, "item_steps": item_steps}
        given["delay_steps"] = delay_steps
        defaults = {"n_cubes": N_CUBES, "n_items": N_ITEMS, "item_steps": ITEM_STEPS}
        defaults["delay_steps"] = DELAY_STEPS
        for name, default in defaults.items():
            value = given[name] if given[name] is not None else kw.get(name, default)
            kw[name] = int(value)
        _check_sizes(kw["n_cubes"], kw["n_items"], kw["item_steps"], kw["delay_steps"])
        held = kw["n_items"] * kw["item_steps"] + kw["delay_steps"]
        if horizon is None:
            horizon = held + MOVE_STEPS_PER_ITEM * kw["n_items"]
        elif horizon <= held:
            raise ValueError(
                f"TouchSequenceCued: horizon={horizon} ends the episode before the arm may move "
                f"(cue + delay = {held} steps); pass horizon > {held}, or none for "
                f"{MOVE_STEPS_PER_ITEM} steps per item after the cue and delay"
            )
        super().__init__(
            cameras=cameras,
            image_size=image_size,
            horizon=horizon,
            render_quality=render_quality,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
            suite_kwargs=kw,
        )
        self.cues = self.suite.cues  # this env's sizes

    @property
    def cue(self) -> int:
        return self.suite.cue

    @property
    def sequence(self) -> tuple[int, ...]:
        return self.suite.sequence

    @property
    def progress(self) -> int:
        return self.suite.progress

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "cue": self.cue, "sequence": self.sequence, "progress": 0}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "progress": self.suite.progress}

"""Memory tasks on robosuite: the right action depends on a cue that is gone when it matters.

`ttm/LiftCued-v0`  two identical red cubes (left, right), each on a grey square. During the
                   first `cue_steps` observations the square under the target cube is green;
                   then both are grey again. Success:
                   the target cube lifted 4 cm. Lifting the other one ends the episode as a
                   failure (terminated, success False).
`ttm/PlaceCued-v0` one red cube and two grey pads (left, right). During the cue the
                   destination pad is green. Success: the cube rests on the marked pad, released.
                   Leaving it on the other pad ends the episode as a failure.

Schedule (t = number of steps taken; observation t is the one returned after step t, 0 = reset):
    observations 0 .. cue_steps-1           show the cue
    actions of steps 1 .. cue_steps+delay   replaced by "hold still" (zero OSC delta, gripper
                                            open): the arm's pose cannot carry the cue
The cue only changes geom colours (model.geom_rgba), never physics, so two episodes with the
same scene seed and different cues are byte-identical after the cue, in every observation.
The `object` observation lists both cubes (LiftCued) in a fixed left/right order, and for
PlaceCued the cube only: it does not reveal the cue.

The cue is not part of MuJoCo's state, so `get_sim_state()` appends it: [time, qpos, qvel, cue]
(robosuite's `set_state_from_flattened` ignores trailing entries; `set_sim_state` restores it).
`reset(options={"cue": i})` forces the cue; otherwise it is drawn from the reset seed with a
generator separate from the scene's, so the scene does not depend on the cue.
"""

from __future__ import annotations

from typing import Any

from envs import experts, gl

gl.setup()  # before robosuite is imported: it picks its GL backend then

import numpy as np  # noqa: E402
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv  # noqa: E402
from robosuite.models.arenas import TableArena  # noqa: E402
from robosuite.models.objects import BoxObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.mjcf_utils import new_body, new_geom  # noqa: E402
from robosuite.utils.observables import Observable, sensor  # noqa: E402
from robosuite.utils.placement_samplers import (  # noqa: E402
    SequentialCompositeSampler,
    UniformRandomSampler,
)
from robosuite.utils.transform_utils import convert_quat  # noqa: E402

from envs.robosuite_tasks import RobosuiteTask  # noqa: E402

RED = (0.8, 0.1, 0.1, 1.0)
GREEN = (0.1, 0.8, 0.1, 1.0)
GREY = (0.55, 0.55, 0.55, 1.0)
CUBE_HALF = 0.02  # m (fixed size: nothing about the scene is drawn at model build)
LIFT_MARGIN = 0.04  # m above the table counts as lifted (as robosuite's Lift)
CUE_SALT = 0xC0E  # seeds the cue generator: default_rng([scene seed, CUE_SALT])


class CuedTableEnv(ManipulationEnv):
    """Shared scaffolding: table scene, cue schedule, hold-still, cue in the saved state.

    Subclasses build their objects (`_add_objects`) and two grey pads `pad0`/`pad1`
    (`_extra_bodies`, one per choice; the cued one turns green) and define `_check_success` /
    `_check_failure`.
    """

    N_CHOICES = 2

    def __init__(
        self,
        robots,
        *,
        cue_steps: int = 10,  # observations showing the cue (from the reset one on)
        delay_steps: int = 0,  # further held-still steps after the cue
        table_full_size=(0.8, 0.8, 0.05),
        table_friction=(1.0, 5e-3, 1e-4),
        use_object_obs: bool = True,
        reward_scale: float | None = 1.0,
        reward_shaping: bool = False,  # accepted for robosuite compatibility; reward is sparse
        **kwargs: Any,
    ):
        if cue_steps < 1 or delay_steps < 0:
            raise ValueError(
                f"need cue_steps >= 1 and delay_steps >= 0; got {cue_steps}, {delay_steps}"
            )
        self.cue_steps, self.delay_steps = int(cue_steps), int(delay_steps)
        self.table_full_size, self.table_friction = table_full_size, table_friction
        self.table_offset = np.array((0.0, 0.0, 0.8))
        self.use_object_obs = use_object_obs
        self.reward_scale, self.reward_shaping = reward_scale, reward_shaping
        self.cue = 0
        self.placement_initializer = None
        super().__init__(robots=robots, base_types="default", **kwargs)

    # --- cue ---
    def configure_episode(self, seed: int, options: dict[str, Any]) -> None:
        """Called by the wrapper before each reset: pick the cue (forced or from the seed)."""
        unknown = set(options) - {"cue"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected only 'cue'")
        if "cue" in options:
            cue = options["cue"]
            if cue not in range(self.N_CHOICES):
                raise ValueError(f"options['cue']={cue!r}; expected 0..{self.N_CHOICES - 1}")
            self.cue = int(cue)
        else:
            self.cue = int(np.random.default_rng([seed, CUE_SALT]).integers(self.N_CHOICES))

    def _show_cue(self, visible: bool) -> None:
        for i, gid in enumerate(self._cue_geom_ids):
            self.sim.model.geom_rgba[gid] = GREEN if (visible and i == self.cue) else GREY

    def _paint_cue(self, t: int) -> None:
        """Colour the pads as observation t (0 = reset) shows them: here the cued pad is green
        while t < cue_steps. A task whose cue changes within the cue phase overrides this."""
        self._show_cue(t < self.cue_steps)

    def holding_still(self) -> bool:
        """True while the next step's action will be replaced by `hold_action`."""
        return self.timestep < self.cue_steps + self.delay_steps

    @staticmethod
    def hold_action() -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, -1.0])  # zero OSC delta, gripper open

    def extra_state(self) -> np.ndarray:
        return np.array([float(self.cue)])

    def set_extra_state(self, extra: np.ndarray) -> None:
        self.cue = int(round(float(extra[0])))
        self._paint_cue(self.timestep)

    def step(self, action):
        if self.holding_still():
            action = self.hold_action()
        # Images of this step are rendered inside super().step(): set the colours first.
        self._paint_cue(self.timestep + 1)
        return super().step(action)

    # --- scene ---
    def _load_model(self):
        super()._load_model()
        xpos = self.robots[0].robot_model.base_xpos_offset["table"](self.table_full_size[0])
        self.robots[0].robot_model.set_base_xpos(xpos)
        arena = TableArena(
            table_full_size=self.table_full_size,
            table_friction=self.table_friction,
            table_offset=self.table_offset,
        )
        arena.set_origin([0, 0, 0])
        objects, samplers = self._add_objects()
        self.placement_initializer = SequentialCompositeSampler(name="ObjectSampler")
        for s in samplers:
            self.placement_initializer.append_sampler(s)
        self.model = ManipulationTask(
            mujoco_arena=arena,
            mujoco_robots=[robot.robot_model for robot in self.robots],
            mujoco_objects=objects,
        )
        for body in self._extra_bodies():
            self.model.worldbody.append(body)

    def _sampler(self, name: str, obj, x_range, y_range) -> UniformRandomSampler:
        return UniformRandomSampler(
            name=name,
            mujoco_objects=obj,
            x_range=x_range,
            y_range=y_range,
            rotation=None,  # any yaw
            ensure_object_boundary_in_range=False,
            ensure_valid_placement=True,
            reference_pos=self.table_offset,
            z_offset=0.01,
            rng=self.rng,
        )

    def _extra_bodies(self) -> list:
        return []

    def _setup_references(self):
        super()._setup_references()
        self._cue_geom_ids = [  # the pad of each choice
            self.sim.model.geom_name2id(f"pad{i}_vis") for i in range(self.N_CHOICES)
        ]

    def _reset_internal(self):
        super()._reset_internal()
        if not self.deterministic_reset:
            for pos, quat, obj in self.placement_initializer.sample().values():
                self.sim.data.set_joint_qpos(obj.joints[0], np.concatenate([pos, quat]))
        self._paint_cue(0)

    def _body_sensors(self, prefix: str, body_id_fn) -> list:
        @sensor(modality="object")
        def pos(obs_cache):
            return np.array(self.sim.data.body_xpos[body_id_fn()])

        @sensor(modality="object")
        def quat(obs_cache):
            return convert_quat(np.array(self.sim.data.body_xquat[body_id_fn()]), to="xyzw")

        pos.__name__, quat.__name__ = f"{prefix}_pos", f"{prefix}_quat"
        return [pos, quat]

    def _setup_observables(self):
        observables = super()._setup_observables()
        if self.use_object_obs:
            for s in self._object_sensors():
                observables[s.__name__] = Observable(
                    name=s.__name__, sensor=s, sampling_rate=self.control_freq
                )
        return observables

    def _lifted(self, body_id: int) -> bool:
        return float(self.sim.data.body_xpos[body_id][2]) > self.table_offset[2] + LIFT_MARGIN

    def reward(self, action=None):
        r = 1.0 if self._check_success() else 0.0
        return r * (self.reward_scale or 1.0)


def _pad_bodies(centers: np.ndarray, half: float, half_y: float | None = None) -> list:
    """Flat, visual-only rectangles on the table (no contacts), named as CuedTableEnv expects
    (`pad{i}`, geom `pad{i}_vis`): one body per centre (3,), `half` x `half_y` half-sides
    (squares unless `half_y`)."""
    bodies = []
    for i, c in enumerate(centers):
        body = new_body(name=f"pad{i}", pos=(c[0], c[1], c[2] + 0.001))
        body.append(
            new_geom(
                name=f"pad{i}_vis",
                type="box",
                size=(half, half if half_y is None else half_y, 0.001),
                group=1,
                rgba=GREY,
                contype=0,
                conaffinity=0,
            )
        )
        bodies.append(body)
    return bodies


def _cube(name: str) -> BoxObject:
    return BoxObject(
        name=name, size_min=[CUBE_HALF] * 3, size_max=[CUBE_HALF] * 3, rgba=list(RED), material=None
    )


MARK_Y = 0.12  # m, LiftCued's cubes start within MARK_HALF of (0, -MARK_Y) and (0, +MARK_Y)
MARK_HALF = 0.06  # m, half side of the square under each cube's start area


class LiftCued(CuedTableEnv):
    """Two identical red cubes, each on a grey square; lift the one whose square was green during
    the cue. (The squares make the cue ~250 pixels at 64x64; when the cue was the cube itself
    turning green, ~65 pixels, trained policies often missed it. The squares are visual only,
    like PlaceCued's pads.)"""

    def _add_objects(self):
        self.cubes = [_cube("cube_left"), _cube("cube_right")]
        samplers = [
            self._sampler("left", self.cubes[0], [-0.05, 0.05], [-0.16, -0.08]),
            self._sampler("right", self.cubes[1], [-0.05, 0.05], [0.08, 0.16]),
        ]
        return self.cubes, samplers

    def _extra_bodies(self):
        top = self.table_offset[2]
        centers = np.array([[0.0, -MARK_Y, top], [0.0, MARK_Y, top]])
        return _pad_bodies(centers, MARK_HALF)

    def _setup_references(self):
        super()._setup_references()
        self.cube_body_ids = [self.sim.model.body_name2id(c.root_body) for c in self.cubes]

    def _object_sensors(self):
        return self._body_sensors("cube_left", lambda: self.cube_body_ids[0]) + self._body_sensors(
            "cube_right", lambda: self.cube_body_ids[1]
        )

    @property
    def target_body_id(self) -> int:
        return self.cube_body_ids[self.cue]

    def _check_success(self):
        return self._lifted(self.cube_body_ids[self.cue])

    def _check_failure(self):
        return self._lifted(self.cube_body_ids[1 - self.cue])


PAD_HALF = 0.05  # m, half side of a destination pad
PAD_Y = 0.18  # m, pads at y = -PAD_Y (left) and +PAD_Y (right), x = 0


class PlaceCued(CuedTableEnv):
    """One cube, two pads; put the cube on the pad that was green during the cue."""

    def _add_objects(self):
        self.cube = _cube("cube")
        return [self.cube], [self._sampler("cube", self.cube, [-0.06, 0.0], [-0.06, 0.06])]

    def pad_centers(self) -> np.ndarray:
        """(2, 3) pad centres on the table top, left then right (m, world)."""
        top = self.table_offset[2]
        return np.array([[0.0, -PAD_Y, top], [0.0, PAD_Y, top]])

    def _extra_bodies(self):
        return _pad_bodies(self.pad_centers(), PAD_HALF)

    def _setup_references(self):
        super()._setup_references()
        self.cube_body_id = self.sim.model.body_name2id(self.cube.root_body)

    def _object_sensors(self):
        return self._body_sensors("cube", lambda: self.cube_body_id)

    def _rests_on(self, pad: int) -> bool:
        pos = self.sim.data.body_xpos[self.cube_body_id]
        c = self.pad_centers()[pad]
        on_pad = abs(pos[0] - c[0]) < PAD_HALF and abs(pos[1] - c[1]) < PAD_HALF
        low = pos[2] < c[2] + CUBE_HALF + 0.01
        held = self._check_grasp(gripper=self.robots[0].gripper, object_geoms=self.cube)
        return bool(on_pad and low and not held)

    def _check_success(self):
        return self._rests_on(self.cue)

    def _check_failure(self):
        return self._rests_on(1 - self.cue)


# ------------------------------------------------------------------------------ experts
class LiftCuedExpert(experts.PickPlaceExpert):
    """Waits out cue + delay (ArmExpert.act), then lifts the cued cube (privileged cue)."""

    def grasp_target(self):
        return experts.cube_grasp(self, self.suite.target_body_id)


class PlaceCuedExpert(experts.PickPlaceExpert):
    """Puts the cube down at a point drawn anywhere on the central part of the cued pad (not
    always at its centre), so that its demonstrations open the gripper wherever the cube is
    low over the pad, not only at one exact spot that a policy may miss by a centimetre or two."""

    carry_height = 0.12
    place_spread = 0.02  # m: the release point is uniform in +-place_spread (x, y) of the centre
    carry_tolerance = release_tolerance = 0.02

    def reset(self) -> None:
        super().reset()
        self.place_offset = np.array([*self.rng.uniform(-1, 1, 2) * self.place_spread, 0.0])

    def grasp_target(self):
        return experts.cube_grasp(self, self.suite.cube_body_id)

    def place_target(self):
        centre = self.suite.pad_centers()[self.suite.cue]
        return centre + self.place_offset + np.array([0.0, 0.0, CUBE_HALF + 0.005])


# ------------------------------------------------------------------------- gym envs
class _CuedTask(RobosuiteTask):
    """RobosuiteTask taking `cue_steps` / `delay_steps`; horizon grows with them: by default
    DEFAULT_HORIZON steps to act after the cue and the delay, whatever the delay."""

    cues = CuedTableEnv.N_CHOICES  # cue values; reset(options={"cue": i}) forces one

    def __init__(
        self,
        *,
        cue_steps: int | None = None,
        delay_steps: int | None = None,
        horizon: int | None = None,
        suite_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        suite_kwargs = dict(suite_kwargs or {})
        suite_kwargs["cue_steps"] = int(
            cue_steps if cue_steps is not None else suite_kwargs.get("cue_steps", 10)
        )
        suite_kwargs["delay_steps"] = int(
            delay_steps if delay_steps is not None else suite_kwargs.get("delay_steps", 0)
        )
        held = suite_kwargs["cue_steps"] + suite_kwargs["delay_steps"]
        if horizon is None:
            horizon = self.DEFAULT_HORIZON + held
        elif horizon <= held:
            raise ValueError(
                f"{self.ENV_NAME}: horizon={horizon} ends the episode before the arm may move "
                f"(cue_steps + delay_steps = {held}); pass horizon > {held}, or none for "
                f"{self.DEFAULT_HORIZON} steps after the cue and delay"
            )
        super().__init__(horizon=horizon, suite_kwargs=suite_kwargs, **kwargs)

    @property
    def cue(self) -> int:
        return self.suite.cue


class LiftCuedEnv(_CuedTask):
    ENV_NAME = "LiftCued"
    DEFAULT_HORIZON = 120


class PlaceCuedEnv(_CuedTask):
    ENV_NAME = "PlaceCued"
    DEFAULT_HORIZON = 150

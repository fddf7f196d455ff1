"""Scripted experts for the robosuite tasks, using privileged simulator state (object poses).

Every expert outputs the action the policy will output: (7,) in [-1, 1], OSC_POSE delta
position (x 0.05 m), delta axis-angle (x 0.5 rad, world/base frame), gripper (-1 open,
+1 close). Gaussian noise of std `noise` is added to all 7 entries (then clipped) for diverse
demonstrations.

The pick-and-place experts share one state machine (`PickPlaceExpert`):

    above -> descend -> close -> lift [-> carry -> lower -> release -> retreat]

Each task subclass says only where to grasp (`grasp_target`: point and closing direction)
and where the grasped point should be released (`place_target`). If the object falls out of
the hand while carrying, the expert goes back to `above`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from scipy.spatial.transform import Rotation

POS_SCALE = 0.05  # m per unit action (OSC_POSE output_max)
ROT_SCALE = 0.5  # rad per unit action
OPEN, CLOSE = -1.0, 1.0


class Expert(Protocol):
    def reset(self) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


def _yaw(mat: np.ndarray) -> float:
    """Heading of a body's local x axis in the world xy plane (rad)."""
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


def _wrap(angle: float, period: float) -> float:
    """Angle mapped into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


class ArmExpert:
    """Helpers shared by all experts: poses from the sim and the action that moves there."""

    def __init__(self, task: Any, *, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.task = task  # the RobosuiteTask wrapper (privileged access through task.suite)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.reset()

    @property
    def suite(self):
        return self.task.suite

    # --- simulator reads (world frame) ---
    def eef_pos(self) -> np.ndarray:
        robot = self.suite.robots[0]
        return np.array(self.suite.sim.data.site_xpos[robot.eef_site_id["right"]])

    def eef_mat(self) -> np.ndarray:
        robot = self.suite.robots[0]
        return np.array(self.suite.sim.data.site_xmat[robot.eef_site_id["right"]]).reshape(3, 3)

    def body_pos(self, body_id: int) -> np.ndarray:
        return np.array(self.suite.sim.data.body_xpos[body_id])

    def body_mat(self, body_id: int) -> np.ndarray:
        return np.array(self.suite.sim.data.body_xmat[body_id]).reshape(3, 3)

    def table_z(self) -> float:
        """Height of the surface objects rest on (PickPlace: the bins' base)."""
        s = self.suite
        return float(s.table_offset[2] if hasattr(s, "table_offset") else s.bin1_pos[2])

    def closing_axis(self) -> np.ndarray:
        """World direction between the two finger pads (unit, xy plane)."""
        sim, g = self.suite.sim, self.suite.robots[0].gripper["right"]
        left = sim.data.geom_xpos[sim.model.geom_name2id(g.important_geoms["left_fingerpad"][0])]
        right = sim.data.geom_xpos[sim.model.geom_name2id(g.important_geoms["right_fingerpad"][0])]
        d = np.array(left - right)
        d[2] = 0.0
        return d / (np.linalg.norm(d) + 1e-9)

    # --- actions ---
    def reset(self) -> None:
        self.home_mat: np.ndarray | None = None  # top-down orientation at the episode start
        self.home_closing_yaw = 0.0

    def _remember_home(self) -> None:
        if self.home_mat is None:
            self.home_mat = self.eef_mat()
            c = self.closing_axis()
            self.home_closing_yaw = float(np.arctan2(c[1], c[0]))

    def gripper_mat(self, closing_yaw: float | None, symmetry: float = np.pi) -> np.ndarray:
        """Top-down orientation whose finger-closing axis points along `closing_yaw` (rad,
        modulo `symmetry`, turning the least from home); None keeps the home orientation."""
        self._remember_home()
        if closing_yaw is None:
            return self.home_mat
        turn = _wrap(closing_yaw - self.home_closing_yaw, symmetry)
        return Rotation.from_rotvec([0.0, 0.0, turn]).as_matrix() @ self.home_mat

    def move(self, target: np.ndarray, mat: np.ndarray, gripper: float, gain: float = 1.0):
        """Action moving the grip site toward `target` (m) and orientation `mat` (3, 3)."""
        a = np.zeros(7)
        a[:3] = gain * (target - self.eef_pos()) / POS_SCALE
        err = Rotation.from_matrix(mat @ self.eef_mat().T).as_rotvec()  # world-frame axis-angle
        a[3:6] = err / ROT_SCALE
        a[6] = gripper
        return np.clip(a, -1.0, 1.0)

    def finish(self, a: np.ndarray) -> np.ndarray:
        if self.noise > 0:
            a = a + self.rng.normal(0.0, self.noise, size=7)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._remember_home()
        hold = getattr(self.suite, "holding_still", None)
        if hold is not None and hold():
            # Cued tasks replace this step's action by "hold still". The label is the move the
            # expert intends instead (as on PointCue): with hold-still labels no action label
            # depends on the cue until the arm leaves, and BC learns to stand still and guess.
            # The held step must not advance the expert's phases, so they are restored.
            saved = dict(vars(self))
            action = self.finish(self._act(obs))
            self.__dict__.update(saved)
            return action
        return self.finish(self._act(obs))

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class PickPlaceExpert(ArmExpert):
    """Grasp an object, lift it, and (if `place_target` gives a point) carry and release it."""

    hover = 0.10  # m above the grasp point before descending
    carry_height = 0.15  # m above the table while carrying (Lift: final height)
    close_steps = 10  # control steps to close the gripper
    release_steps = 8
    lower_gain = 0.6  # slower approach when placing
    carry_tolerance = 0.01  # m (xy) above the place point before lowering
    release_tolerance = 0.01  # m, grip site to its place target before opening

    def reset(self) -> None:
        super().reset()
        self.phase, self.phase_t = "above", 0
        self.held_offset = np.zeros(3)  # object reference point - grip site, at grasp

    # --- task-specific ---
    def grasp_target(self) -> tuple[np.ndarray, float | None, float]:
        """(grasp point (3,) m, finger-closing yaw or None, yaw symmetry period)."""
        raise NotImplementedError

    def object_ref(self) -> np.ndarray:
        """A point on the object that moves rigidly with it (to tell whether it is held)."""
        return self.grasp_target()[0]

    def place_target(self) -> np.ndarray | None:
        """Where `object_ref` should be when releasing; None: just lift."""
        return None

    def carry_turn(self) -> float:
        """Yaw (rad) to turn the held object by while carrying it (e.g. to align a nut)."""
        return 0.0

    # --- state machine ---
    def _goto(self, phase: str) -> None:
        self.phase, self.phase_t = phase, 0

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.phase_t += 1
        grasp, yaw, sym = self.grasp_target()
        eef = self.eef_pos()
        if self.phase in ("above", "descend", "close"):
            self.grasp_mat = self.gripper_mat(yaw, sym)
        mat = self.grasp_mat

        if self.phase == "above":
            target = grasp + np.array([0.0, 0.0, self.hover])
            err = target - eef
            rot_err = np.linalg.norm(Rotation.from_matrix(mat @ self.eef_mat().T).as_rotvec())
            if (np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.03 and rot_err < 0.08) or (
                self.phase_t > 80
            ):
                self._goto("descend")
            return self.move(target, mat, OPEN)
        if self.phase == "descend":
            err = grasp - eef
            if np.linalg.norm(err) < 0.008 or self.phase_t > 40:
                self._goto("close")
            return self.move(grasp, mat, OPEN)
        if self.phase == "close":
            if self.phase_t >= self.close_steps:
                self.held_offset = self.object_ref() - eef
                self.grasp_xy = eef[:2].copy()
                turn = Rotation.from_rotvec([0.0, 0.0, self.carry_turn()]).as_matrix()
                self.carry_mat = turn @ mat
                self.carry_offset = turn @ self.held_offset  # held_offset after the turn
                self._goto("lift")
            return self.move(grasp, mat, CLOSE)

        # Held: the object reference keeps its distance to the grip site (turn-invariant).
        dist = np.linalg.norm(self.object_ref() - eef)
        held = abs(dist - np.linalg.norm(self.held_offset)) < 0.02
        if self.phase in ("lift", "carry", "lower") and not held:
            self._goto("above")  # dropped it: try again
            return self.move(eef + np.array([0.0, 0.0, 0.05]), mat, OPEN)
        lift_z = self.table_z() + self.carry_height
        place = self.place_target()
        if self.phase == "lift":
            target = np.array([*self.grasp_xy, max(lift_z, eef[2])])
            if place is not None and eef[2] > lift_z - 0.02:
                self._goto("carry")
            return self.move(target, mat, CLOSE)
        mat = self.carry_mat
        # Targets for the grip site so that the object reference lands on `place`.
        site_place = place - self.carry_offset
        if self.phase == "carry":
            target = np.array([site_place[0], site_place[1], max(lift_z, site_place[2] + 0.05)])
            close_xy = np.linalg.norm((target - eef)[:2]) < self.carry_tolerance
            if (close_xy and abs(target[2] - eef[2]) < 0.03) or self.phase_t > 80:
                self._goto("lower")
            return self.move(target, mat, CLOSE)
        if self.phase == "lower":
            if np.linalg.norm(site_place - eef) < self.release_tolerance or self.phase_t > 40:
                self._goto("release")
            return self.move(site_place, mat, CLOSE, gain=self.lower_gain)
        if self.phase == "release":
            if self.phase_t >= self.release_steps:
                self._goto("retreat")
            return self.move(eef, mat, OPEN)
        # retreat: straight up, open
        return self.move(np.array([eef[0], eef[1], lift_z + 0.05]), mat, OPEN)


def cube_grasp(expert: ArmExpert, body_id: int) -> tuple[np.ndarray, float, float]:
    """Grasp a cube at its centre, fingers across two faces (90-degree symmetry)."""
    return expert.body_pos(body_id), _yaw(expert.body_mat(body_id)), np.pi / 2


class LiftExpert(PickPlaceExpert):
    def grasp_target(self):
        return cube_grasp(self, self.suite.cube_body_id)


class StackExpert(PickPlaceExpert):
    """Pick cubeA, put it on cubeB."""

    def grasp_target(self):
        return cube_grasp(self, self.suite.cubeA_body_id)

    def place_target(self):
        top = self.body_pos(self.suite.cubeB_body_id)
        half_b = self.suite.cubeB.size[2]
        half_a = self.suite.cubeA.size[2]
        return top + np.array([0.0, 0.0, half_b + half_a + 0.01])


class PickPlaceCanExpert(PickPlaceExpert):
    """Pick the can from bin 1, drop it into its compartment of bin 2."""

    carry_height = 0.2  # clears the bin walls; higher is out of reach above bin 2
    carry_tolerance = 0.02

    def grasp_target(self):
        s = self.suite
        return self.body_pos(s.obj_body_id[s.obj_to_use]), None, np.pi

    def place_target(self):
        s = self.suite
        # The can's compartment centre is at the edge of the arm's reach; aim halfway between
        # it and the bin centre (still >= 4 cm inside the compartment).
        spot = s.target_bin_placements[s.object_to_id[s.obj_to_use.lower()]]
        spot = 0.5 * (spot + s.bin2_pos)
        return np.array([spot[0], spot[1], s.bin2_pos[2] + 0.08])


class NutAssemblySquareExpert(PickPlaceExpert):
    """Grasp the square nut by its handle, drop it over the square peg."""

    carry_height = 0.2
    hover = 0.08

    def _nut(self):
        s = self.suite
        return s.obj_body_id[s.obj_to_use]

    def grasp_target(self):
        s = self.suite
        nut = s.nuts[s.nut_id]
        handle = np.array(
            s.sim.data.site_xpos[s.sim.model.site_name2id(nut.important_sites["handle"])]
        )
        # The handle runs along the nut's local x; close the fingers across it (local y).
        return handle, _yaw(self.body_mat(self._nut())) + np.pi / 2, np.pi

    def object_ref(self):
        return self.body_pos(self._nut())

    def carry_turn(self):
        # The square hole must line up with the square peg (axis-aligned): turn the nut's yaw
        # to the nearest multiple of 90 degrees.
        return -_wrap(_yaw(self.body_mat(self._nut())), np.pi / 2)

    def place_target(self):
        peg = self.body_pos(self.suite.peg1_body_id)
        return np.array([peg[0], peg[1], self.table_z() + 0.03])


class DoorExpert(ArmExpert):
    """Grasp the lever handle across its thickness, press it down to free the latch, then
    pull the door open."""

    def reset(self) -> None:
        super().reset()
        self.phase, self.phase_t = "above", 0

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_t = phase, 0

    def _door_normal(self) -> np.ndarray:
        """Unit xy normal of the door panel (the latch axis), on the side of the world origin
        (table centre), which is the side the door swings open to."""
        s = self.suite
        n = self.body_mat(s.object_body_ids["latch"])[:, 1].copy()
        n[2] = 0.0
        n /= np.linalg.norm(n)
        handle = np.array(s._handle_xpos)
        return n if np.dot(n[:2], -handle[:2]) >= 0 else -n

    def _act(self, obs):
        s = self.suite
        self.phase_t += 1
        handle = np.array(s._handle_xpos)
        normal = self._door_normal()
        mat = self.gripper_mat(float(np.arctan2(normal[1], normal[0])), np.pi)
        eef = self.eef_pos()
        if self.phase == "above":
            target = handle + np.array([0.0, 0.0, 0.08])
            # The fingers may touch the door frame ~2 cm short of the lever tip: good enough.
            if np.linalg.norm(target - eef) < 0.025 or self.phase_t > 40:
                self._goto("descend")
            return self.move(target, mat, OPEN)
        if self.phase == "descend":
            if np.linalg.norm(handle - eef) < 0.008 or self.phase_t > 20:
                self._goto("close")
            return self.move(handle, mat, OPEN)
        if self.phase == "close":
            if self.phase_t >= 10:
                self._goto("turn")
            return self.move(handle, mat, CLOSE)
        latch = abs(float(s.sim.data.qpos[s.handle_qpos_addr])) if s.use_latch else np.pi
        if self.phase == "turn":
            if latch > 0.9 or self.phase_t > 40:
                self._goto("pull")
            return self.move(handle + np.array([0.0, 0.0, -0.04]), mat, CLOSE)
        # pull: along the normal, following the handle as the door swings
        return self.move(handle + 0.05 * normal + np.array([0.0, 0.0, -0.01]), mat, CLOSE)

"""The `expert` backend (simulation only): a scripted grasp from the simulated world's ground
truth, answering in GraspVLA's format so the rest of the stack runs closed-loop without weights.

Every cycle it replans from the observed TCP pose (the chunk's anchor) and the commanded
gripper state: approach above the object with the fingers across its narrow side (a round
object: across the line clearest of its neighbours), descend, close, wait for the fingers,
lift; a lift that leaves the object behind opens and tries again. Its raw 4×7 actions (Δxyz,
Δeuler 'sxyz', gripper 0…1) go through the model's own post-processing (`backend.postprocess`).
The bbox per view is the object's box projected through the simulated cameras into the 224 px
model input, as GraspVLA's bbox tokens mean it; the grasp pose is where the TCP will close.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import GRIPPER_CLOSE, Pose, euler_to_matrix, matrix_to_euler
from graspvla_ros.policy.backend import PolicyOutput, postprocess
from graspvla_ros.policy.observation import Observation, Skip
from graspvla_ros.preprocess import MODEL_SIZE, official_crop
from graspvla_ros.sim.scene import CAMERAS, object_spec

# Objects whose fingers must close along their body-frame y axis (elongated along x); every
# other object is grasped across its body x axis (boxes, bars) or is round (any yaw).
CLOSE_ALONG_Y = {"yellow capsule", "white egg"}
ROUND = {"blue cylinder", "green ball", "orange puck"}

# (name → (position xyz, quaternion wxyz)) of every object, or None before the first message.
GroundTruth = Callable[[], "dict[str, tuple[np.ndarray, np.ndarray]] | None"]


@dataclass(frozen=True)
class ExpertSettings:
    approach_height: float = 0.10     # m above the object's centre before descending
    lift: float = 0.20                # m lifted after the fingers closed
    min_tcp_height: float = 0.012     # m, the fingertips stay off the table
    finger_reach: float = 0.06        # m from the TCP to the outside of an open finger
    max_step: float = 0.02            # m per action (0.01 per waypoint)
    max_rotation: float = 0.1         # rad per action
    align_xy: float = 0.008           # m, start descending when this close above the object
    realign_xy: float = 0.02          # m, climb back to the approach height when further off
    close_tolerance: float = 0.006    # m, close when the TCP is this close to the grasp point
    close_rotation: float = 0.08      # rad
    finger_time: float = 1.2          # s between commanding the close and lifting
    release_xy: float = 0.03          # m, a closed gripper this far from the object opens first
    miss_lift: float = 0.03           # m lifted with the object rising less than half of it: missed


OPEN_RAW, CLOSE_RAW = 1.0, 0.0  # raw action gripper values (model space: < 0.4 close, > 0.6 open)


def _rotate_towards(a: np.ndarray, b: np.ndarray, max_angle: float) -> np.ndarray:
    delta = Rotation.from_matrix(b @ a.T)
    angle = delta.magnitude()
    if angle <= max_angle:
        return b
    return Rotation.from_rotvec(delta.as_rotvec() * (max_angle / angle)).as_matrix() @ a


class ExpertBackend:
    name = "expert"

    def __init__(self, ground_truth: GroundTruth, settings: ExpertSettings = ExpertSettings(),
                 width: int = 640, height: int = 480, latency: float = 0.0):
        """`latency` (s): answer no sooner than this after being asked, as the model would (it
        takes ~0.25 s a cycle), so execution strategies are compared at the model's pace."""
        self.ground_truth = ground_truth
        self.s = settings
        self.latency = latency
        self.width, self.height = width, height
        self.crop = official_crop(width, height)
        self.reset()

    def reset(self) -> None:
        self._descending = False
        self._closed_at_ns: int | None = None
        self._lift_from: np.ndarray | None = None
        self._line: float | None = None  # closing line kept for a round object
        self._object_z = 0.0  # the object's height when the fingers closed
        self._missed = False  # the lift left the object behind: open, then approach again

    # --- GraspVLA's answer -----------------------------------------------------------
    def infer(self, obs: Observation, seed: int | None = None) -> PolicyOutput:
        """`seed` is ignored: the expert has no noise."""
        start = time.perf_counter()
        truth = self.ground_truth()
        if truth is None:
            raise Skip("no_ground_truth", "no sim/object_poses yet")
        if obs.target not in truth:
            raise Skip("unknown_object", f"{obs.target!r} is not in the simulated world "
                                         f"(objects: {', '.join(truth)})")
        position, quat_wxyz = truth[obs.target]
        others = [(p, object_spec(n).radius) for n, (p, _) in truth.items() if n != obs.target]
        grasp = self.grasp_pose(obs.target, position, quat_wxyz, obs.anchor.rotation, others)
        actions = self.plan(obs, grasp, float(position[2]))
        bbox = np.array([self.bbox(cam, obs.target, position) for cam in CAMERAS])
        time.sleep(max(0.0, start + self.latency - time.perf_counter()))
        return PolicyOutput(postprocess(actions), bbox, grasp.position.copy(), matrix_to_euler(grasp.rotation),
                            {"model": time.perf_counter() - start})

    def grasp_pose(self, name: str, position, quat_wxyz, current_rotation: np.ndarray,
                   others: list[tuple[np.ndarray, float]] = ()) -> Pose:
        """TCP pose that closes the fingers (which open along the hand's y) across the object's
        narrow side, pointing down, with the yaw nearest to the current one; at the object's
        centre height, where the finger pads are centred on it (lower, a squeezed sphere or
        egg pops up out of the pads). A round object is taken across the line whose open
        fingers stay clearest of the other objects (`others`: position, footprint radius)."""
        body = Rotation.from_quat(np.roll(quat_wxyz, -1)).as_matrix()
        if name in ROUND:
            theta = self._clearest_line(position, current_rotation[:, 1], others)
        else:
            axis = body[:, 1] if name in CLOSE_ALONG_Y else body[:, 0]
            theta = math.atan2(axis[1], axis[0])
        # R = Rz(ψ)·Rx(π): TCP z down, hand y = (sin ψ, −cos ψ, 0) = the closing direction.
        candidates = [euler_to_matrix([-math.pi, 0.0, theta + math.pi / 2 + k * math.pi]) for k in range(-2, 3)]
        rot = min(candidates, key=lambda r: Rotation.from_matrix(r @ current_rotation.T).magnitude())
        z = max(float(position[2]), self.s.min_tcp_height)
        return Pose(np.array([position[0], position[1], z], dtype=float), rot)

    def _clearest_line(self, position, hand_y_now: np.ndarray, others) -> float:
        """Direction (rad) of the closing line through `position` whose open fingers pass
        farthest from the other objects (a fixed set of lines 15° apart; ties go to the line
        nearest the hand's). The line chosen is kept while no other is 1 cm clearer, so the
        hand does not turn back and forth between equally good lines."""
        now = math.atan2(hand_y_now[1], hand_y_now[0])

        def clearance(theta: float) -> float:
            tip = self.s.finger_reach * np.array([math.cos(theta), math.sin(theta)])
            gaps = [np.linalg.norm(np.asarray(p[:2]) - (position[:2] + side * tip)) - r
                    for p, r in others for side in (1, -1)]
            return min(min(gaps, default=np.inf), 0.03)  # 3 cm clear is clear enough

        def off(theta: float) -> float:
            d = abs(theta - now) % math.pi
            return min(d, math.pi - d)

        best = max((math.radians(d) for d in range(0, 180, 15)), key=lambda t: (clearance(t), -off(t)))
        if self._line is None or clearance(best) > clearance(self._line) + 0.01:
            self._line = best
        return self._line

    def plan(self, obs: Observation, grasp: Pose, object_z: float) -> np.ndarray:
        """Four raw actions from the anchor towards the phase's goal; `object_z` is the
        object's height now (a lift that leaves it behind missed it: open and try again)."""
        here = obs.anchor
        holding_elsewhere = float(np.linalg.norm(here.position[:2] - grasp.position[:2])) > self.s.release_xy
        if obs.gripper == GRIPPER_CLOSE and (self._missed or holding_elsewhere and self._closed_at_ns is None):
            return self._towards(here, here, OPEN_RAW)  # missed, or closed on something else: open first
        if obs.gripper == GRIPPER_CLOSE:
            if self._closed_at_ns is None:
                self._closed_at_ns, self._lift_from, self._object_z = obs.stamp_ns, here.position.copy(), object_z
            if (obs.stamp_ns - self._closed_at_ns) / 1e9 < self.s.finger_time:
                return self._towards(here, here, CLOSE_RAW)  # hold still while the fingers close
            lifted = here.position[2] - self._lift_from[2]
            if lifted > self.s.miss_lift and object_z - self._object_z < lifted / 2:
                self._missed, self._descending = True, False
                return self._towards(here, here, OPEN_RAW)
            goal = Pose(self._lift_from + (0.0, 0.0, self.s.lift), here.rotation)
            return self._towards(here, goal, CLOSE_RAW)
        self._closed_at_ns, self._missed = None, False
        xy_error = float(np.linalg.norm(here.position[:2] - grasp.position[:2]))
        if xy_error > self.s.realign_xy:
            self._descending = False
        elif xy_error < self.s.align_xy:
            self._descending = True
        if not self._descending:
            above = grasp.position + (0.0, 0.0, self.s.approach_height)
            return self._towards(here, Pose(above, grasp.rotation), OPEN_RAW)
        if (here.translation_to(grasp) < self.s.close_tolerance
                and here.rotation_to(grasp) < self.s.close_rotation):
            return self._towards(here, grasp, CLOSE_RAW)
        return self._towards(here, grasp, OPEN_RAW)

    def _towards(self, here: Pose, goal: Pose, gripper: float, n: int = 4) -> np.ndarray:
        rows, p, r = [], here.position.copy(), here.rotation.copy()
        for _ in range(n):
            step = goal.position - p
            dist = float(np.linalg.norm(step))
            p_next = goal.position.copy() if dist <= self.s.max_step else p + step * (self.s.max_step / dist)
            r_next = _rotate_towards(r, goal.rotation, self.s.max_rotation)
            rows.append([*(p_next - p), *matrix_to_euler(r_next @ r.T), gripper])
            p, r = p_next, r_next
        return np.array(rows)

    def bbox(self, camera, name: str, position) -> list[float]:
        """The object's axis-aligned box (footprint radius × half height) projected into the
        224 px model input of `camera` (official crop, then scaled), x1 y1 x2 y2."""
        spec = object_spec(name)
        r, h = spec.radius, spec.half_height
        corners = [np.add(position, (dx, dy, dz)) for dx in (-r, r) for dy in (-r, r) for dz in (-h, h)]
        uv = np.array([camera.project(c, self.width, self.height) for c in corners])
        scale = MODEL_SIZE / self.crop.width
        x = np.clip((uv[:, 0] - self.crop.x0) * scale, 0, MODEL_SIZE)
        y = np.clip((uv[:, 1] - self.crop.y0) * scale, 0, MODEL_SIZE)
        return [float(x.min()), float(y.min()), float(x.max()), float(y.max())]

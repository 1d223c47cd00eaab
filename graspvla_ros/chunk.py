"""GraspVLA action chunks and the frames they live in.

GraspVLA predicts N rows of (Δx, Δy, Δz, Δroll, Δpitch, Δyaw, gripper) in the robot BASE
frame, relative to the end-effector pose at observation time. Deltas chain as
p_k = p_{k-1} + Δp_k and R_k = euler2mat(Δ_k) @ R_{k-1}, with Euler angles in the static
'sxyz' convention (R = Rz(yaw) · Ry(pitch) · Rx(roll)), as the official client does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

ROW_WIDTH = 7
GRIPPER_CLOSE, GRIPPER_HOLD, GRIPPER_OPEN = -1.0, 0.0, 1.0


def euler_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Static-axes 'sxyz' Euler angles → rotation matrix (R = Rz·Ry·Rx)."""
    return Rotation.from_euler("xyz", rpy).as_matrix()


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(rot).as_euler("xyz")


@dataclass(frozen=True)
class Pose:
    """A rigid pose in the base frame: position (3,) in metres and rotation matrix (3, 3)."""

    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_xyz_rpy(cls, xyz, rpy) -> Pose:
        return cls(np.asarray(xyz, float), euler_to_matrix(np.asarray(rpy, float)))

    @classmethod
    def from_xyz_quat(cls, xyz, quat_xyzw) -> Pose:
        return cls(np.asarray(xyz, float), Rotation.from_quat(quat_xyzw).as_matrix())

    @property
    def rpy(self) -> np.ndarray:
        return matrix_to_euler(self.rotation)

    @property
    def quat_xyzw(self) -> np.ndarray:
        return Rotation.from_matrix(self.rotation).as_quat()

    def translation_to(self, other: Pose) -> float:
        return float(np.linalg.norm(other.position - self.position))

    def rotation_to(self, other: Pose) -> float:
        """Angle (rad) of the rotation taking this orientation to `other`'s."""
        return float(Rotation.from_matrix(other.rotation @ self.rotation.T).magnitude())


@dataclass(frozen=True)
class Waypoint:
    """An absolute base-frame target, due at `stamp_ns`, with the gripper command to issue there."""

    stamp_ns: int
    pose: Pose
    gripper: float


@dataclass(frozen=True)
class ActionChunk:
    """N GraspVLA actions anchored at the end-effector pose observed at `stamp_ns`.

    Row k (1-based) is due at stamp_ns + k·dt. `rows` is (N, 7): Δxyz, Δeuler 'sxyz', gripper.
    `episode` and `seq` are the policy's ids of the cycle that made it (0: none, a publisher
    without ids): the controller runs a chunk only after every older one (control.order).
    """

    stamp_ns: int
    dt: float
    frame_id: str
    rows: np.ndarray
    anchor: Pose
    anchor_gripper: float = GRIPPER_OPEN
    episode: int = 0
    seq: int = 0
    targets: tuple[Waypoint, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=float)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "targets", tuple(self._chain()) if rows.ndim == 2 and rows.shape[1] == ROW_WIDTH else ())

    def _chain(self):
        p, rot = self.anchor.position.copy(), self.anchor.rotation.copy()
        for k, row in enumerate(self.rows, start=1):
            p = p + row[:3]
            rot = euler_to_matrix(row[3:6]) @ rot
            yield Waypoint(self.stamp_ns + round(k * self.dt * 1e9), Pose(p, rot), float(row[6]))

    @classmethod
    def from_targets(cls, stamp_ns: int, dt: float, frame_id: str, anchor: Pose,
                     poses: list[Pose], grippers: list[float], anchor_gripper: float = GRIPPER_OPEN,
                     episode: int = 0, seq: int = 0) -> ActionChunk:
        """The chunk whose chained deltas reproduce the given absolute poses (the inverse of `targets`)."""
        rows, prev = [], anchor
        for pose, grip in zip(poses, grippers):
            rows.append([*(pose.position - prev.position), *matrix_to_euler(pose.rotation @ prev.rotation.T), grip])
            prev = pose
        return cls(stamp_ns, dt, frame_id, np.asarray(rows, float).reshape(-1, ROW_WIDTH), anchor, anchor_gripper,
                   episode, seq)

"""Eye-to-hand calibration: a fixed camera, a board held by the gripper, N arm poses →
the camera's pose in the robot base frame (and the board's pose in the gripper).

    T_base_gripper[i] · T_gripper_board = T_base_camera · T_camera_board[i]

Both unknowns are fixed. Pairs of poses give A·X = X·B (A = G_j·G_i⁻¹ in the base frame,
B = C_j·C_i⁻¹ in the camera frame), solved in closed form (Park & Martin: rotation from the
rotation axes, translation by least squares), then refined jointly with T_gripper_board by
least squares over the board's corners as the arm and the camera place them. (OpenCV 5 has no
calibrateHandEye in its main modules, hence our own.) The motions must rotate the board about
at least two different axes, or the camera's position along the rotation axis is undefined.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from graspvla_ros.calibration.geometry import invert, rotation_angle_deg, transform


class HandEyeError(ValueError):
    """Arm poses and board views that cannot determine the camera's pose, with what to change."""


@dataclass(frozen=True)
class HandEyeResult:
    T_base_camera: np.ndarray
    T_gripper_board: np.ndarray
    poses: int
    residual_mm: float  # RMS distance between the board origin as measured and as predicted
    residual_deg: float  # RMS angle between the board orientation as measured and as predicted
    method: str

    def to_dict(self) -> dict:
        return {"poses": self.poses, "method": self.method, "residual_mm": round(self.residual_mm, 3),
                "residual_deg": round(self.residual_deg, 4)}


def check_motions(T_base_gripper: Sequence[np.ndarray], min_poses: int = 6, min_rotation_deg: float = 10.0,
                  min_axis_spread: float = 0.05) -> None:
    """HandEyeError unless there are enough poses rotating the gripper about ≥ 2 distinct axes."""
    n = len(T_base_gripper)
    if n < min_poses:
        raise HandEyeError(f"too few poses: {n} given, at least {min_poses} needed (10–20 recommended, "
                           "spread over the camera's view)")
    axes, largest = [], 0.0
    for i in range(n):
        for j in range(i + 1, n):
            rotvec = Rotation.from_matrix(T_base_gripper[i][:3, :3].T @ T_base_gripper[j][:3, :3]).as_rotvec()
            angle = np.degrees(np.linalg.norm(rotvec))
            largest = max(largest, angle)
            if angle >= min_rotation_deg:
                axes.append(rotvec / np.linalg.norm(rotvec))
    if not axes:
        raise HandEyeError(f"degenerate motions: the gripper turns by at most {largest:.1f}° between poses; "
                           f"tilt the board by at least {min_rotation_deg:.0f}° between poses, about different axes")
    moments = np.linalg.eigvalsh(sum(np.outer(a, a) for a in axes) / len(axes))
    if moments[-2] < min_axis_spread:
        raise HandEyeError("degenerate motions: every rotation between poses is about (nearly) the same axis; "
                           "add poses tilted about a second axis (e.g. pitch as well as yaw the gripper)")


def _closed_form(G: Sequence[np.ndarray], C: Sequence[np.ndarray]) -> np.ndarray:
    """X = T_base_camera from all pose pairs with A·X = X·B (Park & Martin 1994)."""
    pairs = [(G[j] @ invert(G[i]), C[j] @ invert(C[i])) for i in range(len(G)) for j in range(i + 1, len(G))]
    M = np.zeros((3, 3))
    for A, B in pairs:
        M += np.outer(Rotation.from_matrix(B[:3, :3]).as_rotvec(), Rotation.from_matrix(A[:3, :3]).as_rotvec())
    w, V = np.linalg.eigh(M.T @ M)
    R = V @ np.diag(w ** -0.5) @ V.T @ M.T
    U, _, Wt = np.linalg.svd(R)  # nearest rotation
    R = U @ np.diag([1, 1, np.linalg.det(U @ Wt)]) @ Wt
    lhs = np.vstack([A[:3, :3] - np.eye(3) for A, _ in pairs])
    rhs = np.concatenate([R @ B[:3, 3] - A[:3, 3] for A, B in pairs])
    return transform(R, np.linalg.lstsq(lhs, rhs, rcond=None)[0])


def _mean_board_in_gripper(X: np.ndarray, G, C) -> np.ndarray:
    Ys = [invert(g) @ X @ c for g, c in zip(G, C)]
    return transform(Rotation.from_matrix([y[:3, :3] for y in Ys]).mean().as_matrix(), np.mean([y[:3, 3] for y in Ys], 0))


def _pack(T: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3]])


def _unpack(v: np.ndarray) -> np.ndarray:
    return transform(Rotation.from_rotvec(v[:3]).as_matrix(), v[3:6])


def solve_eye_to_hand(T_base_gripper: Sequence[np.ndarray], T_cam_board: Sequence[np.ndarray],
                      board_points: np.ndarray | None = None, min_poses: int = 6,
                      min_rotation_deg: float = 10.0) -> HandEyeResult:
    """Camera → base from pairs (gripper pose in base, board pose in camera). `board_points`
    (N×3, board frame; default a 30 cm square) are where the refinement compares the two chains."""
    if len(T_base_gripper) != len(T_cam_board):
        raise HandEyeError(f"{len(T_base_gripper)} arm poses but {len(T_cam_board)} board views")
    G = [np.asarray(g, float) for g in T_base_gripper]
    C = [np.asarray(c, float) for c in T_cam_board]
    check_motions(G, min_poses, min_rotation_deg)
    if board_points is None:
        board_points = np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [0.3, 0.3, 0]], float)
    P = np.c_[board_points, np.ones(len(board_points))].T

    def residuals(v: np.ndarray) -> np.ndarray:
        X, Y = _unpack(v[:6]), _unpack(v[6:])
        return np.concatenate([((g @ Y - X @ c) @ P)[:3].ravel() for g, c in zip(G, C)])

    X0 = _closed_form(G, C)
    fit = least_squares(residuals, np.concatenate([_pack(X0), _pack(_mean_board_in_gripper(X0, G, C))]))
    X, Y = _unpack(fit.x[:6]), _unpack(fit.x[6:])
    if not np.all(np.isfinite(X)):
        raise HandEyeError("the hand-eye solve did not converge on these poses")
    predicted = [invert(X) @ g @ Y for g in G]  # the board in the camera, as the arm puts it
    dt = np.array([np.linalg.norm(p[:3, 3] - c[:3, 3]) for p, c in zip(predicted, C)])
    dr = np.array([rotation_angle_deg(p[:3, :3].T @ c[:3, :3]) for p, c in zip(predicted, C)])
    return HandEyeResult(X, Y, len(G), float(np.sqrt(np.mean(dt ** 2))) * 1e3, float(np.sqrt(np.mean(dr ** 2))),
                         "park-martin + least squares")

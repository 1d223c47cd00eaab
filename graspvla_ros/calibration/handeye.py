"""Eye-to-hand calibration: a fixed camera, a board held by the gripper, N arm poses →
the camera's pose in the robot base frame (and the board's pose in the gripper).

    T_base_gripper[i] · T_gripper_board = T_base_camera · T_camera_board[i]

Both unknowns are fixed; OpenCV's calibrateHandEye solves it in eye-to-hand form (base →
gripper poses in place of gripper → base). The motions must rotate the board about at least
two different axes, or the camera's position along the rotation axis is undefined.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.calibration.geometry import invert, rotation_angle_deg, transform

METHODS = {"tsai": cv2.CALIB_HAND_EYE_TSAI, "park": cv2.CALIB_HAND_EYE_PARK,
           "horaud": cv2.CALIB_HAND_EYE_HORAUD, "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
           "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}


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


def _residuals(X: np.ndarray, T_base_gripper, T_cam_board) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T_gripper_board as the mean over poses, and each pose's translation (m) / angle (deg) from it."""
    Ys = [invert(g) @ X @ c for g, c in zip(T_base_gripper, T_cam_board)]
    Y = transform(Rotation.from_matrix([y[:3, :3] for y in Ys]).mean().as_matrix(), np.mean([y[:3, 3] for y in Ys], 0))
    dt = np.array([np.linalg.norm(y[:3, 3] - Y[:3, 3]) for y in Ys])
    dr = np.array([rotation_angle_deg(Y[:3, :3].T @ y[:3, :3]) for y in Ys])
    return Y, dt, dr


def solve_eye_to_hand(T_base_gripper: Sequence[np.ndarray], T_cam_board: Sequence[np.ndarray],
                      min_poses: int = 6, min_rotation_deg: float = 10.0) -> HandEyeResult:
    """Camera → base from pairs (gripper pose in base, board pose in camera). Every OpenCV method
    is tried; the one whose board-in-gripper estimates agree best across poses wins."""
    if len(T_base_gripper) != len(T_cam_board):
        raise HandEyeError(f"{len(T_base_gripper)} arm poses but {len(T_cam_board)} board views")
    check_motions(T_base_gripper, min_poses, min_rotation_deg)
    base_to_gripper = [invert(np.asarray(g, float)) for g in T_base_gripper]
    best = None
    for name, method in METHODS.items():
        R, t = cv2.calibrateHandEye([g[:3, :3] for g in base_to_gripper], [g[:3, 3] for g in base_to_gripper],
                                    [c[:3, :3] for c in T_cam_board], [c[:3, 3] for c in T_cam_board], method=method)
        X = transform(R, t)
        if not np.all(np.isfinite(X)):
            continue
        Y, dt, dr = _residuals(X, T_base_gripper, T_cam_board)
        score = float(np.sqrt(np.mean(dt ** 2)) + np.sqrt(np.mean(dr ** 2)) * 1e-3)  # 1 mm ~ 1°
        if best is None or score < best[0]:
            best = score, HandEyeResult(X, Y, len(T_base_gripper), float(np.sqrt(np.mean(dt ** 2)) * 1e3),
                                        float(np.sqrt(np.mean(dr ** 2))), name)
    if best is None:
        raise HandEyeError("no hand-eye method converged on these poses")
    return best[1]

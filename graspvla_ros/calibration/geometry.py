"""Rigid transforms and camera orientation angles shared by calibration (intrinsics:
`camera.intrinsics`).

Camera frames follow OpenCV: x right, y down, z forward (the optical axis). A pose `T_a_b` is
the 4×4 transform that maps coordinates in frame b to frame a (b's pose in a).
"""
from __future__ import annotations

import math

import numpy as np

UP = np.array([0.0, 0.0, 1.0])


def transform(rotation, translation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = np.ravel(translation)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return transform(R.T, -R.T @ t)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix (0…180°)."""
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _roll_about(axis: np.ndarray, right: np.ndarray, roll_deg: float) -> np.ndarray:
    """`right` turned by roll_deg about the forward `axis` (clockwise seen from behind)."""
    r = math.radians(roll_deg)
    down = np.cross(axis, right)  # image down for a level camera
    return math.cos(r) * right + math.sin(r) * down


def look_rotation(forward, roll_deg: float = 0.0) -> np.ndarray:
    """Camera → base rotation (columns: camera x right, y down, z forward) for a camera looking
    along `forward`, level (image x horizontal) and then rolled by roll_deg about its optical axis."""
    z = np.asarray(forward, float) / np.linalg.norm(forward)
    right = np.cross(z, UP)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("a camera looking straight up or down has no defined heading")
    right /= np.linalg.norm(right)
    x = _roll_about(z, right, roll_deg)
    return np.column_stack([x, np.cross(z, x), z])


def rotation_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """`look_rotation` from the optical axis' heading (yaw, from +x towards +y) and elevation
    (pitch, negative = looking down)."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    return look_rotation((math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p)), roll_deg)


def camera_angles(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a camera → base rotation; inverse of rotation_from_angles."""
    z, x = R[:, 2], R[:, 0]
    yaw = math.degrees(math.atan2(z[1], z[0]))
    pitch = math.degrees(math.asin(float(np.clip(z[2], -1.0, 1.0))))
    level = np.cross(z, UP)
    level /= np.linalg.norm(level)
    down = np.cross(z, level)
    return yaw, pitch, math.degrees(math.atan2(x @ down, x @ level))

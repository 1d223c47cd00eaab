"""Rigid transforms, camera orientation angles and pinhole intrinsics shared by calibration.

Camera frames follow OpenCV: x right, y down, z forward (the optical axis). A pose `T_a_b` is
the 4×4 transform that maps coordinates in frame b to frame a (b's pose in a).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graspvla_ros import preprocess

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


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera (sensor_msgs/CameraInfo K, plumb_bob distortion) of width×height px."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """A distortion-free camera with square pixels centred on the image, as MuJoCo renders it
        (OpenCV puts pixel centres on integers, hence (w − 1)/2)."""
        f = height / 2 / math.tan(math.radians(fovy_deg) / 2)
        return cls(width, height, f, f, (width - 1) / 2, (height - 1) / 2)

    @classmethod
    def from_camera_info(cls, info) -> Intrinsics:
        """From a sensor_msgs/CameraInfo or anything with k, d, width, height."""
        k = list(info.k)
        return cls(int(info.width), int(info.height), k[0], k[4], k[2], k[5], tuple(float(v) for v in info.d))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], float)

    @property
    def dist(self) -> np.ndarray:
        return np.array(self.distortion, float) if self.distortion else np.zeros(5)

    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view."""
        return (math.degrees(2 * math.atan(self.width / (2 * self.fx))),
                math.degrees(2 * math.atan(self.height / (2 * self.fy))))

    def crop(self) -> preprocess.CropWindow:
        """The window preprocessing cuts for the policy (preprocess.fov_crop; FovError if too narrow)."""
        return preprocess.fov_crop(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": float(self.fx), "fy": float(self.fy),
                "cx": float(self.cx), "cy": float(self.cy), "distortion": [float(v) for v in self.distortion]}

    @classmethod
    def from_dict(cls, d: dict) -> Intrinsics:
        try:
            return cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
                       float(d["cy"]), tuple(float(v) for v in d.get("distortion") or ()))
        except KeyError as e:
            raise ValueError(f"intrinsics need width, height, fx, fy, cx, cy: {e.args[0]} is missing") from None

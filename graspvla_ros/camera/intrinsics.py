"""A camera's pinhole intrinsics: what the camera driver reports, camera_info carries and
calibration computes with. Kept apart from `camera.source` so it needs no pyrealsense2."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graspvla_ros import preprocess

PLUMB_BOB = "plumb_bob"


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera of width×height px: focal lengths, principal point (librealsense's names:
    ppx, ppy = CameraInfo K's cx, cy) and distortion as CameraInfo has it: `model` "plumb_bob"
    (Brown-Conrady, OpenCV's: the one calibration computes with) or "equidistant", `coeffs` D."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str = PLUMB_BOB
    coeffs: tuple[float, ...] = ()

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """A distortion-free camera with square pixels centred on the image, as MuJoCo renders it
        (OpenCV puts pixel centres on integers, hence (w − 1)/2)."""
        f = height / 2 / math.tan(math.radians(fovy_deg) / 2)
        return cls(width, height, f, f, (width - 1) / 2, (height - 1) / 2)

    @classmethod
    def from_camera_info(cls, info) -> Intrinsics:
        """From a sensor_msgs/CameraInfo or anything with k, d, width, height (and distortion_model)."""
        k = list(info.k)
        return cls(int(info.width), int(info.height), k[0], k[4], k[2], k[5],
                   getattr(info, "distortion_model", "") or PLUMB_BOB, tuple(float(v) for v in info.d))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.ppx], [0, self.fy, self.ppy], [0, 0, 1]], float)

    @property
    def dist(self) -> np.ndarray:
        return np.array(self.coeffs, float) if self.coeffs else np.zeros(5)

    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view."""
        return (math.degrees(2 * math.atan(self.width / (2 * self.fx))),
                math.degrees(2 * math.atan(self.height / (2 * self.fy))))

    def crop(self) -> preprocess.CropWindow:
        """The window preprocessing cuts for the policy (preprocess.fov_crop; FovError if too narrow)."""
        return preprocess.fov_crop(self.fx, self.fy, self.ppx, self.ppy, self.width, self.height)

    def to_dict(self) -> dict:
        """The `intrinsics:` section of calibration/<camera>.yaml (OpenCV's names cx, cy; the
        model only when it is not plumb_bob)."""
        d = {"width": self.width, "height": self.height, "fx": float(self.fx), "fy": float(self.fy),
             "cx": float(self.ppx), "cy": float(self.ppy), "distortion": [float(v) for v in self.coeffs]}
        if self.model != PLUMB_BOB:
            d["model"] = self.model
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Intrinsics:
        try:
            return cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                       str(d.get("model") or PLUMB_BOB), tuple(float(v) for v in d.get("distortion") or ()))
        except KeyError as e:
            raise ValueError(f"intrinsics need width, height, fx, fy, cx, cy: {e.args[0]} is missing") from None

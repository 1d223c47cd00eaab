"""GraspVLA's training viewpoints (calibration/nominal.yaml): the one place the simulated
cameras and the calibration tools take them from."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from graspvla_ros.calibration.geometry import camera_angles, look_rotation, rotation_from_angles, transform
from graspvla_ros.camera.intrinsics import Intrinsics

def _calibration_dir() -> Path:
    """$GRASPVLA_CALIBRATION_DIR, else the source checkout's calibration/, else the installed
    package's share/graspvla_ros/calibration (colcon or pip install, setup.py data_files)."""
    if os.environ.get("GRASPVLA_CALIBRATION_DIR"):
        return Path(os.environ["GRASPVLA_CALIBRATION_DIR"])
    candidates = [Path(__file__).resolve().parents[2] / "calibration",
                  Path(sys.prefix) / "share" / "graspvla_ros" / "calibration"]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("graspvla_ros")) / "calibration")
    except Exception:  # no ament index (plain venv) or the package is not installed there
        pass
    return next((c for c in candidates if (c / "nominal.yaml").exists()), candidates[0])


CALIBRATION_DIR = _calibration_dir()
NOMINAL_PATH = CALIBRATION_DIR / "nominal.yaml"


@dataclass(frozen=True)
class NominalCamera:
    name: str
    position: np.ndarray
    rotation: np.ndarray  # camera (OpenCV axes) → base
    intrinsics: Intrinsics

    @property
    def pose(self) -> np.ndarray:
        """T_base_camera."""
        return transform(self.rotation, self.position)

    @property
    def fovy_deg(self) -> float:
        return self.intrinsics.fov_deg()[1]

    def angles(self) -> tuple[float, float, float]:
        return camera_angles(self.rotation)


@dataclass(frozen=True)
class Nominal:
    cameras: dict[str, NominalCamera]
    calibration_joints: tuple[float, ...]

    def camera(self, name: str) -> NominalCamera:
        try:
            return self.cameras[name]
        except KeyError:
            raise ValueError(f"no nominal camera {name!r}; calibration/nominal.yaml has: "
                             f"{', '.join(self.cameras)}") from None


def _rotation(name: str, c: dict, position: np.ndarray) -> np.ndarray:
    roll = float(c.get("roll_deg", 0.0))
    if "look_at" in c:
        return look_rotation(np.subtract(c["look_at"], position), roll)
    if "yaw_deg" in c and "pitch_deg" in c:
        return rotation_from_angles(float(c["yaw_deg"]), float(c["pitch_deg"]), roll)
    raise ValueError(f"nominal camera {name!r} needs look_at or yaw_deg + pitch_deg")


def load_nominal(path: Path | str = NOMINAL_PATH) -> Nominal:
    with open(path) as f:
        doc = yaml.safe_load(f)
    intrinsics = Intrinsics.from_fovy(int(doc["image"]["width"]), int(doc["image"]["height"]), float(doc["fovy_deg"]))
    cameras = {}
    for name, c in doc["cameras"].items():
        position = np.array(c["position"], float)
        cameras[name] = NominalCamera(name, position, _rotation(name, c, position), intrinsics)
    joints = tuple(float(q) for q in doc["calibration_joints"])
    if len(joints) != 7:
        raise ValueError(f"{path}: calibration_joints needs 7 values, got {len(joints)}")
    return Nominal(cameras, joints)

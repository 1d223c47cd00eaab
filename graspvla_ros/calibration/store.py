"""calibration/<camera>.yaml: what calibration measured about one camera (intrinsics, camera →
base extrinsics, the crop the policy sees, date, deviation and overlay score), for
preprocessing (`crop`) and the sim (`sim.scene.CameraSpec.from_pose(name, pose)`) to read."""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from graspvla_ros import preprocess
from graspvla_ros.calibration.geometry import camera_angles, transform
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.calibration.nominal import CALIBRATION_DIR

FORMAT = 1


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CameraCalibration:
    camera: str
    intrinsics: Intrinsics
    pose: np.ndarray | None = None  # T_base_camera (OpenCV axes), None until measured
    date: str = field(default_factory=utc_now)
    deviation: dict | None = None
    hand_eye: dict | None = None
    score: dict | None = None

    @property
    def crop(self) -> preprocess.CropWindow:
        """The window preprocessing cuts from this camera's images (preprocess.fov_crop)."""
        return self.intrinsics.crop()

    def to_dict(self) -> dict:
        doc = {"format": FORMAT, "camera": self.camera, "date": self.date, "intrinsics": self.intrinsics.to_dict()}
        try:
            c = self.crop
            doc["crop"] = {"x0": c.x0, "y0": c.y0, "width": c.width, "height": c.height}
        except preprocess.FovError as e:
            doc["crop"] = {"error": str(e)}
        if self.pose is not None:
            yaw, pitch, roll = camera_angles(self.pose[:3, :3])
            doc["extrinsics"] = {
                "frames": "camera (OpenCV: x right, y down, z forward) → robot base (panda_link0)",
                "position": [round(float(v), 6) for v in self.pose[:3, 3]],
                "quaternion_xyzw": [round(float(v), 8) for v in Rotation.from_matrix(self.pose[:3, :3]).as_quat()],
                "yaw_pitch_roll_deg": [round(v, 4) for v in (yaw, pitch, roll)]}
        for key in ("deviation", "hand_eye", "score"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> CameraCalibration:
        if doc.get("format") != FORMAT:
            raise ValueError(f"calibration format {doc.get('format')!r}, this version reads {FORMAT}")
        pose = None
        if "extrinsics" in doc:
            e = doc["extrinsics"]
            pose = transform(Rotation.from_quat(e["quaternion_xyzw"]).as_matrix(), e["position"])
        return cls(doc["camera"], Intrinsics.from_dict(doc["intrinsics"]), pose, str(doc["date"]),
                   doc.get("deviation"), doc.get("hand_eye"), doc.get("score"))


def calibration_path(camera: str, directory: Path | str = CALIBRATION_DIR) -> Path:
    return Path(directory) / f"{camera}.yaml"


def write_calibration(cal: CameraCalibration, directory: Path | str = CALIBRATION_DIR) -> Path:
    """Write calibration/<camera>.yaml atomically (a reader never sees half a file)."""
    path = calibration_path(cal.camera, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# Written by `graspvla calibrate`; see calibration/README.md\n{yaml.safe_dump(cal.to_dict(), sort_keys=False, allow_unicode=True)}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{cal.camera}.", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def load_calibration(camera_or_path: str | Path, directory: Path | str = CALIBRATION_DIR) -> CameraCalibration:
    """A camera's calibration, by camera name (calibration/<name>.yaml) or by file path."""
    path = Path(camera_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = calibration_path(str(camera_or_path), directory)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no calibration (run `graspvla calibrate board ...`)")
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a calibration file (expected a YAML mapping)")
    try:
        return CameraCalibration.from_dict(doc)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: incomplete calibration ({e})") from None

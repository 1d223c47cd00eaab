"""How far a measured camera is from its training viewpoint, pass/fail, and what to do about it
in words for the person holding the wrench."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graspvla_ros import preprocess
from graspvla_ros.calibration.geometry import UP, camera_angles, rotation_angle_deg
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.calibration.nominal import NominalCamera

MENTION_MM = 1.0  # smaller corrections are below what a hand can set
MENTION_DEG = 0.1


@dataclass(frozen=True)
class Thresholds:
    """Largest deviation from the training viewpoint that passes."""

    translation_mm: float = 10.0
    rotation_deg: float = 1.0


@dataclass(frozen=True)
class Deviation:
    camera: str
    translation_mm: float  # distance between the measured and the nominal optical centre
    rotation_deg: float  # angle between the measured and the nominal orientation
    move_mm: dict  # correction: forward (towards what the camera looks at), left, up
    turn_deg: dict  # correction: pan (left +), tilt (up +), roll (clockwise seen from behind +)
    fov_deg: tuple[float, float]
    crop: preprocess.CropWindow | None
    passed: bool
    problems: list[str] = field(default_factory=list)

    def advice(self) -> list[str]:
        """The corrections in words, largest effect first (moves, then turns)."""
        steps = []
        for key, pos, neg, extra in (("forward", "forward", "back", " (towards the robot)"),
                                     ("left", "to the left", "to the right", ""), ("up", "up", "down", "")):
            v = self.move_mm[key]
            if abs(v) >= MENTION_MM:
                steps.append(f"move the camera {abs(v):.0f} mm {pos if v > 0 else neg}"
                             f"{extra if key == 'forward' and v > 0 else ''}")
        for key, pos, neg in (("pan", "pan left", "pan right"), ("tilt", "tilt up", "tilt down"),
                              ("roll", "roll clockwise", "roll anticlockwise")):
            v = self.turn_deg[key]
            if abs(v) >= MENTION_DEG:
                steps.append(f"{pos if v > 0 else neg} {abs(v):.1f}°")
        return steps

    def text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{self.camera}: {verdict} — {self.translation_mm:.1f} mm and {self.rotation_deg:.2f}° from the "
                 f"training viewpoint; field of view {self.fov_deg[0]:.1f}°×{self.fov_deg[1]:.1f}°"]
        lines += [f"  problem: {p}" for p in self.problems]
        steps = self.advice()
        if steps:
            lines.append("  to fix (left/right as seen from behind the camera, looking where it looks; "
                         "re-measure after each adjustment):")
            lines += [f"    {s}" for s in steps]
        else:
            lines.append("  no adjustment needed")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "translation_mm": round(self.translation_mm, 2),
                "rotation_deg": round(self.rotation_deg, 3),
                "move_mm": {k: round(v, 2) for k, v in self.move_mm.items()},
                "turn_deg": {k: round(v, 3) for k, v in self.turn_deg.items()},
                "fov_deg": [round(v, 2) for v in self.fov_deg], "problems": list(self.problems),
                "advice": self.advice()}


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def deviation(nominal: NominalCamera, T_base_camera: np.ndarray, intrinsics: Intrinsics,
              thresholds: Thresholds = Thresholds()) -> Deviation:
    """Compare a measured camera pose (camera → base, OpenCV axes) with its nominal one."""
    correction = nominal.position - T_base_camera[:3, 3]
    heading = nominal.rotation[:, 2] * (1, 1, 0)
    heading /= np.linalg.norm(heading)
    left = np.cross(UP, heading)
    move = {"forward": float(correction @ heading) * 1e3, "left": float(correction @ left) * 1e3,
            "up": float(correction[2]) * 1e3}
    (ny, npitch, nroll), (my, mpitch, mroll) = nominal.angles(), camera_angles(T_base_camera[:3, :3])
    turn = {"pan": _wrap(ny - my), "tilt": npitch - mpitch, "roll": _wrap(nroll - mroll)}
    translation_mm = float(np.linalg.norm(correction)) * 1e3
    rotation_deg = rotation_angle_deg(nominal.rotation.T @ T_base_camera[:3, :3])
    problems = []
    if translation_mm > thresholds.translation_mm:
        problems.append(f"position off by {translation_mm:.1f} mm (limit {thresholds.translation_mm:g} mm)")
    if rotation_deg > thresholds.rotation_deg:
        problems.append(f"orientation off by {rotation_deg:.2f}° (limit {thresholds.rotation_deg:g}°)")
    try:
        crop = intrinsics.crop()
    except preprocess.FovError as e:
        crop = None
        problems.append(str(e))
    return Deviation(nominal.name, translation_mm, rotation_deg, move, turn, intrinsics.fov_deg(), crop,
                     not problems, problems)

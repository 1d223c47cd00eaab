"""The overlay check: where the arm at the calibration joint configuration should appear in a
camera at its training viewpoint (rendered by `sim.robot_scene.RobotScene`, in the policy's
crop and 256² view), blended over a live image and scored.

Scores, all in the policy's 256×256 view:
- edge score: the share of the expected silhouette's outline that has an image edge (Canny)
  within EDGE_TOLERANCE_PX, each pixel weighted down linearly with its distance (1 = all of
  the outline lies on edges). Works on any live image; clutter can only raise it a little.
- mask IoU: when a mask of the arm in the live image is available (the sim, or one painted by
  hand), intersection over union with the expected silhouette.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from graspvla_ros import preprocess
from graspvla_ros.calibration.nominal import Nominal, load_nominal
from graspvla_ros.camera.intrinsics import Intrinsics

EDGE_TOLERANCE_PX = 4.0
CHAMFER_CAP_PX = 20.0


class ArmView(Protocol):
    """Renders the arm's silhouette seen from a camera pose: `sim.robot_scene.RobotScene` (MuJoCo),
    which sits above calibration and is therefore passed in, not imported."""

    intrinsics: Intrinsics

    def silhouette(self, T_base_camera: np.ndarray) -> np.ndarray: ...


def policy_mask(mask: np.ndarray, crop: preprocess.CropWindow) -> np.ndarray:
    """A full-resolution mask as the policy sees its image: the crop, resized to 256²."""
    window = np.ascontiguousarray(crop.apply(mask.astype(np.float32)))
    size = (preprocess.CLIENT_SIZE, preprocess.CLIENT_SIZE)
    return cv2.resize(window, size, interpolation=cv2.INTER_AREA) > 0.5


def expected_silhouette(scene: ArmView, camera: str, nominal: Nominal | None = None) -> np.ndarray:
    """256² bool: the arm at the calibration joints from the camera's training viewpoint."""
    cam = (nominal or load_nominal()).camera(camera)
    return policy_mask(scene.silhouette(cam.pose), scene.intrinsics.crop())


def outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)


@dataclass(frozen=True)
class OverlayScore:
    edge_score: float
    chamfer_px: float  # mean distance from the expected outline to the nearest image edge (capped)
    mask_iou: float | None = None

    def to_dict(self) -> dict:
        d = {"edge_score": round(self.edge_score, 4), "chamfer_px": round(self.chamfer_px, 2)}
        if self.mask_iou is not None:
            d["mask_iou"] = round(self.mask_iou, 4)
        return d

    def text(self) -> str:
        iou = "" if self.mask_iou is None else f", mask IoU {self.mask_iou:.3f}"
        return f"edge score {self.edge_score:.3f} (1 = outline on image edges), mean outline-to-edge distance " \
               f"{self.chamfer_px:.1f} px of 256{iou}"


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def score(expected: np.ndarray, view: np.ndarray, live_mask: np.ndarray | None = None) -> OverlayScore:
    """Score a 256² RGB policy view against the 256² expected silhouette."""
    if expected.shape != view.shape[:2]:
        raise ValueError(f"expected silhouette {expected.shape} and view {view.shape[:2]} differ in size")
    if not expected.any():
        raise ValueError("the expected silhouette is empty: the arm is not in this camera's view")
    grey = cv2.GaussianBlur(cv2.cvtColor(view, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    edges = cv2.Canny(grey, 30, 90) > 0
    distance = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)[outline(expected)]
    edge = float(np.mean(np.clip(1.0 - distance / EDGE_TOLERANCE_PX, 0.0, 1.0)))
    chamfer = float(np.mean(np.minimum(distance, CHAMFER_CAP_PX)))
    return OverlayScore(edge, chamfer, None if live_mask is None else mask_iou(expected, live_mask))


def overlay_image(view: np.ndarray, expected: np.ndarray, scale: int = 2) -> np.ndarray:
    """The policy view with the expected arm tinted green and outlined in magenta, enlarged."""
    out = view.astype(np.float32)
    out[expected] = 0.6 * out[expected] + 0.4 * np.array([0, 255, 0])
    out[outline(expected)] = (255, 0, 255)
    size = (view.shape[1] * scale, view.shape[0] * scale)
    return cv2.resize(out.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)

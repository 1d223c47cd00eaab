"""The overlay check: where the arm at the calibration joint configuration should appear in a
camera at its training viewpoint (MuJoCo, the policy's crop and 256² view), blended over a
live image and scored.

Scores, all in the policy's 256×256 view:
- edge score: the share of the expected silhouette's outline that has an image edge (Canny)
  within EDGE_TOLERANCE_PX, each pixel weighted down linearly with its distance (1 = all of
  the outline lies on edges). Works on any live image; clutter can only raise it a little.
- mask IoU: when a mask of the arm in the live image is available (the sim, or one painted by
  hand), intersection over union with the expected silhouette.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import cv2
import mujoco
import numpy as np

from graspvla_ros import preprocess
from graspvla_ros.calibration.geometry import Intrinsics
from graspvla_ros.calibration.nominal import Nominal, load_nominal

EDGE_TOLERANCE_PX = 4.0
CHAMFER_CAP_PX = 20.0
JOINTS = tuple(f"robot0_fr3_joint{i}" for i in range(1, 8))


def _quat(R: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).ravel())
    return q


class RobotScene:
    """franky-sim's FR3 on the table, posed at a joint configuration, seen by one movable
    camera with `intrinsics` (square pixels, centred principal point). No physics runs."""

    def __init__(self, joints=None, intrinsics: Intrinsics | None = None, nominal: Nominal | None = None):
        from franky_sim.mujoco_simulator import MujocoSimulator

        from graspvla_ros.sim.world import TableScene, robot_geom_ids

        nominal = nominal or load_nominal()
        self.joints = tuple(nominal.calibration_joints if joints is None else joints)
        self.intrinsics = intrinsics or next(iter(nominal.cameras.values())).intrinsics
        sim = MujocoSimulator()
        sim.init()
        sim.add_robot()
        TableScene({}, objects=(), cameras=())(sim.worldbody)
        ET.SubElement(sim.worldbody, "camera", name="calibration", pos="0 0 0",
                      fovy=f"{self.intrinsics.fov_deg()[1]:.9g}")
        visual = sim.scene.find("visual")
        if visual is None:
            visual = ET.SubElement(sim.scene, "visual")
        ET.SubElement(visual, "global", offwidth=str(self.intrinsics.width), offheight=str(self.intrinsics.height))
        self.model = mujoco.MjModel.from_xml_string(ET.tostring(sim.scene, encoding="unicode"))
        self.data = mujoco.MjData(self.model)
        for name, q in zip(JOINTS, self.joints):
            self.data.qpos[self.model.joint(name).qposadr[0]] = q
        for j in range(self.model.njnt):  # fingers open, as in the official masks
            if "finger" in self.model.joint(j).name:
                self.data.qpos[self.model.jnt_qposadr[j]] = self.model.jnt_range[j][1]
        mujoco.mj_forward(self.model, self.data)
        self._robot = robot_geom_ids(self.model)
        self._renderer = mujoco.Renderer(self.model, self.intrinsics.height, self.intrinsics.width)

    def _look_from(self, T_base_camera: np.ndarray) -> None:
        cam = self.model.camera("calibration").id
        self.model.cam_pos[cam] = T_base_camera[:3, 3]
        self.model.cam_quat[cam] = _quat(T_base_camera[:3, :3] @ np.diag([1.0, -1.0, -1.0]))  # OpenGL axes
        mujoco.mj_forward(self.model, self.data)

    def silhouette(self, T_base_camera: np.ndarray) -> np.ndarray:
        """HxW bool: pixels where the arm is the nearest surface."""
        self._look_from(T_base_camera)
        self._renderer.enable_segmentation_rendering()
        self._renderer.update_scene(self.data, camera="calibration")
        seg = self._renderer.render()
        self._renderer.disable_segmentation_rendering()
        return (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0], self._robot)

    def rgb(self, T_base_camera: np.ndarray) -> np.ndarray:
        self._look_from(T_base_camera)
        self._renderer.update_scene(self.data, camera="calibration")
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> RobotScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def policy_mask(mask: np.ndarray, crop: preprocess.CropWindow) -> np.ndarray:
    """A full-resolution mask as the policy sees its image: the crop, resized to 256²."""
    window = np.ascontiguousarray(crop.apply(mask.astype(np.float32)))
    size = (preprocess.CLIENT_SIZE, preprocess.CLIENT_SIZE)
    return cv2.resize(window, size, interpolation=cv2.INTER_AREA) > 0.5


def expected_silhouette(scene: RobotScene, camera: str, nominal: Nominal | None = None) -> np.ndarray:
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

"""franky-sim's FR3 on the empty table, posed at a joint configuration and seen by one movable
camera: the expected arm silhouette of the calibration overlay check (`calibration.overlay`).
It builds the sim's scene, so it lives in sim/, above calibration; callers hand it to
`calibration.overlay.expected_silhouette`."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from graspvla_ros.calibration.nominal import Nominal, load_nominal
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.sim.scene import TableScene, robot_geom_ids

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

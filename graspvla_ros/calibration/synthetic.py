"""Synthetic ChArUco views rendered with MuJoCo: a textured board at a known pose seen by a
pinhole camera at a known pose. The tests check detection and hand-eye calibration against
them, and `graspvla calibrate simulate` writes a data set to try the offline flow on."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.calibration.charuco import Board
from graspvla_ros.calibration.geometry import transform
from graspvla_ros.camera.intrinsics import Intrinsics

THICKNESS = 0.004
PX_PER_SQUARE = 200
MARGIN_SQUARES = 0.5  # white paper around the printed squares


def _quat(R: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).ravel())
    return q


class BoardRenderer:
    """One camera and one board in an otherwise empty, evenly lit MuJoCo scene. The camera has
    square pixels and a centred principal point (Intrinsics.from_fovy)."""

    def __init__(self, board: Board, intrinsics: Intrinsics):
        if abs(intrinsics.fx - intrinsics.fy) > 1e-6 or abs(intrinsics.ppx - (intrinsics.width - 1) / 2) > 1e-6 \
                or abs(intrinsics.ppy - (intrinsics.height - 1) / 2) > 1e-6:
            raise ValueError("MuJoCo renders square pixels with a centred principal point only")
        self.board, self.intrinsics = board, intrinsics
        w, h = board.size_m
        margin = MARGIN_SQUARES * board.square_m
        with tempfile.TemporaryDirectory() as tmp:
            texture = Path(tmp) / "board.png"
            cv2.imwrite(str(texture), cv2.cvtColor(board.image(PX_PER_SQUARE, round(MARGIN_SQUARES * PX_PER_SQUARE)), cv2.COLOR_GRAY2BGR))
            fovy = intrinsics.fov_deg()[1]
            self.model = mujoco.MjModel.from_xml_string(f"""
<mujoco>
  <visual>
    <global offwidth="{intrinsics.width}" offheight="{intrinsics.height}"/>
    <quality offsamples="4"/>
    <headlight ambient="0.9 0.9 0.9" diffuse="0.1 0.1 0.1" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="board" type="2d" file="{texture}"/>
    <material name="board" texture="board" texrepeat="1 1" specular="0" shininess="0"/>
  </asset>
  <worldbody>
    <camera name="camera" pos="0 0 0" fovy="{fovy}"/>
    <body name="board" mocap="true">
      <geom type="box" size="{w / 2 + margin} {h / 2 + margin} {THICKNESS / 2}" material="board" contype="0" conaffinity="0"/>
    </body>
    <geom type="box" pos="0 0 -3" size="5 5 0.01" rgba="0.5 0.45 0.4 1" contype="0" conaffinity="0"/>
  </worldbody>
</mujoco>""")
        self.data = mujoco.MjData(self.model)
        # The board's top face shows the texture with image x along +x and image rows along −y.
        self._T_geom_board = transform(np.diag([1.0, -1.0, -1.0]), (-w / 2, h / 2, THICKNESS / 2))
        self._renderer = mujoco.Renderer(self.model, intrinsics.height, intrinsics.width)

    def render(self, T_world_camera: np.ndarray, T_world_board: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB of the board at T_world_board seen from T_world_camera (OpenCV axes)."""
        T_world_geom = T_world_board @ np.linalg.inv(self._T_geom_board)
        self.data.mocap_pos[0] = T_world_geom[:3, 3]
        self.data.mocap_quat[0] = _quat(T_world_geom[:3, :3])
        self.model.cam_pos[0] = T_world_camera[:3, 3]
        self.model.cam_quat[0] = _quat(T_world_camera[:3, :3] @ np.diag([1.0, -1.0, -1.0]))  # OpenGL axes
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="camera")
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> BoardRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The board as the gripper holds it in simulated sessions: 10 cm beyond the TCP, turned so that
# it faces a camera when the gripper points down.
T_GRIPPER_BOARD = transform(Rotation.from_euler("xyz", [100, 5, -40], degrees=True).as_matrix(), (-0.12, 0.05, 0.10))
BOARD_CENTRES = {"front": (0.55, 0.0, 0.30), "side": (0.5, 0.05, 0.25)}


def session(T_base_camera: np.ndarray, intrinsics: Intrinsics, board: Board = Board(), poses: int = 12,
            centre=(0.55, 0.0, 0.3), tilt_deg: float = 20.0, spread_m: float = 0.08, noise: float = 2.0,
            seed: int = 0, T_gripper_board: np.ndarray = T_GRIPPER_BOARD) -> list[tuple[np.ndarray, np.ndarray]]:
    """A simulated eye-to-hand session: `poses` (image, T_base_gripper) pairs with the board held
    by the gripper around `centre`, facing the camera, tilted up to tilt_deg about random axes;
    grey noise of std `noise` on the images."""
    rng = np.random.default_rng(seed)
    w, h = board.size_m
    out = []
    with BoardRenderer(board, intrinsics) as renderer:
        for _ in range(poses):
            tilt = Rotation.from_rotvec(rng.normal(size=3) * np.radians(tilt_deg) / 1.7).as_matrix()
            R = T_base_camera[:3, :3] @ tilt
            c = np.asarray(centre) + rng.uniform(-spread_m, spread_m, 3)
            T_base_board = transform(R, c - R @ (w / 2, h / 2, 0.0))
            image = renderer.render(T_base_camera, T_base_board).astype(float)
            image = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
            out.append((image, T_base_board @ np.linalg.inv(T_gripper_board)))
    return out

"""The simulated GraspVLA table world on top of `SimServer`: the table scene (`sim.scene`:
named graspable objects laid out from a seed, the two training cameras), offscreen rendering,
and ground truth.

Thread-safety: franky-sim steps physics on its own thread while holding `server.lock`;
every read of `data` here (poses, contacts, the render scene update) takes that lock, and
the slow part of rendering (rasterising the captured scene) runs outside it. A
`mujoco.Renderer` owns a GL context, so each `CameraRenderer` must stay on one thread.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from graspvla_ros.chunk import euler_to_matrix
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.sim.render import Snapshot
from graspvla_ros.sim.scene import (CAMERAS, CameraSpec, TableScene, object_spec, random_layout, robot_geom_ids,
                                    yaw_quat)
from graspvla_ros.sim.server import SimServer
from graspvla_ros.sim.settings import SimWorldSettings

LIFT_SUCCESS_M = 0.10
HAND = "robot0_hand"
FINGERS = ("robot0_left_finger", "robot0_right_finger")
TCP_OFFSET = 0.1034  # hand frame origin → TCP (panda_EE) along the hand's z axis
# Grasp region in the hand frame: between the finger pads (opening along y), from the
# fingers' base to their tips.
GRASP_REGION_MIN = np.array([-0.03, -0.045, 0.055])
GRASP_REGION_MAX = np.array([0.03, 0.045, 0.115])


class CameraRenderer:
    """Offscreen RGB (and segmentation) rendering of one named camera; one thread only."""

    def __init__(self, world: SimWorld, camera: str, width: int = 640, height: int = 480):
        self.world = world
        self.camera = camera
        self.width, self.height = width, height
        self._renderer = mujoco.Renderer(world.model, height, width)

    def render(self, segmentation: bool = False) -> np.ndarray:
        """HxWx3 uint8 RGB, or HxWx2 int32 (object id, object type) with `segmentation`."""
        if segmentation:
            self._renderer.enable_segmentation_rendering()
        else:
            self._renderer.disable_segmentation_rendering()
        with self.world.server.lock:
            self._renderer.update_scene(self.world.data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


class SimWorld:
    """A started SimServer with the table scene; ground truth and success detection.

        with SimWorld(seed=3, host="127.0.0.5") as world:
            rgb = world.renderer("front").render()
    """

    def __init__(self, seed: int = 0, host: str = "127.0.0.1", realtime: float = 1.0,
                 width: int = 640, height: int = 480, cameras: tuple[CameraSpec, ...] = CAMERAS):
        self.seed = seed
        self.layout = random_layout(seed)
        self.scene = TableScene(self.layout, cameras=cameras)
        self.server = SimServer(host, scene=self.scene, realtime=realtime)
        visual = self.server.sim.scene.find("visual")
        ET.SubElement(visual, "global", offwidth=str(max(640, width)), offheight=str(max(480, height)))
        # Software (llvmpipe) rendering: 4096² shadow maps and 8× MSAA cost ~4× the frame time;
        # the policy sees the image downscaled to 256², which smooths the edges anyway.
        visual.find("quality").attrib.update(shadowsize="1024", offsamples="0")
        # Grasping needs friction that does not creep: with MuJoCo's default pyramidal cone a
        # squeezed sphere or puck slides out between the finger pads within a second. An
        # elliptic cone with impratio 10 is MuJoCo's recommendation for manipulation.
        option = self.server.sim.scene.find("option")
        if option is None:
            option = ET.SubElement(self.server.sim.scene, "option")
        option.attrib.update(cone="elliptic", impratio="10")
        self.width, self.height = width, height
        self.start_positions: dict[str, np.ndarray] = {}
        self.target: str | None = None

    @classmethod
    def from_settings(cls, s: SimWorldSettings) -> SimWorld:
        return cls(s.seed, s.host, s.realtime, s.width, s.height)

    @property
    def model(self) -> mujoco.MjModel:
        return self.server.model

    @property
    def data(self) -> mujoco.MjData:
        return self.server.data

    def start(self) -> SimWorld:
        self.server.start()
        self.start_positions = {n: p for n, (p, _) in self.object_poses().items()}
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> SimWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def renderer(self, camera: str) -> CameraRenderer:
        return CameraRenderer(self, camera, self.width, self.height)

    def time(self) -> float:
        """MuJoCo's simulated time (s): one 1 ms physics step advances it by 1 ms."""
        return float(self.data.time)

    def snapshot(self) -> Snapshot:
        """Sim time and joint positions, one consistent copy: what a `SnapshotRenderer` needs."""
        with self.server.lock:
            return Snapshot(float(self.data.time), self.data.qpos.copy())

    def camera_spec(self, name: str) -> CameraSpec:
        for cam in self.scene.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r}")

    # --- ground truth -------------------------------------------------------------
    def object_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """name → (position xyz, quaternion wxyz) of every object, one consistent snapshot."""
        with self.server.lock:
            return {o.name: (self.data.body(o.body).xpos.copy(), self.data.body(o.body).xquat.copy())
                    for o in self.scene.objects}

    def relayout(self, seed: int) -> None:
        """Put every object back on the table at the layout of `seed` (at rest)."""
        layout = random_layout(seed)  # may raise: then nothing has moved
        self.seed, self.layout = seed, layout
        with self.server.lock:
            for spec in self.scene.objects:
                p = self.layout[spec.name]
                joint = self.data.joint(f"{spec.body}_joint")
                adr, dof = self.model.jnt_qposadr[joint.id], self.model.jnt_dofadr[joint.id]
                self.data.qpos[adr:adr + 3] = (p.x, p.y, spec.half_height + 0.001)
                self.data.qpos[adr + 3:adr + 7] = yaw_quat(p.yaw)
                self.data.qvel[dof:dof + 6] = 0.0
            mujoco.mj_forward(self.model, self.data)
        self.start_positions = {n: p for n, (p, _) in self.object_poses().items()}

    def lift_height(self, name: str) -> float:
        """How far the object is above where it started (the last layout)."""
        spec = object_spec(name)
        with self.server.lock:
            z = float(self.data.body(spec.body).xpos[2])
        return z - float(self.start_positions[name][2])

    def in_gripper(self, name: str) -> bool:
        """The object's centre lies between the finger pads and both fingers touch it."""
        spec = object_spec(name)
        with self.server.lock:
            hand = self.data.body(HAND)
            local = hand.xmat.reshape(3, 3).T @ (self.data.body(spec.body).xpos - hand.xpos)
            body_id = self.model.body(spec.body).id
            finger_ids = {self.model.body(f).id for f in FINGERS}
            touching = set()
            for c in self.data.contact[:self.data.ncon]:
                bodies = {int(self.model.geom_bodyid[c.geom1]), int(self.model.geom_bodyid[c.geom2])}
                if body_id in bodies:
                    touching |= bodies & finger_ids
        inside = bool(np.all(local >= GRASP_REGION_MIN) and np.all(local <= GRASP_REGION_MAX))
        return inside and touching == finger_ids

    def grasp_success(self, name: str) -> bool:
        """GraspVLA's success: the named object ≥10 cm above its start and held in the gripper."""
        return self.lift_height(name) >= LIFT_SUCCESS_M and self.in_gripper(name)

    # --- calibration ----------------------------------------------------------------
    def arm_silhouettes(self, position=HOME_POSITION, euler=HOME_RPY,
                        tcp_offset: float = 0.0) -> dict[str, np.ndarray]:
        """Boolean masks of the arm seen by each camera with its TCP at `position`/`euler`
        ('sxyz'). `tcp_offset` moves the TCP further along the hand's z (finger extensions).
        The joints are set by inverse kinematics for the snapshot only, then restored."""
        renderers = {cam.name: self.renderer(cam.name) for cam in self.scene.cameras}
        robot = robot_geom_ids(self.model)
        masks = {}
        try:
            with self.server.lock:
                saved = self.data.qpos.copy(), self.data.qvel.copy()
                try:
                    self._solve_ik(np.asarray(position, float), euler_to_matrix(np.asarray(euler, float)), TCP_OFFSET + tcp_offset)
                    for name, r in renderers.items():
                        r._renderer.enable_segmentation_rendering()
                        r._renderer.update_scene(self.data, camera=name)
                finally:
                    self.data.qpos[:], self.data.qvel[:] = saved
                    mujoco.mj_forward(self.model, self.data)
            for name, r in renderers.items():
                seg = r._renderer.render()
                masks[name] = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0], robot)
        finally:
            for r in renderers.values():
                r.close()
        return masks

    def _solve_ik(self, position: np.ndarray, rotation: np.ndarray, tcp: float, iters: int = 300) -> None:
        """Damped least squares on the arm joints (caller holds the lock)."""
        hand = self.model.body(HAND).id
        dofs = [self.model.joint(f"robot0_fr3_joint{i}").dofadr[0] for i in range(1, 8)]
        qadr = [self.model.joint(f"robot0_fr3_joint{i}").qposadr[0] for i in range(1, 8)]
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        for _ in range(iters):
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_comPos(self.model, self.data)
            R = self.data.xmat[hand].reshape(3, 3)
            point = self.data.xpos[hand] + R @ (0, 0, tcp)
            err_p = position - point
            err_r = 0.5 * sum(np.cross(R[:, i], rotation[:, i]) for i in range(3))
            if np.linalg.norm(err_p) < 1e-5 and np.linalg.norm(err_r) < 1e-4:
                break
            mujoco.mj_jac(self.model, self.data, jacp, jacr, point, hand)
            J = np.vstack([jacp[:, dofs], jacr[:, dofs]])
            dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), np.concatenate([err_p, err_r]))
            for a, d in zip(qadr, dq):
                self.data.qpos[a] += d
        mujoco.mj_forward(self.model, self.data)


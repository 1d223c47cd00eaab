"""The simulated GraspVLA table world on top of `SimServer`: a table, named graspable objects
laid out from a seed, the two training cameras rendered offscreen, and ground truth.

Camera geometry follows GraspVLA's set-up (robot base frame), read from calibration/nominal.yaml
(shared with the calibration tools): front at (1.356, 0, 0.539) m looking along −x, 25° down;
side at (0.5, 0.693, 0.5) m looking at (0.5, 0, 0.1) (30° down); vertical field of view 43° —
the angles the official real-robot set-up uses too (front (1.35, 0, 0.53) → (0.2, 0, 0),
side (0.5, 0.69, 0.5) → (0.5, 0, 0.1)).

Thread-safety: franky-sim steps physics on its own thread while holding `server.lock`;
every read of `data` here (poses, contacts, the render scene update) takes that lock, and
the slow part of rendering (rasterising the captured scene) runs outside it. A
`mujoco.Renderer` owns a GL context, so each `CameraRenderer` must stay on one thread.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import mujoco
import numpy as np

from graspvla_ros.calibration.geometry import camera_angles, look_rotation
from graspvla_ros.calibration.nominal import NominalCamera, load_nominal
from graspvla_ros.chunk import euler_to_matrix
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.sim.render import Snapshot
from graspvla_ros.sim.server import SimServer
from graspvla_ros.sim.settings import SimWorldSettings

WORKSPACE_X = (0.35, 0.75)
WORKSPACE_Y = (-0.25, 0.25)
TABLE_RGBA = "0.55 0.45 0.35 1"
LIFT_SUCCESS_M = 0.10
ROBOT_ROOT = "robot0_base"
HAND = "robot0_hand"
FINGERS = ("robot0_left_finger", "robot0_right_finger")
TCP_OFFSET = 0.1034  # hand frame origin → TCP (panda_EE) along the hand's z axis
# Grasp region in the hand frame: between the finger pads (opening along y), from the
# fingers' base to their tips.
GRASP_REGION_MIN = np.array([-0.03, -0.045, 0.055])
GRASP_REGION_MAX = np.array([0.03, 0.045, 0.115])


@dataclass(frozen=True)
class CameraSpec:
    name: str
    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy_deg: float = 43.0
    roll_deg: float = 0.0  # about the optical axis, clockwise seen from behind the camera

    @classmethod
    def from_pose(cls, name: str, pose: np.ndarray, fovy_deg: float = 43.0) -> CameraSpec:
        """From a camera → base transform (OpenCV axes), e.g. measured extrinsics from
        calibration/<camera>.yaml (`calibration.store.load_calibration(...).pose`)."""
        position, rotation = pose[:3, 3], pose[:3, :3]
        target = position + rotation[:, 2]
        return cls(name, tuple(map(float, position)), tuple(map(float, target)), fovy_deg, camera_angles(rotation)[2])

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera x (image right), y (image up) and z (backwards) in the world frame."""
        R = look_rotation(np.subtract(self.target, self.position), self.roll_deg)
        return R[:, 0], -R[:, 1], -R[:, 2]

    def focal_px(self, height: int) -> float:
        return height / 2 / math.tan(math.radians(self.fovy_deg) / 2)

    def project(self, point, width: int, height: int) -> tuple[float, float]:
        """Pixel (u right, v down) of a world point, pinhole model of the rendered image."""
        x, y, z = self.axes()
        rel = np.subtract(point, self.position)
        depth = -rel @ z
        f = self.focal_px(height)
        return width / 2 + f * (rel @ x) / depth, height / 2 - f * (rel @ y) / depth


def _nominal_spec(cam: NominalCamera) -> CameraSpec:
    return CameraSpec.from_pose(cam.name, cam.pose, cam.fovy_deg)


NOMINAL = load_nominal()
FRONT = _nominal_spec(NOMINAL.camera("front"))
SIDE = _nominal_spec(NOMINAL.camera("side"))
CAMERAS = (FRONT, SIDE)


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object: one or more MuJoCo primitives in one free body."""

    name: str
    rgba: tuple[float, float, float, float]
    geoms: tuple[dict, ...]  # MJCF geom attributes (type, size, pos, euler) of its parts
    half_height: float  # resting on the table: body origin this high above it
    radius: float  # footprint radius, for non-overlapping layouts
    mass: float = 0.05

    @property
    def body(self) -> str:
        return self.name.replace(" ", "_")


OBJECTS = (
    ObjectSpec("red cube", (0.85, 0.1, 0.1, 1), ({"type": "box", "size": "0.02 0.02 0.02"},), 0.02, 0.029),
    ObjectSpec("blue cylinder", (0.1, 0.25, 0.9, 1), ({"type": "cylinder", "size": "0.02 0.035"},), 0.035, 0.02),
    ObjectSpec("green ball", (0.1, 0.75, 0.2, 1), ({"type": "sphere", "size": "0.025"},), 0.025, 0.025),
    ObjectSpec("yellow capsule", (0.95, 0.85, 0.1, 1),
               ({"type": "capsule", "size": "0.018 0.03", "euler": "0 1.5708 0"},), 0.018, 0.048),
    ObjectSpec("purple bar", (0.55, 0.15, 0.75, 1), ({"type": "box", "size": "0.015 0.05 0.02"},), 0.02, 0.053),
    ObjectSpec("orange puck", (1.0, 0.5, 0.05, 1), ({"type": "cylinder", "size": "0.032 0.0125"},), 0.0125, 0.032),
    ObjectSpec("white egg", (0.95, 0.95, 0.92, 1), ({"type": "ellipsoid", "size": "0.032 0.024 0.02"},), 0.02, 0.032),
    ObjectSpec("pink dumbbell", (1.0, 0.45, 0.7, 1), (
        {"type": "cylinder", "size": "0.01 0.04", "euler": "1.5708 0 0"},
        {"type": "sphere", "size": "0.02", "pos": "0 0.045 0"},
        {"type": "sphere", "size": "0.02", "pos": "0 -0.045 0"}), 0.02, 0.065),
)


def object_spec(name: str) -> ObjectSpec:
    for spec in OBJECTS:
        if spec.name == name:
            return spec
    raise KeyError(f"no object named {name!r}; the world has: {', '.join(o.name for o in OBJECTS)}")


@dataclass(frozen=True)
class Placement:
    x: float
    y: float
    yaw: float


# A grasp puts the hand's palm (±10 cm along the closing line) this high above the table: an
# object taller than this stands clear of every other object by the palm's reach, so every
# object of a layout can be grasped.
PALM_HEIGHT = 0.055
PALM_REACH = 0.105


def _min_distance(a: ObjectSpec, b: ObjectSpec, clearance: float) -> float:
    d = a.radius + b.radius + clearance
    for tall in (a, b):
        if 2 * tall.half_height > PALM_HEIGHT:
            d = max(d, tall.radius + PALM_REACH)
    return d


def random_layout(seed: int, objects=OBJECTS, clearance: float = 0.02,
                  tries: int = 10_000, attempts: int = 100) -> dict[str, Placement]:
    """Non-overlapping placements of `objects` inside the workspace, reproducible from `seed`.

    Objects are placed one by one; when one finds no free spot in `tries` draws (the earlier
    ones boxed it in), the whole layout starts over, drawing on from the same generator, so
    every seed yields a layout and seeds that fit at once keep the layout they always had."""
    rng = np.random.default_rng(seed)
    for _ in range(attempts):
        placed = _place(rng, objects, clearance, tries)
        if placed is not None:
            return placed
    raise RuntimeError(f"no non-overlapping layout of {len(objects)} objects in {attempts} attempts (seed {seed})")


def _place(rng: np.random.Generator, objects, clearance: float, tries: int) -> dict[str, Placement] | None:
    placed: dict[str, Placement] = {}
    for spec in objects:
        for _ in range(tries):
            x = rng.uniform(WORKSPACE_X[0] + spec.radius, WORKSPACE_X[1] - spec.radius)
            y = rng.uniform(WORKSPACE_Y[0] + spec.radius, WORKSPACE_Y[1] - spec.radius)
            if all(math.hypot(x - p.x, y - p.y) >= _min_distance(spec, object_spec(n), clearance)
                   for n, p in placed.items()):
                placed[spec.name] = Placement(x, y, rng.uniform(-math.pi, math.pi))
                break
        else:
            return None
    return placed


def _fmt(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


@dataclass
class TableScene:
    """Adds the table, the objects (at `layout`) and the cameras to franky-sim's MJCF world."""

    layout: dict[str, Placement]
    objects: tuple[ObjectSpec, ...] = OBJECTS
    cameras: tuple[CameraSpec, ...] = CAMERAS
    table_height: float = 0.75
    extra: list = field(default_factory=list)

    def __call__(self, worldbody: ET.Element) -> None:
        for geom in worldbody.findall("geom"):
            if geom.get("name") == "ground":  # the floor goes under the table
                geom.set("pos", f"0 0 {-self.table_height:g}")
        ET.SubElement(worldbody, "geom", name="table", type="box", size="0.55 0.7 0.02",
                      pos="0.45 0 -0.02", rgba=TABLE_RGBA, friction="1 0.005 0.0001")
        for spec in self.objects:
            p = self.layout[spec.name]
            body = ET.SubElement(worldbody, "body", name=spec.body,
                                 pos=_fmt((p.x, p.y, spec.half_height + 0.001)), quat=_fmt(_yaw_quat(p.yaw)))
            ET.SubElement(body, "freejoint", name=f"{spec.body}_joint")
            mass = spec.mass / len(spec.geoms)
            for i, g in enumerate(spec.geoms):
                ET.SubElement(body, "geom", name=f"{spec.body}_geom{i}", rgba=_fmt(spec.rgba), mass=f"{mass:g}",
                              friction="1.5 0.01 0.001", condim="4", **g)
        for cam in self.cameras:
            x, y, _ = cam.axes()
            ET.SubElement(worldbody, "camera", name=cam.name, pos=_fmt(cam.position),
                          xyaxes=_fmt((*x, *y)), fovy=f"{cam.fovy_deg:g}")


def robot_geom_ids(model: mujoco.MjModel) -> np.ndarray:
    """Geoms of the arm and hand (every body under the robot's root)."""
    root = model.body(ROBOT_ROOT).id
    ids = []
    for g in range(model.ngeom):
        b = int(model.geom_bodyid[g])
        while b not in (0, root):
            b = int(model.body_parentid[b])
        if b == root:
            ids.append(g)
    return np.array(ids)


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
                self.data.qpos[adr + 3:adr + 7] = _yaw_quat(p.yaw)
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
    def robot_geom_ids(self) -> np.ndarray:
        return robot_geom_ids(self.model)

    def arm_silhouettes(self, position=HOME_POSITION, euler=HOME_RPY,
                        tcp_offset: float = 0.0) -> dict[str, np.ndarray]:
        """Boolean masks of the arm seen by each camera with its TCP at `position`/`euler`
        ('sxyz'). `tcp_offset` moves the TCP further along the hand's z (finger extensions).
        The joints are set by inverse kinematics for the snapshot only, then restored."""
        renderers = {cam.name: self.renderer(cam.name) for cam in self.scene.cameras}
        robot = self.robot_geom_ids()
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


"""The simulated GraspVLA table as MJCF: the two training cameras, the graspable objects,
their seeded layouts, and `TableScene`, which adds them to franky-sim's world. No physics runs
here: `sim.world.SimWorld` runs the scene, `sim.robot_scene.RobotScene` poses the arm in it.

Camera geometry follows GraspVLA's set-up (robot base frame), read from calibration/nominal.yaml
(shared with the calibration tools): front at (1.356, 0, 0.539) m looking along −x, 25° down;
side at (0.5, 0.693, 0.5) m looking at (0.5, 0, 0.1) (30° down); vertical field of view 43° —
the angles the official real-robot set-up uses too (front (1.35, 0, 0.53) → (0.2, 0, 0),
side (0.5, 0.69, 0.5) → (0.5, 0, 0.1)).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import mujoco
import numpy as np

from graspvla_ros.calibration.geometry import camera_angles, look_rotation
from graspvla_ros.calibration.nominal import NominalCamera, load_nominal

WORKSPACE_X = (0.35, 0.75)
WORKSPACE_Y = (-0.25, 0.25)
TABLE_RGBA = "0.55 0.45 0.35 1"
ROBOT_ROOT = "robot0_base"


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

    def rotation(self) -> np.ndarray:
        """Camera → world rotation in OpenCV axes (x image right, y image down, z forward)."""
        return look_rotation(np.subtract(self.target, self.position), self.roll_deg)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera x (image right), y (image up) and z (backwards) in the world frame."""
        R = self.rotation()
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


def yaw_quat(yaw: float) -> np.ndarray:
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
                                 pos=_fmt((p.x, p.y, spec.half_height + 0.001)), quat=_fmt(yaw_quat(p.yaw)))
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

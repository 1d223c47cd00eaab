"""Pure planning: chunk + current pose + time → timed TCP waypoints and franky set-points.

No robot, no clock, no threads: every function takes the time it needs as an argument, so
all of it is unit-tested without a robot (tests/test_control_planner.py).

Invariants:
- a gripper change is never lost: latency compensation moves a dropped step's gripper change
  onto the next kept step, and keeps the last step when all have passed but one carries a change;
- a gripper change ends its segment: the arm comes to rest at the waypoint that carries it
  (zero velocity there) before the change is made (the official client's position gate);
- set-points are FLANGE-side (franky's configured end-effector) poses and twists whose TCP,
  `tcp_offset` further along the end-effector z, follows the planned TCP path and velocity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import GRIPPER_HOLD, Pose, Waypoint


@dataclass(frozen=True)
class Segment:
    """Waypoints to move through, then (if `gripper` is not None) a gripper change to make
    with the arm held at the last of them."""

    waypoints: tuple[Waypoint, ...]
    gripper: float | None = None


@dataclass(frozen=True)
class Setpoint:
    """One franky Cartesian waypoint: flange pose, flange twist there, minimum time to reach it."""

    flange: Pose
    linear: np.ndarray
    angular: np.ndarray
    duration: float


def latency_compensate(targets: tuple[Waypoint, ...] | list[Waypoint], now_ns: int) -> list[Waypoint]:
    """The steps not yet due at `now_ns`; a gripper change carried by a dropped step moves onto
    the first kept step. If every step has passed, the last step is kept (retimed to now) only
    when a change rides on it, else nothing is left."""
    kept = [w for w in targets if w.stamp_ns >= now_ns]
    dropped = [w.gripper for w in targets[:len(targets) - len(kept)] if w.gripper != GRIPPER_HOLD]
    if not dropped:
        return kept
    carried = dropped[-1]
    if kept:
        first = kept[0]
        return [Waypoint(first.stamp_ns, first.pose, first.gripper if first.gripper != GRIPPER_HOLD else carried)] + kept[1:]
    return [Waypoint(now_ns, targets[-1].pose, carried)]


def split_at_gripper(waypoints: list[Waypoint], commanded: float) -> list[Segment]:
    """Cut the path after each waypoint whose gripper command differs from the state commanded
    before it (−1/+1; 0 keeps it). The last segment has gripper None unless a change ends it."""
    segments, current = [], []
    for w in waypoints:
        current.append(w)
        if w.gripper != GRIPPER_HOLD and w.gripper != commanded:
            segments.append(Segment(tuple(current), w.gripper))
            commanded, current = w.gripper, []
    if current or not segments:
        segments.append(Segment(tuple(current)))
    return segments


def retime(waypoints: tuple[Waypoint, ...], start_ns: int, dt: float) -> tuple[Waypoint, ...]:
    """The same waypoints due every `dt` s after `start_ns` (the rest of a chunk after a gripper
    change, whose original due times passed while the fingers moved)."""
    return tuple(Waypoint(start_ns + round((k + 1) * dt * 1e9), w.pose, w.gripper) for k, w in enumerate(waypoints))


def tcp_to_flange(tcp: Pose, tcp_offset: float) -> Pose:
    """The configured end-effector pose whose TCP (`tcp_offset` m further along its z) is `tcp`."""
    return Pose(tcp.position - tcp.rotation[:, 2] * tcp_offset, tcp.rotation)


def flange_to_tcp(flange: Pose, tcp_offset: float) -> Pose:
    return Pose(flange.position + flange.rotation[:, 2] * tcp_offset, flange.rotation)


def streaming_setpoints(start: Pose, waypoints: list[Waypoint] | tuple[Waypoint, ...], now_ns: int,
                        tcp_offset: float, twist_limits: tuple[float, float] = (np.inf, np.inf)) -> list[Setpoint]:
    """Set-points through every waypoint, each reached at its due time with the TCP velocity of
    the path there (central differences over the neighbours), at rest at the last one.

    The TCP velocity is turned into the flange's: v_flange = v_tcp − ω × r, with r the flange →
    TCP vector in the base frame (a rotating hand moves its flange and its TCP differently). A
    twist faster than `twist_limits` (m/s, rad/s) is scaled down whole, keeping its direction:
    the planner refuses a waypoint velocity above its limits, and the waypoint is then passed
    slower (its due time becomes a minimum)."""
    poses = [start] + [w.pose for w in waypoints]
    times = [now_ns * 1e-9] + [w.stamp_ns * 1e-9 for w in waypoints]
    out = []
    for k in range(1, len(poses)):
        if k < len(poses) - 1:
            span = max(times[k + 1] - times[k - 1], 1e-3)
            lin = (poses[k + 1].position - poses[k - 1].position) / span
            ang = Rotation.from_matrix(poses[k + 1].rotation @ poses[k - 1].rotation.T).as_rotvec() / span
        else:
            lin, ang = np.zeros(3), np.zeros(3)
        r = poses[k].rotation[:, 2] * tcp_offset
        lin = lin - np.cross(ang, r)
        scale = min(1.0, twist_limits[0] / max(np.linalg.norm(lin), 1e-12), twist_limits[1] / max(np.linalg.norm(ang), 1e-12))
        out.append(Setpoint(tcp_to_flange(poses[k], tcp_offset), lin * scale, ang * scale,
                            max(1e-3, times[k] - times[k - 1])))
    return out


def reached(here: Pose, target: Pose, translation: float, rotation: float) -> bool:
    """Within `translation` m and `rotation` rad of `target`."""
    return here.translation_to(target) <= translation and here.rotation_to(target) <= rotation

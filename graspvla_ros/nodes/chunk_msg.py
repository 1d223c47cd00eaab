"""The ROS encoding of an action chunk: trajectory_msgs/MultiDOFJointTrajectory.

- header.stamp: observation time (the chunk's anchor time); header.frame_id: base frame.
- joint_names: ["ee", "gripper"].
- points[0], time_from_start 0: transforms[0] = the end-effector pose at observation time
  (the anchor), transforms[1].translation.x = the gripper state then (+1 open, -1 closed).
- points[0].velocities: [linear (episode, seq, 0)], the policy's ids of the cycle (exact integers,
  < 2^53); none from a publisher without ids (the chunk's ids are then 0: ordered by stamp only).
  The anchor has no velocity to carry: its `velocities` slot is where the ids travel with the chunk.
- points[k], k = 1..N, time_from_start k·dt: transforms[0] = absolute target pose k in the
  base frame, transforms[1].translation.x = gripper command (-1 close, 0 hold, +1 open).

Absolute targets make the message a valid trajectory for any consumer; the GraspVLA deltas
are recovered exactly (up to float rounding) with ActionChunk.from_targets.
"""
from __future__ import annotations

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Quaternion, Transform, Twist, Vector3
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.interfaces import split_ns
from graspvla_ros.nodes.convert import ns_to_stamp, stamp_to_ns

JOINT_NAMES = ["ee", "gripper"]


def _transform(pose: Pose) -> Transform:
    q = pose.quat_xyzw
    return Transform(translation=Vector3(x=float(pose.position[0]), y=float(pose.position[1]), z=float(pose.position[2])),
                     rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def _pose(t: Transform) -> Pose:
    r, q = t.translation, t.rotation
    return Pose.from_xyz_quat((r.x, r.y, r.z), (q.x, q.y, q.z, q.w))


def _point(pose: Pose, gripper: float, since_start_ns: int) -> MultiDOFJointTrajectoryPoint:
    sec, nanosec = split_ns(since_start_ns)
    return MultiDOFJointTrajectoryPoint(
        transforms=[_transform(pose), Transform(translation=Vector3(x=float(gripper)))],
        time_from_start=Duration(sec=sec, nanosec=nanosec))


def encode(chunk: ActionChunk) -> MultiDOFJointTrajectory:
    msg = MultiDOFJointTrajectory(joint_names=list(JOINT_NAMES))
    msg.header.stamp = ns_to_stamp(chunk.stamp_ns)
    msg.header.frame_id = chunk.frame_id
    msg.points = [_point(chunk.anchor, chunk.anchor_gripper, 0)] + [
        _point(w.pose, w.gripper, w.stamp_ns - chunk.stamp_ns) for w in chunk.targets]
    if chunk.episode:
        msg.points[0].velocities = [Twist(linear=Vector3(x=float(chunk.episode), y=float(chunk.seq)))]
    return msg


def _ids(anchor: MultiDOFJointTrajectoryPoint) -> tuple[int, int]:
    if not anchor.velocities:
        return 0, 0
    ids = (anchor.velocities[0].linear.x, anchor.velocities[0].linear.y)
    if not all(0 <= v < 2**53 and float(v).is_integer() for v in ids):
        raise ValueError(f"point 0's velocities carry the ids (episode, seq): whole numbers ≥ 0, got {ids}")
    return int(ids[0]), int(ids[1])


def decode(msg: MultiDOFJointTrajectory) -> ActionChunk:
    """The chunk a message carries; raises ValueError with the reason if it is not one."""
    if list(msg.joint_names) != JOINT_NAMES:
        raise ValueError(f"joint_names must be {JOINT_NAMES}, got {list(msg.joint_names)}")
    if len(msg.points) < 2:
        raise ValueError("a chunk needs the anchor point and at least one target")
    for i, p in enumerate(msg.points):
        if len(p.transforms) != 2:
            raise ValueError(f"point {i} must have 2 transforms (ee, gripper), has {len(p.transforms)}")
    offsets = [stamp_to_ns(p.time_from_start) for p in msg.points]
    if offsets[0] != 0:
        raise ValueError("point 0 (the anchor) must have time_from_start 0")
    steps = [b - a for a, b in zip(offsets, offsets[1:])]
    if any(s <= 0 for s in steps) or max(steps) - min(steps) > 1_000:  # 1 µs rounding
        raise ValueError(f"targets must be evenly spaced in time, got offsets {offsets} ns")
    anchor = msg.points[0]
    episode, seq = _ids(anchor)
    return ActionChunk.from_targets(
        stamp_ns=stamp_to_ns(msg.header.stamp), dt=steps[0] * 1e-9, frame_id=msg.header.frame_id,
        anchor=_pose(anchor.transforms[0]), poses=[_pose(p.transforms[0]) for p in msg.points[1:]],
        grippers=[p.transforms[1].translation.x for p in msg.points[1:]],
        anchor_gripper=anchor.transforms[1].translation.x, episode=episode, seq=seq)

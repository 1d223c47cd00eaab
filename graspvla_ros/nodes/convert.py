"""Pose and stamp ↔ ROS message conversions (one place; the chunk encoding is in chunk_msg)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped

from graspvla_ros.chunk import Pose
from graspvla_ros.interfaces import split_ns, stamp_ns


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time (or Duration) → integer nanoseconds."""
    return stamp_ns(stamp.sec, stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


def pose_to_msg(pose: Pose, frame_id: str, stamp_ns: int) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, pose.position)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = map(float, pose.quat_xyzw)
    return msg


def pose_from_msg(pose) -> Pose:
    """geometry_msgs/Pose → Pose."""
    p, q = pose.position, pose.orientation
    return Pose.from_xyz_quat((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))

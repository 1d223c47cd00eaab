"""Pose and stamp conversions between ROS messages and the pure core's types (one place)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped

from graspvla_ros.chunk import Pose


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time → integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def time_msg(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def pose_from_msg(pose) -> Pose:
    """geometry_msgs/Pose → Pose."""
    p, q = pose.position, pose.orientation
    return Pose.from_xyz_quat((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def pose_stamped(pose: Pose, frame_id: str, ns: int) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = time_msg(ns), frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose.position)
    q = pose.quat_xyzw
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = (float(v) for v in q)
    return msg

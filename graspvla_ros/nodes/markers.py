"""RViz/Foxglove markers (visualization_msgs/MarkerArray): the controller's planned TCP path and
the policy's predicted grasp, built in one place so both look alike."""
from __future__ import annotations

from collections.abc import Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from graspvla_ros.chunk import Pose
from graspvla_ros.nodes.convert import pose_to_msg

OPEN_COLOUR = ColorRGBA(r=0.1, g=0.9, b=0.1, a=0.9)
CLOSED_COLOUR = ColorRGBA(r=1.0, g=0.1, b=0.1, a=0.9)
FINGER_GAP = 0.08   # m between the drawn fingers: the Franka Hand open
FINGER_LENGTH = 0.05
STEM = 0.05


def _point(x: float, y: float, z: float) -> Point:
    return Point(x=float(x), y=float(y), z=float(z))


def path_markers(poses: Sequence[Pose], frame_id: str, stamp: Time, closed: bool) -> MarkerArray:
    """A line through the TCP path and a sphere at its end in the colour of the commanded
    gripper state (green open, red closed)."""
    header = Header(stamp=stamp, frame_id=frame_id)
    line = Marker(header=header, ns="planned_path", id=0, type=Marker.LINE_STRIP, action=Marker.ADD,
                  points=[_point(*p.position) for p in poses], color=ColorRGBA(r=0.2, g=0.4, b=1.0, a=1.0))
    line.scale.x = 0.004
    line.pose.orientation.w = 1.0
    end = Marker(header=header, ns="planned_gripper", id=0, type=Marker.SPHERE, action=Marker.ADD,
                 color=CLOSED_COLOUR if closed else OPEN_COLOUR)
    end.pose = pose_to_msg(poses[-1], frame_id, 0).pose
    end.scale.x = end.scale.y = end.scale.z = 0.02
    return MarkerArray(markers=[line, end])


def grasp_markers(grasp: Pose, frame_id: str, stamp: Time) -> MarkerArray:
    """An open gripper drawn at the grasp pose: two fingers along its y (the fingers' closing
    axis) ending at the grasp point, and a stem back along its z (the approach)."""
    header = Header(stamp=stamp, frame_id=frame_id)
    half, back = FINGER_GAP / 2, -FINGER_LENGTH
    segments = [(0, -half, back), (0, -half, 0), (0, half, back), (0, half, 0),   # the fingers
                (0, -half, back), (0, half, back), (0, 0, back), (0, 0, back - STEM)]   # palm, stem
    gripper = Marker(header=header, ns="grasp", id=0, type=Marker.LINE_LIST, action=Marker.ADD,
                     points=[_point(*p) for p in segments], color=ColorRGBA(r=1.0, g=0.6, b=0.0, a=1.0))
    gripper.pose = pose_to_msg(grasp, frame_id, 0).pose
    gripper.scale.x = 0.005
    return MarkerArray(markers=[gripper])

"""/tf and /tf_static, where the `tf2_msgs` message package exists.

apt ROS 2 has it; the PyPI ROS 2 wheels do not, and `make` builds it into the venv from its
one-line definition (`scripts/build_tf2_msgs`). Without it the stack runs all the same and says
once that RViz/Foxglove get no transforms (`graspvla doctor` says it too): `/graspvla/ee_pose`
carries the TCP pose either way."""
from __future__ import annotations

from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from graspvla_ros.chunk import Pose
from graspvla_ros.interfaces import TF, TF_STATIC
from graspvla_ros.nodes.convert import ns_to_stamp

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # the PyPI wheels without the set-up's build
    TFMessage = None

TF_MISSING = ("the tf2_msgs message package is not installed (the PyPI ROS 2 wheels have none; apt ROS has it; "
              "`make venv` builds it): /tf and /tf_static are off, RViz/Foxglove show no transforms")
# tf2_ros's own profiles: the static broadcaster latches one message holding every transform
STATIC_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
DYNAMIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def transform_msg(parent: str, child: str, stamp_ns: int, pose: Pose) -> TransformStamped:
    """`pose` of `child` in `parent` (T_parent_child) as a TransformStamped."""
    msg = TransformStamped()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_stamp(stamp_ns), parent, child
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = map(float, pose.position)
    q.x, q.y, q.z, q.w = map(float, pose.quat_xyzw)
    return msg


class TfBroadcaster:
    """Sends transforms on /tf (`static=False`) or latched on /tf_static; without tf2_msgs it
    logs TF_MISSING once and sends nothing (`enabled` is False)."""

    def __init__(self, node: Node, static: bool = False):
        self.enabled = TFMessage is not None
        self._pub = None
        if self.enabled:
            self._pub = node.create_publisher(TFMessage, TF_STATIC if static else TF,
                                              STATIC_QOS if static else DYNAMIC_QOS)
        else:
            node.get_logger().info(TF_MISSING)

    def send(self, transforms: list[TransformStamped]) -> None:
        if self._pub is not None and transforms:
            self._pub.publish(TFMessage(transforms=transforms))

"""policy_node's live parameters through real rclpy: `rate_hz`, `max_image_age` and
`episode_timeout` set on the running node (its set_parameters service, as `ros2 param set`)
change what it does; a bad value and a read-only parameter are refused with the reason.

The policy runs alone with the expert backend; the test publishes what the graph would (both
views, the TCP pose stream, the simulated world's ground truth) and counts the chunks."""
from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from conftest import wait_for
from helpers import graph_waiter, say_until
from graspvla_ros.bringup import Bringup
from graspvla_ros.chunk import Pose
from graspvla_ros.graph import policy
from graspvla_ros.nodes.camera_node import image_msg
from graspvla_ros.nodes.convert import pose_to_msg

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
STATUS = QoSProfile(depth=20, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
HOME = Pose.from_xyz_rpy((0.36, 0.0, 0.49), (-math.pi, 0.0, math.pi / 4))


def _publish_world(node, stop: threading.Event) -> None:
    """Views at 10 Hz (320×240) and the TCP pose at 100 Hz, stamped with the node's clock; the
    ground truth of one cube."""
    names = node.create_publisher(String, "/sim/object_names", LATCHED)
    names.publish(String(data=json.dumps(["red cube"])))
    objects = node.create_publisher(PoseArray, "/sim/object_poses", 10)
    cube = PoseMsg()
    cube.position.x, cube.position.z, cube.orientation.w = 0.5, 0.02, 1.0
    poses = node.create_publisher(PoseStamped, "/graspvla/ee_pose", 50)
    views = [node.create_publisher(Image, f"/{v}/color/image_raw", qos_profile_sensor_data) for v in ("front", "side")]
    rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    tick = 0
    while not stop.wait(0.01):
        now = node.get_clock().now().nanoseconds
        poses.publish(pose_to_msg(HOME, "base", now))
        if tick % 10 == 0:
            objects.publish(PoseArray(poses=[cube]))
            for view, pub in zip(("front", "side"), views):
                pub.publish(image_msg(rgb, "rgb8", f"{view}_color_optical_frame", now))
        tick += 1


def test_live_parameters_change_the_running_policy_and_read_only_ones_are_refused(ros_node):
    chunks: list[float] = []     # monotonic arrival times
    status: list[dict] = []
    ros_node.create_subscription(MultiDOFJointTrajectory, "/graspvla/action_chunk",
                                 lambda m: chunks.append(time.monotonic()), 50)
    ros_node.create_subscription(String, "/graspvla/status", lambda m: status.append(json.loads(m.data)), STATUS)
    say = ros_node.create_publisher(String, "/graspvla/instruction", 10)
    client = ros_node.create_client(SetParameters, "/policy/set_parameters")

    def set_param(name, value):
        """The SetParameters result for one parameter; sent again while unanswered (the same
        set twice is harmless), as a request sent before discovery completes is lost."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
            answered = time.monotonic() + 5
            while not future.done() and time.monotonic() < answered:
                time.sleep(0.02)
            if future.done():
                return future.result().results[0]
            client.remove_pending_request(future)
        raise AssertionError(f"no answer from /policy/set_parameters for {name}")

    stop = threading.Event()
    publisher = threading.Thread(target=_publish_world, args=(ros_node, stop), daemon=True)
    publisher.start()
    try:
        with Bringup([policy(backend="expert", rate_hz=5.0, max_image_age=1.0)]) as graph:
            until = graph_waiter(graph, wait_for)

            until(lambda: say.get_subscription_count() > 0, 120, "the policy")
            say_until(until, say, "pick up the red cube", lambda: chunks, "the first chunk")
            until(lambda: len(chunks) >= 6, 120, "chunks at 5 Hz")
            gap = (chunks[-1] - chunks[-6]) / 5

            assert set_param("rate_hz", 0.001).successful
            n = len(chunks)
            # at most the cycle under way then; nothing more for 5 gaps at the old rate (≥ 3 s)
            time.sleep(max(3.0, 5 * gap))
            assert len(chunks) <= n + 1, f"{len(chunks) - n} chunks at 0.001 Hz (one every {gap:.2f} s before)"

            n = len(chunks)
            assert set_param("rate_hz", 5.0).successful
            until(lambda: len(chunks) >= n + 3, 120, "chunks again: the 1000 s wait is cut short")

            refused = set_param("rate_hz", -1.0)
            assert not refused.successful and "rate_hz must be > 0" in refused.reason
            refused = set_param("backend", "graspvla")
            assert not refused.successful and "read-only" in refused.reason

            assert set_param("max_image_age", 1e-6).successful   # every pair is too old now
            n = len(chunks)
            time.sleep(max(3.0, 5 * gap))
            assert len(chunks) <= n + 1, "chunks from views older than max_image_age"
            assert set_param("max_image_age", 1.0).successful
            until(lambda: len(chunks) >= n + 3, 120, "chunks again at max_image_age 1 s")

            assert set_param("episode_timeout", 0.5).successful   # the running episode is older
            until(lambda: status and status[-1]["phase"] == "timeout", 30, "the episode to time out")
            assert "within 0.5 s" in status[-1]["reason"]
    finally:
        stop.set()
        publisher.join(timeout=5)

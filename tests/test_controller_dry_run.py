"""controller_node with `dry_run:=true` against franky-sim. A module of its own: the controller's
topics are absolute, so no other controller (test_controller_node's module graph) may run
beside it, publishing poses of an arm that does move and taking the chunks."""
import dataclasses
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray, PoseStamped
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from conftest import franky_sim_process, wait_for
from graspvla_ros.bringup import Bringup
from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.graph import SIM_CONTROLLER, controller
from graspvla_ros.nodes import chunk_msg

pytestmark = [pytest.mark.ros, pytest.mark.sim]


def test_dry_run_publishes_the_planned_path_and_the_arm_stays(ros_node):
    """`dry_run:=true`: chunks are planned and published on ~/planned_path and ~/planned_markers;
    the simulated arm stays within 0.5 mm."""
    paths, markers = [], []
    ros_node.create_subscription(PoseArray, "/dry/controller/planned_path", paths.append, 10)
    ros_node.create_subscription(MarkerArray, "/dry/controller/planned_markers", markers.append, 10)
    poses = []
    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", lambda m: poses.append(
        np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])), 50)
    pub = ros_node.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", 10)
    spec = dataclasses.replace(controller(**SIM_CONTROLLER, dry_run=True), namespace="/dry")
    with franky_sim_process() as host, Bringup([dataclasses.replace(spec, params={**spec.params, "robot_ip": host})]):
        wait_for(lambda: poses, 60, "the controller's EE pose")
        wait_for(lambda: pub.get_subscription_count() > 0, 10, "the controller to subscribe")
        start = poses[-1]
        for _ in range(5):
            now = ros_node.get_clock().now().nanoseconds
            anchor = Pose(poses[-1], Pose.from_xyz_rpy((0, 0, 0), (np.pi, 0, 0)).rotation)
            pub.publish(chunk_msg.encode(ActionChunk(now, 0.1, "base", np.array([[0.004, 0, 0, 0, 0, 0, 0]] * 8), anchor)))
            time.sleep(0.2)
        wait_for(lambda: any(len(p.poses) >= 2 for p in paths), 20, "a planned path of the chunks")
        wait_for(lambda: markers, 10, "the planned markers")
        assert max(p.poses[-1].position.x for p in paths) > start[0] + 0.01, "the path should lead along +x"
        moved = max(np.linalg.norm(p - start) for p in list(poses)[-100:])
        assert moved < 5e-4, f"the arm moved {moved * 1e3:.2f} mm in a dry run"

"""The demo's scripted policy node drives controller_node (real rclpy) on franky-sim."""
import threading

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64

from conftest import wait_for
from graspvla_ros.bringup import Bringup
from graspvla_ros.deployment import HOME_POSITION
from graspvla_ros.graph import SIM_CONTROLLER, controller, scripted_chunks

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SIDE = 0.04


def test_scripted_square_and_gripper_reach_the_simulated_arm(sim_host, ros_node):
    lock, poses, widths = threading.Lock(), [], []

    def keep(items, value):
        with lock:
            items.append(value)

    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", lambda m: keep(
        poses, (m.pose.position.x, m.pose.position.y, m.pose.position.z)), 50)
    ros_node.create_subscription(Float64, "/graspvla/gripper_width", lambda m: keep(widths, m.data), 50)
    # the scripted node starts once this test receives poses: it must see the whole square
    with Bringup([controller(robot_ip=sim_host, **SIM_CONTROLLER)]) as arm:
        wait_for(lambda: poses, 30, "the controller's TCP pose")
        with Bringup([scripted_chunks(side=SIDE, speed=0.04, gripper_hold=1.2, start_timeout=30.0)]) as script:
            done = wait_for(lambda: [rc for _, rc in script.failed()], 60, "the scripted node to finish")
        assert done == [0]
        assert not arm.failed(), "the controller must keep running"
        wait_for(lambda: widths and widths[-1] > 0.075, 10, "the gripper to open again")
    with lock:
        xyz, width = np.array(poses), np.array(widths)
    start = np.array(HOME_POSITION)
    # the controller publishes poses while it homes; the square starts at home
    xyz = xyz[np.argmax(np.linalg.norm(xyz - start, axis=1) < 2e-3):]
    span = xyz.max(axis=0) - xyz.min(axis=0)
    assert span[0] == pytest.approx(SIDE, abs=3e-3) and span[1] == pytest.approx(SIDE, abs=3e-3)
    assert span[2] < 3e-3, "the square is horizontal"
    assert np.linalg.norm(xyz[-1] - start) < 2e-3, "back at the start corner"
    assert width.min() < 0.005, "the gripper closed"

"""The demo's scripted policy node drives controller_node (real rclpy) on franky-sim."""
import threading

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import Float64, String

from conftest import wait_for
from graspvla_ros.bringup import Bringup
from graspvla_ros.control import HOME_POSITION
from graspvla_ros.graph import SIM_CONTROLLER, controller, scripted_chunks

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SIDE = 0.04


def test_scripted_square_and_gripper_reach_the_simulated_arm(sim_host, ros_node):
    lock, poses, widths = threading.Lock(), [], []

    def keep(items, value):
        with lock:
            items.append(value)

    homed = []  # the number of poses received when the controller first reported IDLE (homed)

    def on_state(m):
        with lock:
            if m.data == "IDLE" and not homed:
                homed.append(len(poses))
    ros_node.create_subscription(String, "/controller/state", on_state,
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", lambda m: keep(
        poses, (m.pose.position.x, m.pose.position.y, m.pose.position.z)), 50)
    ros_node.create_subscription(Float64, "/graspvla/gripper_width", lambda m: keep(widths, m.data), 50)
    specs = [controller(robot_ip=sim_host, **SIM_CONTROLLER),
             scripted_chunks(side=SIDE, speed=0.04, gripper_hold=1.2, start_timeout=30.0)]
    with Bringup(specs) as graph:
        wait_for(lambda: poses, 30, "the controller's TCP pose")
        done = wait_for(lambda: [rc for name, rc in graph.failed() if name == "scripted_chunks"], 60,
                        "the scripted node to finish")
        assert done == [0]
        assert not [name for name, _ in graph.failed() if name == "controller"], "the controller must keep running"
        wait_for(lambda: widths and widths[-1] > 0.075, 10, "the gripper to open again")
    with lock:
        xyz, width = np.array(poses[homed[0]:]), np.array(widths)
    start = np.array(HOME_POSITION)  # the controller homes before it takes chunks
    span = xyz.max(axis=0) - xyz.min(axis=0)
    assert span[0] == pytest.approx(SIDE, abs=3e-3) and span[1] == pytest.approx(SIDE, abs=3e-3)
    assert span[2] < 3e-3, "the square is horizontal"
    assert np.linalg.norm(xyz[-1] - start) < 2e-3, "back at the start corner"
    assert width.min() < 0.005, "the gripper closed"

"""controller_node over real rclpy against franky-sim, started the way bringup starts it."""
import dataclasses
import re
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from conftest import wait_for
from graspvla_ros.bringup import Bringup
from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.graph import SIM_CONTROLLER, controller
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.common import call_trigger

pytestmark = [pytest.mark.ros, pytest.mark.sim]


class Listener:
    def __init__(self, node):
        self.lock = threading.Lock()
        self.poses, self.joints, self.states, self.rejections = [], [], [], []
        node.create_subscription(PoseStamped, "/graspvla/ee_pose", self._pose, 50)
        node.create_subscription(JointState, "/joint_states", lambda m: self._add(self.joints, list(m.position[:7])), 50)
        node.create_subscription(String, "/controller/state", lambda m: self._add(self.states, m.data),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        node.create_subscription(String, "/controller/rejection", lambda m: self._add(self.rejections, m.data), 10)

    def _add(self, items, value):
        with self.lock:
            items.append(value)

    def _pose(self, m):
        p, q = m.pose.position, m.pose.orientation
        self._add(self.poses, (m.header.stamp, Pose.from_xyz_quat((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))))

    def latest(self):
        with self.lock:
            return self.poses[-1]


@pytest.fixture(scope="module")
def controller_graph(sim_host):
    with Bringup([controller(robot_ip=sim_host, **SIM_CONTROLLER, **{"safety.hold_timeout": 0.6})]) as graph:
        yield graph


def call(node, name):
    reply = call_trigger(node.create_client(Trigger, name), 30)
    assert reply is not None, f"{name} did not answer"
    return reply


def test_chunks_on_the_topic_move_the_arm_and_state_streams(controller_graph, ros_node):
    listen = Listener(ros_node)
    pub = ros_node.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", 10)
    wait_for(lambda: listen.poses, 30, "the controller's EE pose")
    assert call(ros_node, "/controller/home").success
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the controller to subscribe")

    n0 = len(listen.joints)  # the state streams (its rate, 200 Hz, is measured by the benchmark)
    wait_for(lambda: len(listen.joints) >= n0 + 200, 30, "200 more /joint_states")

    _, start = listen.latest()
    for _ in range(5):
        _, anchor = listen.latest()
        now = ros_node.get_clock().now().nanoseconds
        rows = [[0.004, 0, 0, 0, 0, 0, 0]] * 8
        pub.publish(chunk_msg.encode(ActionChunk(now, 0.1, "base", np.array(rows, float), anchor)))
        time.sleep(0.2)
    wait_for(lambda: "HOLDING" in listen.states, 10, "the watchdog to hold")
    _, end = listen.latest()
    assert end.position[0] - start.position[0] > 0.01, (listen.rejections, listen.states)
    assert "RUNNING" in listen.states


def test_tf_carries_the_tcp_pose_of_ee_pose_at_its_rate(controller_graph, ros_node):
    """RViz's base → TCP: the same pose and stamp as /graspvla/ee_pose, every 4th sample (50 of 200 Hz)."""
    from tf2_msgs.msg import TFMessage
    lock, tf, poses = threading.Lock(), [], {}

    def on_tf(m):
        with lock:
            tf.extend(m.transforms)

    def on_pose(m):
        with lock:
            poses[(m.header.stamp.sec, m.header.stamp.nanosec)] = m.pose
    ros_node.create_subscription(TFMessage, "/tf", on_tf, 100)
    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", on_pose, 100)
    def matched():
        with lock:
            return [(t, poses[k]) for t in tf if (k := (t.header.stamp.sec, t.header.stamp.nanosec)) in poses]
    wait_for(lambda: len(matched()) >= 20, 30, "20 transforms on /tf stamped as pose samples")
    pairs = matched()
    with lock:
        frames = {(t.header.frame_id, t.child_frame_id) for t in tf}
        stamps = [(t.header.stamp.sec, t.header.stamp.nanosec) for t, _ in pairs]
        window = lambda k: min(stamps) <= k <= max(stamps)  # noqa: E731 - both streams arrive in it
        ratio = sum(map(window, poses)) / sum(window((t.header.stamp.sec, t.header.stamp.nanosec)) for t in tf)
    assert frames == {("base", "graspvla_tcp")}
    for t, p in pairs:
        tr, q = t.transform.translation, t.transform.rotation
        assert (tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w) == (p.position.x, p.position.y, p.position.z, p.orientation.x,
                                                          p.orientation.y, p.orientation.z, p.orientation.w)
    assert 2.5 < ratio < 6, f"{ratio:.1f} pose samples per transform, 4 expected"


def test_bad_chunks_are_rejected_with_a_reason_and_estop_latches(controller_graph, ros_node):
    listen = Listener(ros_node)
    pub = ros_node.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", 10)
    wait_for(lambda: listen.poses, 30, "the controller's EE pose")
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the controller to subscribe")
    _, anchor = listen.latest()
    old = ros_node.get_clock().now().nanoseconds - 2_000_000_000
    pub.publish(chunk_msg.encode(ActionChunk(old, 0.1, "base", np.zeros((8, 7)), anchor)))
    wrong_frame = chunk_msg.encode(ActionChunk(ros_node.get_clock().now().nanoseconds, 0.1, "camera", np.zeros((8, 7)), anchor))
    pub.publish(wrong_frame)
    wait_for(lambda: len(listen.rejections) >= 2, 10, "two rejections")
    assert any(r.startswith("too_old") for r in listen.rejections)
    assert any(r.startswith("unknown_frame") for r in listen.rejections)

    assert call(ros_node, "/controller/estop").success
    wait_for(lambda: listen.states and listen.states[-1] == "ESTOPPED", 10, "ESTOPPED state")
    pub.publish(chunk_msg.encode(ActionChunk(ros_node.get_clock().now().nanoseconds, 0.1, "base", np.zeros((8, 7)), anchor)))
    wait_for(lambda: any(r.startswith("estopped") for r in listen.rejections), 10, "the e-stop to refuse a chunk")
    assert call(ros_node, "/controller/release").success
    wait_for(lambda: listen.states[-1] == "IDLE", 10, "IDLE after release")


def test_calibration_pose_service_moves_to_the_calibration_joints_and_home_returns(controller_graph, ros_node):
    from graspvla_ros.calibration.nominal import load_nominal

    listen = Listener(ros_node)
    wait_for(lambda: listen.poses, 30, "the controller's EE pose")
    reply = call(ros_node, "/controller/calibration_pose")
    assert reply.success, reply.message
    target = np.array(load_nominal().calibration_joints)
    wait_for(lambda: listen.joints and np.abs(np.array(listen.joints[-1]) - target).max() < 2e-3, 10,
             "the arm at the calibration joints")
    assert listen.states[-1] == "IDLE"
    assert call(ros_node, "/controller/home").success


def test_gripper_command_is_latched_and_hold_stops_then_accepts_chunks(controller_graph, ros_node):
    """/graspvla/gripper_command: +1 once home opened the gripper, −1 after a close the chunk
    carried; /controller/hold stops and holds, later chunks run again."""
    listen = Listener(ros_node)
    commands = []
    ros_node.create_subscription(Float64, "/graspvla/gripper_command", lambda m: commands.append(m.data),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    pub = ros_node.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", 10)
    wait_for(lambda: listen.poses, 30, "the controller's EE pose")
    assert call(ros_node, "/controller/home").success
    wait_for(lambda: commands and commands[-1] == 1.0, 10, "gripper_command +1 after home")
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the controller to subscribe")

    def send(rows):
        _, anchor = listen.latest()
        pub.publish(chunk_msg.encode(ActionChunk(ros_node.get_clock().now().nanoseconds, 0.1, "base",
                                                 np.array(rows, float), anchor)))
    send([[0, 0, -0.003, 0, 0, 0, 0], [0, 0, -0.003, 0, 0, 0, -1]] + [[0, 0, 0.003, 0, 0, 0, 0]] * 2)
    wait_for(lambda: commands[-1] == -1.0, 15, "gripper_command -1 after the close")
    wait_for(lambda: "GRIPPER" in listen.states, 10, "the GRIPPER state")

    send([[0.004, 0, 0, 0, 0, 0, 0]] * 8)
    time.sleep(0.2)
    assert call(ros_node, "/controller/hold").success
    wait_for(lambda: listen.states[-1] == "HOLDING", 10, "HOLDING after hold")
    time.sleep(0.5)
    _, held = listen.latest()
    send([[0, 0.004, 0, 0, 0, 0, 0]] * 4)
    wait_for(lambda: listen.latest()[1].position[1] > held.position[1] + 0.01, 10, "a chunk after hold to move the arm")


def test_estop_answers_while_the_startup_home_runs(ros_node):
    """The services exist before the first home starts: an e-stop called as soon as the
    service appears is answered (the home at start is interrupted or already done) and latches."""
    from conftest import franky_sim_process

    states = []
    ros_node.create_subscription(String, "/startup/controller/state", lambda m: states.append(m.data),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    spec = dataclasses.replace(controller(**SIM_CONTROLLER), namespace="/startup")
    with franky_sim_process() as host, Bringup([dataclasses.replace(spec, params={**spec.params, "robot_ip": host})]):
        assert call(ros_node, "/startup/controller/estop").success
        wait_for(lambda: states and states[-1] == "ESTOPPED", 10, "ESTOPPED")
        assert call(ros_node, "/startup/controller/release").success
        assert call(ros_node, "/startup/controller/home").success
        wait_for(lambda: states[-1] == "IDLE", 10, "IDLE after home")


def test_estop_stops_the_joint_motion_of_calibration_pose(controller_graph, ros_node):
    """`/controller/estop` while `/controller/calibration_pose` moves the arm (a joint motion,
    which a Cartesian stop cannot end): the e-stop succeeds, the TCP comes to rest short of the
    calibration pose and stays there; after `release`, `home` runs."""
    listen = Listener(ros_node)
    wait_for(lambda: listen.poses, 30, "the controller's EE pose")
    assert call(ros_node, "/controller/home").success
    _, start = listen.latest()
    calibration = []  # the service answers when its motion ended: call it from a thread
    caller = threading.Thread(target=lambda: calibration.append(call(ros_node, "/controller/calibration_pose")))
    caller.start()
    wait_for(lambda: listen.latest()[1].translation_to(start) > 0.02, 20, "the calibration-pose motion to start")
    reply = call(ros_node, "/controller/estop")
    assert reply.success, reply.message

    def at_rest():
        with listen.lock:
            (t0, a), (t1, b) = listen.poses[-21], listen.poses[-1]
        dt = (t1.sec - t0.sec) + (t1.nanosec - t0.nanosec) * 1e-9
        return dt > 0 and a.translation_to(b) / dt < 1e-3
    wait_for(at_rest, 10, "the TCP at rest (< 1 mm/s) after the e-stop")
    _, rest = listen.latest()
    time.sleep(0.5)
    assert listen.latest()[1].translation_to(rest) < 1e-3, "the arm moved on after the e-stop"
    assert listen.states[-1] == "ESTOPPED"
    caller.join(30)
    assert calibration and not calibration[0].success and "interrupted" in calibration[0].message
    assert call(ros_node, "/controller/release").success
    reply = call(ros_node, "/controller/home")
    assert reply.success, reply.message


def test_controller_waits_for_a_robot_that_boots_after_it_and_says_so_rarely(new_loopback_host, tmp_path):
    """connect_timeout 0 (the default): the controller started before the robot waits, says so
    once (with libfranka's reason) and then only every 30 s with the time waited (~35 s here),
    and connects when the robot is up."""
    from graspvla_ros.sim.server import sim_process

    host, log = new_loopback_host(), tmp_path / "controller.log"
    started = time.monotonic()   # before the controller: it has waited less than the test
    with open(log, "w") as out, Bringup([controller(robot_ip=host, **SIM_CONTROLLER)], out=out) as graph:
        wait_for(lambda: f"waiting for the robot at {host} (" in log.read_text() or graph.failed(), 60,
                 "the controller to say it waits for the robot")
        wait_for(lambda: "s so far" in log.read_text() or graph.failed(), 90, "the controller to say it again")
        with sim_process(host):
            wait_for(lambda: f"connected to {host}" in log.read_text() or graph.failed(), 120, "the connection")
        waited = time.monotonic() - started
        assert not graph.failed(), log.read_text()
    said = [line for line in log.read_text().splitlines() if "waiting for the robot" in line]
    assert "so far" not in said[0] and all(re.search(r", \d+ s so far$", line) for line in said[1:]), said
    assert 2 <= len(said) <= 1 + waited / 30, said

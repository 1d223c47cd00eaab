"""recorder_node (a real subprocess) records real publishers: lossless under camera + state
load, clean close on SIGINT/SIGTERM, readable after SIGKILL, one bag per episode."""
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import MultiDOFJointTrajectory

from conftest import wait_for
from graspvla_ros.bag import BagError, open_bag
from graspvla_ros.bringup import NodeProcess
from graspvla_ros.graph import NodeSpec
from graspvla_ros.nodes.tf import STATIC_QOS

pytestmark = [pytest.mark.ros]
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def recorder(tmp_path, out, **params) -> NodeProcess:
    spec = NodeSpec("recorder", "recorder_node", "graspvla_ros.nodes.recorder_node",
                    params={"output_dir": str(tmp_path), **params})
    return NodeProcess(spec, out)


def live_counts(tmp_path) -> dict[str, int]:
    """Messages on disk now (the recorder still writing: complete chunks only)."""
    bags = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "log"]
    if not bags:
        return {}
    try:
        return {t: info.count for t, info in open_bag(bags[0]).topics.items()}
    except BagError:
        return {}


def wait_subscribed(pubs, out, timeout=30):
    try:
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout, "the recorder to subscribe")
    except AssertionError as err:
        raise AssertionError(f"{err}; recorder output:\n{out.getvalue()}") from None


def test_lossless_under_two_cameras_and_state_then_clean_close_on_sigint(tmp_path, ros_node):
    """Two 640×480 rgb8 streams at 30 Hz, 200 Hz pose, 5 Hz chunks: every message is recorded."""
    out = io.StringIO()
    proc = recorder(tmp_path, out, mode="continuous", flush_period=0.2)
    try:
        reliable = QoSProfile(depth=100)
        pubs = {
            "/front/color/image_raw": ros_node.create_publisher(Image, "/front/color/image_raw", reliable),
            "/side/color/image_raw": ros_node.create_publisher(Image, "/side/color/image_raw", reliable),
            "/front/color/camera_info": ros_node.create_publisher(CameraInfo, "/front/color/camera_info", reliable),
            "/graspvla/ee_pose": ros_node.create_publisher(PoseStamped, "/graspvla/ee_pose", reliable),
            "/graspvla/action_chunk": ros_node.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", reliable),
            "/graspvla/gripper_command": ros_node.create_publisher(Float64, "/graspvla/gripper_command", LATCHED),
        }
        unrelated = ros_node.create_publisher(String, "/not_recorded", 10)
        wait_subscribed(pubs.values(), out)
        sent = dict.fromkeys(pubs, 0)
        pubs["/graspvla/gripper_command"].publish(Float64(data=1.0))
        sent["/graspvla/gripper_command"] = 1
        img = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(640 * 480 * 3))
        pose, info = PoseStamped(), CameraInfo(width=640, height=480)
        chunk = MultiDOFJointTrajectory(joint_names=["ee", "gripper"])
        start = time.monotonic()
        for tick in range(400):                                # 2 s at 200 Hz
            pose.header.frame_id = str(tick)
            pubs["/graspvla/ee_pose"].publish(pose)
            sent["/graspvla/ee_pose"] += 1
            if tick % 7 == 0:                                  # ~30 Hz
                for topic in ("/front/color/image_raw", "/side/color/image_raw"):
                    img.header.frame_id = str(sent[topic])
                    pubs[topic].publish(img)
                    sent[topic] += 1
                pubs["/front/color/camera_info"].publish(info)
                sent["/front/color/camera_info"] += 1
            if tick % 40 == 0:
                pubs["/graspvla/action_chunk"].publish(chunk)
                sent["/graspvla/action_chunk"] += 1
                unrelated.publish(String(data="x"))
            time.sleep(max(0.0, start + (tick + 1) / 200 - time.monotonic()))
        wait_for(lambda: live_counts(tmp_path) == sent, 60, f"the recorder to write {sent}")
    finally:
        rc = proc.stop()
    assert rc == 0, out.getvalue()
    bag = open_bag(next(p for p in tmp_path.iterdir() if p.name != "log"))
    assert bag.complete, "SIGINT closes the bag (metadata.yaml written)"
    assert {t: i.count for t, i in bag.topics.items()} == sent
    frames = [deserialize_message(m.data, Image).header.frame_id for m in bag.messages(["/side/color/image_raw"])]
    assert frames == [str(i) for i in range(sent["/side/color/image_raw"])], "in order, none twice"
    assert bag.topics["/graspvla/gripper_command"].qos[0].durability.name == "TRANSIENT_LOCAL"
    bag.check()


def test_sigkill_leaves_a_bag_readable_up_to_its_last_complete_chunk(tmp_path, ros_node):
    out = io.StringIO()
    proc = recorder(tmp_path, out, mode="continuous", flush_period=0.2)
    try:
        pub = ros_node.create_publisher(String, "/graspvla/status", QoSProfile(depth=100))
        wait_subscribed([pub], out)
        sent = 0
        stop = threading.Event()

        def publish():
            nonlocal sent
            while not stop.is_set():
                pub.publish(String(data=str(sent)))
                sent += 1
                time.sleep(0.01)

        thread = threading.Thread(target=publish)
        thread.start()
        try:
            on_disk = wait_for(lambda: live_counts(tmp_path).get("/graspvla/status", 0) >= 50, 60, "50 messages on disk")
        finally:
            os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait()
            stop.set()
            thread.join()
    finally:
        proc.stop()
    bag = open_bag(next(p for p in tmp_path.iterdir() if p.name != "log"))
    assert not bag.complete
    bag.check()
    got = [deserialize_message(m.data, String).data for m in bag.messages()]
    assert len(got) >= on_disk and got == [str(i) for i in range(len(got))], "a gap-free prefix of what was sent"
    assert bag.episode["git_commit"]


def test_episode_mode_starts_a_bag_per_instruction_with_metadata_and_closes_on_sigterm(tmp_path, ros_node):
    ros_node.declare_parameters("", [("backend", "torch"), ("checkpoint_hash", "abc123")])
    out = io.StringIO()
    proc = recorder(tmp_path, out, mode="episode", policy_node=ros_node.get_fully_qualified_name())
    try:
        instruction = ros_node.create_publisher(String, "/graspvla/instruction", QoSProfile(depth=10))
        status = ros_node.create_publisher(String, "/graspvla/status", LATCHED)
        gripper = ros_node.create_publisher(Float64, "/graspvla/gripper_command", LATCHED)
        gripper.publish(Float64(data=1.0))
        status.publish(String(data="idle"))
        cameras = []   # /tf_static: one latched message per camera node, each in every episode's bag
        for camera in ("front", "side"):
            cameras.append(ros_node.create_publisher(TFMessage, "/tf_static", STATIC_QOS))
            t = TransformStamped(child_frame_id=f"{camera}_color_optical_frame")
            t.header.frame_id = "base"
            cameras[-1].publish(TFMessage(transforms=[t]))
        wait_subscribed([instruction, status, gripper, *cameras], out)
        time.sleep(0.5)
        for text in ("pick up the cube", "pick up the ball"):
            instruction.publish(String(data=text))
            for i in range(3):
                time.sleep(0.05)
                status.publish(String(data=f"{text} {i}"))
            time.sleep(1.0)
    finally:
        os.killpg(proc.proc.pid, signal.SIGTERM)
        rc = proc.proc.wait(30)
        proc.stop()
    assert rc == 0, out.getvalue()
    bags = sorted((p for p in tmp_path.iterdir() if p.name != "log"), key=lambda p: p.name)
    assert len(bags) == 2, out.getvalue()
    for path, text in zip(bags, ("pick up the cube", "pick up the ball")):
        bag = open_bag(path)
        assert bag.complete and bag.episode["instruction"] == text
        assert bag.episode["backend"] == "torch" and bag.episode["checkpoint_hash"] == "abc123"
        statuses = [deserialize_message(m.data, String).data for m in bag.messages(["/graspvla/status"])]
        assert statuses[1:] == [f"{text} {i}" for i in range(3)]
        assert statuses[0] in ("idle", "pick up the cube 2"), "the latched status at the episode's start"
        assert [deserialize_message(m.data, Float64).data for m in bag.messages(["/graspvla/gripper_command"])] == [1.0]
        frames = sorted(t.child_frame_id for m in bag.messages(["/tf_static"])
                        for t in deserialize_message(m.data, TFMessage).transforms)
        assert frames == ["front_color_optical_frame", "side_color_optical_frame"], "one per publisher, each once"


def test_graspvla_record_resolves_topic_patterns_by_discovery(tmp_path, ros_node):
    """`graspvla record` with a pattern: /graspvla/debug/* topics are found in the graph."""
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "log"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "graspvla_ros.cli", "record", "-o", str(tmp_path / "bags"),
                             "--mode", "continuous", "--topics", "/graspvla/status", "/graspvla/debug/*"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = io.StringIO()
    try:
        pubs = {t: ros_node.create_publisher(String, t, QoSProfile(depth=10))
                for t in ("/graspvla/status", "/graspvla/debug/tokens", "/graspvla/debug/latency")}
        other = ros_node.create_publisher(String, "/graspvla/other", QoSProfile(depth=10))
        try:
            wait_subscribed(pubs.values(), out)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.communicate()[0]) from None
        for topic, pub in pubs.items():
            pub.publish(String(data=topic))
        other.publish(String(data="no"))
        for pub in pubs.values():
            pub.wait_for_all_acked()
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log
    bag = open_bag(next((tmp_path / "bags").iterdir()))
    assert {t: i.count for t, i in bag.topics.items()} == dict.fromkeys(pubs, 1)


def test_sigint_right_after_a_burst_keeps_every_delivered_message(tmp_path, ros_node):
    """SIGINT first takes what DDS already delivered to the recorder, then closes the bag: a
    burst of camera frames still queued in its subscription is written, not dropped."""
    out = io.StringIO()
    proc = recorder(tmp_path, out, mode="continuous")
    try:
        pub = ros_node.create_publisher(Image, "/front/color/image_raw", QoSProfile(depth=200))
        wait_subscribed([pub], out)
        img = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(640 * 480 * 3))
        for i in range(150):
            img.header.frame_id = str(i)
            pub.publish(img)
        assert pub.wait_for_all_acked(), "delivered to the recorder's reader"
    finally:
        rc = proc.stop()
    assert rc == 0, out.getvalue()
    bag = open_bag(next(p for p in tmp_path.iterdir() if p.name != "log"))
    assert bag.complete
    frames = [deserialize_message(m.data, Image).header.frame_id for m in bag.messages()]
    assert frames == [str(i) for i in range(150)]

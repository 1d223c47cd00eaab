"""player_node / `graspvla play` (real subprocesses): timed playback with remap, filter and
/clock, lock-step against a stand-in policy, and one clear error with nothing published for
each bad bag."""
import os
import subprocess
import sys
import threading
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from conftest import wait_for
from graspvla_ros.bag import BagWriter, open_bag
from graspvla_ros.bag.playback import header_stamp_ns
from helpers import CHUNK, FRONT, SIDE, chunk, image, string, write_episode

pytestmark = [pytest.mark.ros]
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def play(tmp_path, *args) -> subprocess.Popen:
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "log"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "graspvla_ros.cli", "play", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def collect(node, topic, cls, qos=None):
    got, lock = [], threading.Lock()

    def keep(msg):
        with lock:
            got.append(msg)
    node.create_subscription(cls, topic, keep, qos or QoSProfile(depth=500))
    return got


def test_plays_with_remap_topic_filter_and_clock(tmp_path, ros_node):
    path = tmp_path / "ep"
    with BagWriter(path) as w:
        w.add_topic("/graspvla/status", "std_msgs/msg/String")
        w.add_topic("/graspvla/gripper_command", "std_msgs/msg/Float64", qos=None)
        w.add_topic("/other", "std_msgs/msg/String")
        for i in range(20):
            w.write("/graspvla/status", 5_000_000_000 + i * 50_000_000, string(f"s{i}"))
            w.write("/other", 5_000_000_001 + i * 50_000_000, string("no"))
        w.write("/graspvla/gripper_command", 5_000_000_002, serialize_message(Float64(data=-1.0)))
    statuses = collect(ros_node, "/replayed/status", String)
    gripper = collect(ros_node, "/graspvla/gripper_command", Float64)
    others = collect(ros_node, "/other", String)
    clock = collect(ros_node, "/clock", Clock)
    proc = play(tmp_path, path, "--topics", "/graspvla/status", "/graspvla/gripper_command",
                "--remap", "/graspvla/status:=/replayed/status", "--clock", "50", "--rate", "2",
                "--wait-for-subscribers", "1")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    wait_for(lambda: len(statuses) == 20 and gripper, 10, f"all played messages ({len(statuses)}, {gripper})")
    assert [m.data for m in statuses] == [f"s{i}" for i in range(20)]
    assert [m.data for m in gripper] == [-1.0] and not others
    stamps = [m.clock.sec * 10**9 + m.clock.nanosec for m in clock]
    assert stamps and stamps == sorted(stamps) and 5e9 <= stamps[0] and stamps[-1] <= 6e9
    assert "played 21 messages; lateness p50" in out


def test_lock_step_releases_one_observation_per_answer(tmp_path, ros_node):
    """A stand-in policy answers with the stamp of the newest front frame it has seen; lock-step
    must make those the recorded answers' stamps, one cycle at a time."""
    t = [1_000_000_000 + i * 100_000_000 for i in range(8)]
    path = tmp_path / "ep"
    with BagWriter(path) as w:
        w.add_topic(FRONT, "sensor_msgs/msg/Image")
        w.add_topic(SIDE, "sensor_msgs/msg/Image")
        w.add_topic(CHUNK, "trajectory_msgs/msg/MultiDOFJointTrajectory")
        for i, ti in enumerate(t):
            w.write(FRONT, ti, image(ti))
            w.write(SIDE, ti + 10, image(ti))
            if i in (2, 4, 7):                   # answers to frames 0, 2 and 5
                w.write(CHUNK, ti + 20, chunk({2: t[0], 4: t[2], 7: t[5]}[i]))
    recorded = [header_stamp_ns(m.data) for m in open_bag(path).messages([CHUNK])]
    latest, answered, lock = [], [], threading.Lock()
    answer_pub = ros_node.create_publisher(MultiDOFJointTrajectory, CHUNK, 10)

    def on_front(msg):
        with lock:
            latest.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)

    def policy():  # answers once no new frame came for 0.5 s (the player waits for it)
        seen = 0
        while not done.is_set():
            time.sleep(0.5)
            with lock:
                if len(latest) == seen or not latest:
                    if latest and (not answered or answered[-1] != latest[-1]):
                        answered.append(latest[-1])
                        answer_pub.publish(deserialize_message(chunk(latest[-1]), MultiDOFJointTrajectory))
                seen = len(latest)

    ros_node.create_subscription(Image, FRONT, on_front, QoSProfile(depth=100))
    done = threading.Event()
    thread = threading.Thread(target=policy)
    thread.start()
    try:
        proc = play(tmp_path, path, "--lock-step", "--timeout", "20", "--wait-for-subscribers", "1")
        out, _ = proc.communicate(timeout=120)
    finally:
        done.set()
        thread.join()
    assert proc.returncode == 0, out
    assert answered[:3] == recorded, out
    assert "3 cycles answered" in out


def test_lock_step_without_an_answer_fails_naming_the_cycle(tmp_path):
    path = write_episode(tmp_path / "ep", n=3)
    proc = play(tmp_path, path, "--lock-step", "--timeout", "1", "--topics", FRONT, SIDE)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "no answer on /graspvla/action_chunk within 1.0 s for cycle 0" in out


def _truncated(tmp_path):
    path = write_episode(tmp_path / "ep")
    mcap = next(path.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    return path


def _unknown_type(tmp_path):
    with BagWriter(tmp_path / "ep") as w:
        w.add_topic("/graspvla/status", "std_msgs/msg/String")
        w.add_topic("/custom", "acme_msgs/msg/Widget")
        w.write("/graspvla/status", 1, string("first"))
        w.write("/custom", 2, string("payload"))
    return tmp_path / "ep"


def _newer_version(tmp_path):
    path = write_episode(tmp_path / "ep")
    meta = path / "metadata.yaml"
    meta.write_text(meta.read_text().replace("version: 9", "version: 12"))
    return path


@pytest.mark.parametrize("make, extra, error", [
    (_truncated, [], "corrupt or truncated"),
    (lambda p: write_episode(p / "ep"), ["--topics", "/graspvla/status", "/joint_states"], "no topic /joint_states"),
    (_unknown_type, [], "unknown message type on /custom (acme_msgs/msg/Widget)"),
    (_newer_version, [], "rosbag2 format version 12 is newer"),
], ids=["truncated", "missing_topic", "unknown_type", "newer_version"])
def test_bad_bag_is_one_clear_error_and_nothing_is_published(tmp_path, ros_node, make, extra, error):
    path = make(tmp_path)
    statuses = collect(ros_node, "/graspvla/status", String)
    proc = play(tmp_path, path, *extra)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert error in out and str(path) in out
    assert len([line for line in out.splitlines() if line.strip()]) == 1, f"one error line, got:\n{out}"
    time.sleep(0.5)
    assert statuses == []


def test_plays_a_ros2_bag_record_sqlite3_bag(tmp_path, ros_node):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    with Writer(tmp_path / "plain", version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=get_typestore(Stores.ROS2_KILTED))
        for i in range(5):
            w.write(conn, 1_000_000_000 + i * 10_000_000, string(f"m{i}"))
    got = collect(ros_node, "/chatter", String)
    proc = play(tmp_path, tmp_path / "plain", "--wait-for-subscribers", "1")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    wait_for(lambda: len(got) == 5, 10, "the sqlite3 bag's messages")
    assert [m.data for m in got] == [f"m{i}" for i in range(5)]

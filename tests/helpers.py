"""Pieces shared by several test modules (fixtures and guards stay in conftest.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from graspvla_ros.bag import BagWriter, episode_metadata

# The policy tests' simulated cameras: 2 Hz keeps the physics fed, 320×240 renders in a quarter
# of the CPU time (the policy crops the same field of view and resizes to 256 either way).
SIM_CAMERAS = {"camera_rate_hz": 2.0, "width": 320, "height": 240}


def doc_commands(path) -> list[tuple[str, bool]]:
    """(command, hardware_only) for every command in the fenced sh/bash blocks of a Markdown file:
    continuation lines joined, comment lines dropped; a block whose first line starts with
    `# hardware-only:` marks its commands as needing the robot, the cameras or the robot machine."""
    commands = []
    for block in re.findall(r"^```(?:sh|bash)\n(.*?)^```", Path(path).read_text(), re.M | re.S):
        hardware = block.startswith("# hardware-only:")
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append((command.strip(), hardware))
    return commands


# Serialized messages and a small episode bag for the bag core and player_node tests.
FRONT, SIDE, CHUNK = "/front/color/image_raw", "/side/color/image_raw", "/graspvla/action_chunk"


def image(stamp_ns: int, value: int = 0, size=(48, 64)) -> bytes:
    msg = Image(height=size[0], width=size[1], encoding="rgb8", step=size[1] * 3, data=bytes([value % 256]) * (size[0] * size[1] * 3))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return serialize_message(msg)


def string(text: str) -> bytes:
    return serialize_message(String(data=text))


def chunk(stamp_ns: int) -> bytes:
    msg = MultiDOFJointTrajectory(joint_names=["ee", "gripper"])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return serialize_message(msg)


def write_episode(path, n=20, **kw):
    """n frames at 10 Hz on both cameras, a status string each, from t = 1 s."""
    with BagWriter(path, episode_metadata(instruction="pick up the cube", backend="torch"), **kw) as w:
        for topic, msgtype in ((FRONT, "sensor_msgs/msg/Image"), (SIDE, "sensor_msgs/msg/Image"),
                               ("/graspvla/status", "std_msgs/msg/String")):
            w.add_topic(topic, msgtype)
        for i in range(n):
            t = 1_000_000_000 + i * 100_000_000
            w.write(FRONT, t, image(t, i))
            w.write(SIDE, t + 1000, image(t, i + 100))
            w.write("/graspvla/status", t + 2000, string(f"s{i}"))
    return path


def graph_waiter(graph, wait_for):
    """`until(predicate, timeout, what)`: `wait_for` (the predicate's value) that also ends,
    failing, when a node of `graph` exited."""
    def until(predicate, timeout, what):
        value = wait_for(lambda: predicate() or graph.failed(), timeout, what)
        assert not graph.failed(), graph.failed()
        return value
    return until


def say_until(until, say, text: str, answered, what: str, tries: int = 5) -> None:
    """Publish the instruction `text` until `answered()` (30 s each): the first instruction can
    be lost while discovery completes."""
    for _ in range(tries - 1):
        say.publish(String(data=text))
        try:
            until(answered, 30, what)
            return
        except AssertionError:
            continue
    say.publish(String(data=text))
    until(answered, 30, what)


def publish_until(until, publish, answered, what: str, timeout: float = 60.0, every: float = 1.0):
    """Call `publish()` every `every` s until `answered()` (its value), failing after `timeout`: a
    message published before discovery matched its subscriber is lost."""
    next_at = [0.0]

    def check():
        if value := answered():
            return value
        if time.monotonic() >= next_at[0]:
            publish()
            next_at[0] = time.monotonic() + every
        return None
    return until(check, timeout, what)


UNMATCHED = ("no stack is running", "no policy is running", "no controller is running")


def run_command(argv: list[str], timeout: float, tries: int = 3, answered=lambda out: True):
    """A `graspvla` command run in a subprocess, again (up to `tries` times) when its fresh DDS
    participant matched none of the stack's (it then says "no … is running" and sent nothing;
    Fast DDS's TCP transport, LARGE_DATA, leaves about one participant pair in a hundred
    unmatched) or `answered(out)` is false."""
    for _ in range(tries):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        if not out.stdout.startswith(UNMATCHED) and answered(out):
            break
    return out


class PeerHost:
    """A second machine for two-host tests: a network namespace of its own joined to the test's
    by a veth pair (`gva<n>` here at 10.231.<n>.1, `gvb<n>` there at .2), multicast routed over
    it for DDS discovery; nothing leaves the test's loopback-only namespace. `prefix` runs a
    command there (graph.NodeSpec.prefix); `cut()` and `restore()` take the link down and up."""

    def __init__(self, n: int):
        self.here, self.there = f"gva{n}", f"gvb{n}"
        self.address = f"10.231.{n}.2"
        self._holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        ours, deadline = os.readlink("/proc/self/ns/net"), time.monotonic() + 10
        while os.readlink(f"/proc/{self._holder.pid}/ns/net") == ours:
            assert time.monotonic() < deadline and self._holder.poll() is None, "unshare -n did not start"
            time.sleep(0.01)
        self.netns = os.readlink(f"/proc/{self._holder.pid}/ns/net")
        self.prefix = ("nsenter", "-t", str(self._holder.pid), "-n", "--")
        self._ip("link", "add", self.here, "type", "veth", "peer", "name", self.there, "netns", str(self._holder.pid))
        self._ip("addr", "add", f"10.231.{n}.1/24", "dev", self.here)
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{self.address}/24", "dev", self.there),
                     ("link", "set", self.there, "up"), ("route", "add", "224.0.0.0/4", "dev", self.there)):
            self._ip(*args, there=True)
        self.restore()

    def _ip(self, *args: str, there: bool = False) -> None:
        cmd = [*(self.prefix if there else ()), "ip", *args]
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr.strip()}"

    def cut(self) -> None:
        self._ip("link", "set", self.here, "down")

    def restore(self) -> None:
        """Link up, and this side's multicast route again (a link going down takes its routes)."""
        self._ip("link", "set", self.here, "up")
        subprocess.run(["ip", "route", "replace", "224.0.0.0/4", "dev", self.here], check=True)

    def netem(self, *args: str) -> str | None:
        """`tc qdisc … netem <args>` on both ends of the link; None, or why the kernel refused it."""
        for there, dev in ((False, self.here), (True, self.there)):
            cmd = [*(self.prefix if there else ()), "tc", "qdisc", "replace", "dev", dev, "root", "netem", *args]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                return f"{' '.join(cmd)}: {out.stderr.strip()}"
        return None

    def clear_netem(self) -> None:
        for there, dev in ((False, self.here), (True, self.there)):
            subprocess.run([*(self.prefix if there else ()), "tc", "qdisc", "del", "dev", dev, "root"],
                           capture_output=True)

    def close(self) -> None:
        self._holder.kill()   # the namespace, and the veth pair with it, go with its last process
        self._holder.wait()


class LineLog:
    """A Bringup `out` that forwards the nodes' output to stdout and keeps it to search."""

    def __init__(self):
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        with self._lock:
            self._lines.append(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def has(self, text: str, since: int = 0) -> bool:
        """`text` in a line written since `mark()` returned `since`."""
        with self._lock:
            return any(text in line for line in self._lines[since:])

    def mark(self) -> int:
        with self._lock:
            return len(self._lines)


class GraphWatch:
    """What a test sees of a running sim graph: TCP poses (sim stamps), the controller's states
    with the newest pose stamp when each arrived, its rejections, the policy's statuses, and the
    publishers a test talks to the graph with."""

    def __init__(self, node):
        import json

        import numpy as np
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_srvs.srv import Trigger

        from graspvla_ros.nodes.convert import stamp_to_ns
        from graspvla_ros.nodes.sim_world_node import LATCHED

        log_qos = QoSProfile(depth=50, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.RLock()
        self.poses: list = []
        self.states: list[tuple[str, int]] = []
        self.rejections: list[str] = []
        self.status: list[dict] = []
        self._np, self._stamp = np, stamp_to_ns
        node.create_subscription(PoseStamped, "/graspvla/ee_pose", self._pose, 100)
        node.create_subscription(String, "/controller/state", lambda m: self._add(self.states, (m.data, self.now())),
                                 log_qos)
        node.create_subscription(String, "/controller/rejection", lambda m: self._add(self.rejections, m.data), 50)
        node.create_subscription(String, "/graspvla/status", lambda m: self._add(self.status, json.loads(m.data)),
                                 log_qos)
        self.instruction = node.create_publisher(String, "/graspvla/instruction", 10)
        self.set_target = node.create_publisher(String, "sim/set_target", LATCHED)
        self.check = node.create_client(Trigger, "sim/check_success")
        self.reset = node.create_client(Trigger, "sim/reset_objects")

    def _add(self, to: list, item) -> None:
        with self.lock:
            to.append(item)

    def _pose(self, m) -> None:
        p = m.pose.position
        self._add(self.poses, (self._stamp(m.header.stamp), self._np.array([p.x, p.y, p.z])))

    def now(self) -> int:
        """The newest TCP pose stamp: the robot's sim time."""
        with self.lock:
            return self.poses[-1][0] if self.poses else 0

    def last(self) -> dict:
        with self.lock:
            return self.status[-1] if self.status else {}

    def state(self) -> str:
        with self.lock:
            return self.states[-1][0] if self.states else ""

    def moved(self, start_ns: int, end_ns: int, min_samples: int = 20) -> float:
        """How far the TCP went between two sim times, m (its path's extent)."""
        with self.lock:
            path = self._np.array([p for t, p in self.poses if start_ns <= t <= end_ns])
        assert len(path) >= min_samples, f"only {len(path)} poses between {start_ns} and {end_ns}"
        return float(self._np.ptp(path, axis=0).max())

    def speed(self, start_ns: int, end_ns: int, min_samples: int = 20) -> float:
        """The TCP's top speed between two sim times, m/s: its path's extent in the 1 s windows
        (0.1 s apart) that fit there, per second — "the arm < 1 mm/s" judged the same way at any
        sampling rate, a slow creep apart from a step."""
        return max(self.moved(t, t + int(1e9), min_samples // 2)
                   for t in range(start_ns, max(start_ns, end_ns - int(1e9)) + 1, int(1e8)))

    def stamps(self, start_ns: int, end_ns: int) -> set[int]:
        with self.lock:
            return {t for t, _ in self.poses if start_ns <= t <= end_ns}


def run_cases(name: str, ros_domain: int, timeout: float = 1400) -> str:
    """Run tests/<name> in a pytest process of its own whose Fast DDS uses the split graph's
    transport (UDP + shared memory; read once per process, and this suite's is LARGE_DATA, whose
    participants do not hear those). Its output; the assertion says why it failed."""
    from graspvla_ros.graph import SPLIT_ENVIRONMENT

    cases = Path(__file__).with_name(name)
    # the inner conftest gives its module the domain after ROS_DOMAIN_ID: this module's own
    env = {**os.environ, **SPLIT_ENVIRONMENT, "ROS_DOMAIN_ID": str(ros_domain - 1)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(cases)],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout[-20000:] + out.stderr[-5000:]
    return out.stdout

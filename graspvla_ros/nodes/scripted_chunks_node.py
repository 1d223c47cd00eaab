"""scripted_chunks_node: a stand-in for the policy that streams a scripted square + gripper
close/open to the controller at 5 Hz, then logs tracking error and chunk-switch speed and exits.

Each chunk is anchored at the latest TCP pose from the controller's pose topic, as GraspVLA's
chunks are. Topics and parameters: docs/interfaces.md (## Controller).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from graspvla_ros.chunk import Pose
from graspvla_ros.interfaces import ACTION_CHUNK, CONTROLLER, CONTROLLER_STATE, EE_POSE, ControllerState, under
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.convert import pose_from_msg, stamp_to_ns
from graspvla_ros.nodes.params import declare
from graspvla_ros.policy.scripted import evaluate, speeds, square_path, stream
from graspvla_ros.settings import build, params, setting

CONFIG = 'scripted_chunks.yaml'


@dataclass(frozen=True)
class ScriptedChunksSettings:
    side: float = setting(0.08, "m, edge of the square")
    speed: float = setting(0.04, "m/s along the edges")
    gripper_hold: float = setting(1.5, "s closed, then as long open")
    inference_latency: float = setting(0.0, "s between observation and publishing a chunk (simulated model time)")
    start_timeout: float = setting(60.0, "s to wait for the controller")

    def __post_init__(self) -> None:
        if not (self.side > 0 and self.speed > 0):
            raise ValueError(f"side and speed must be > 0, got {self.side} m, {self.speed} m/s")
        if min(self.gripper_hold, self.inference_latency, self.start_timeout) < 0:
            raise ValueError("gripper_hold, inference_latency and start_timeout must be ≥ 0 s")


PARAMS = params(ScriptedChunksSettings)


class ScriptedChunksNode(Node):
    def __init__(self) -> None:
        super().__init__("scripted_chunks")
        self.s = build(ScriptedChunksSettings, declare(self, PARAMS))
        self._lock = threading.Lock()
        self._samples: list[tuple[float, Pose, str]] = []
        self.create_subscription(PoseStamped, EE_POSE, self._on_pose, 50)
        self._controller_state = ""
        self.create_subscription(String, under(CONTROLLER, CONTROLLER_STATE),
                                 lambda m: setattr(self, "_controller_state", m.data),
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub = self.create_publisher(MultiDOFJointTrajectory, ACTION_CHUNK, 10)
        self.metrics = None
        self._worker = threading.Thread(target=self._run, name="scripted-chunks", daemon=True)
        self._worker.start()

    def _on_pose(self, msg: PoseStamped) -> None:
        sample = (stamp_to_ns(msg.header.stamp) / 1e9, pose_from_msg(msg.pose), msg.header.frame_id)
        with self._lock:
            self._samples.append(sample)

    def _latest(self) -> tuple[float, Pose, str]:
        with self._lock:
            return self._samples[-1]

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.s.start_timeout
        while not ready():
            if time.monotonic() > deadline or not rclpy.ok(context=self.context):
                raise TimeoutError(f"gave up waiting for {what}")
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self._wait(lambda: self._samples, f"the TCP pose on {EE_POSE}")
            self._wait(lambda: self.pub.get_subscription_count() > 0, f"a controller on {ACTION_CHUNK}")
            # the controller homes at start (state HOMING, chunks refused) and is IDLE once home
            self._wait(lambda: self._controller_state == ControllerState.IDLE, "the controller to be IDLE (homed)")
            time.sleep(0.5)
            _, start, frame = self._latest()
            path = square_path(start, self.s.side, self.s.speed, gripper_hold=self.s.gripper_hold)
            self.get_logger().info(f"streaming a {self.s.side * 100:.0f} cm square at "
                                   f"{self.s.speed * 100:.0f} cm/s, then gripper close/open ({path.duration:.1f} s)")
            clock_ns = lambda: self.get_clock().now().nanoseconds  # noqa: E731
            t0, sent = stream(path, clock_ns, lambda: self._latest()[1], lambda c: self.pub.publish(chunk_msg.encode(c)),
                              latency=self.s.inference_latency, frame_id=frame)
            self._wait_still()
            with self._lock:
                times = np.array([s[0] for s in self._samples])
                positions = np.array([s[1].position for s in self._samples])
            # pose stamps are taken when the controller publishes: differentiate over 50 ms
            self.metrics = evaluate(path, t0, times, positions, sent, positions[-1], speed_window=0.05)
            for line in self.metrics.lines():
                self.get_logger().info(line)
            self.get_logger().info("(speeds from the pose topic's wall-clock stamps; franky-sim's clock runs unevenly "
                                   "under CPU load, so dips here include the sim's own stutter)")
        except Exception as err:  # report and end the node: the controller keeps the arm safe
            self.get_logger().error(f"scripted chunks stopped: {err}")
        finally:
            rclpy.try_shutdown(context=self.context)

    def _wait_still(self, timeout: float = 5.0) -> None:
        """Until the TCP moved < 1 mm/s over the last 0.3 s (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            with self._lock:
                recent = [(t, p.position) for t, p, _ in self._samples[-60:]]
            t, x = np.array([r[0] for r in recent]), np.array([r[1] for r in recent])
            if len(t) > 10 and t[-1] - t[0] > 0.2 and speeds(t, x)[1].max() < 1e-3:
                return


def main(args: list[str] | None = None) -> int:
    return run(ScriptedChunksNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""policy_node: runs GraspVLA (or the simulation's expert) closed-loop on the two cameras.

The ROS adapter of `graspvla_ros.policy.loop.PolicyLoop`, which holds the inputs, the episode
and the cycle: callbacks convert what arrives (images with their camera_info crop, TCP poses,
the commanded gripper, the controller's state, instructions) and hand it to the loop; the
loop's worker thread runs the cycles; the node publishes each chunk, its debug topics, the
episode status and diagnostics. Topics, services and parameters: docs/interfaces.md (## Policy).
"""
from __future__ import annotations

import json
import sys
import threading
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from graspvla_ros.chunk import Pose
from graspvla_ros.interfaces import (ACTION_CHUNK, COMMANDED_POSE, CONTROLLER_STATE,
                                     DEBUG_GRASP_MARKERS, DEBUG_GRASP_POSE, DEBUG_TIMINGS, DIAGNOSTICS, EE_POSE,
                                     GRIPPER_COMMAND, GRIPPER_WIDTH, HOLD, HOME, INSTRUCTION, POLICY_DIAGNOSTICS,
                                     SIM_OBJECT_NAMES, SIM_OBJECT_POSES, STATUS, camera_info_topic, debug_bbox_topic,
                                     image_topic, model_view_topic, under)
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.camera_node import image_msg
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.convert import ns_to_stamp, pose_from_msg, pose_to_msg, stamp_to_ns
from graspvla_ros.nodes.markers import grasp_markers
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.robot_link import RobotLink
from graspvla_ros.policy import backends
from graspvla_ros.policy import episode as episodes
from graspvla_ros.policy.debug import bbox_view
from graspvla_ros.policy.link import LOST
from graspvla_ros.policy.loop import QUIET_SKIPS, VIEWS, Cycle, PolicyLoop, Skip
from graspvla_ros.policy.observation import Frame
from graspvla_ros.policy.settings import PolicySettings
from graspvla_ros.preprocess import ImageError, ViewCrops, decode_view, image_from_msg
from graspvla_ros.settings import build, params

CONFIG = 'policy.yaml'
PARAMS = params(PolicySettings)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        s = build(PolicySettings, declare(self, PARAMS, on_change=self._on_change))
        self._crops = ViewCrops()
        self._last_reason = ""
        self._skips: Counter[str] = Counter()
        self._cycles = 0
        # image callbacks per view, in all and while the backend ran; with the loop's inference_s
        # the callback rate during inference (diagnostics)
        self._images: Counter[str] = Counter()
        self._images_inferring: Counter[str] = Counter()
        self._truth: dict | None = None
        self._object_names: list[str] = []

        options = {}
        if s.backend == "graspvla":
            options = dict(checkpoint=s.checkpoint, llm_dir=s.llm_dir, runtime=s.runtime, tiny=s.tiny,
                           onnx_dir=s.onnx_dir, seed=s.seed,
                           model_options=backends.model_options(s.runtime, s.device if s.runtime == "torch" else None))
        elif s.backend == "expert":
            options = dict(ground_truth=lambda: self._truth, latency=s.expert_latency)
            self.create_subscription(String, SIM_OBJECT_NAMES, self._on_object_names, LATCHED)
            self.create_subscription(PoseArray, SIM_OBJECT_POSES, self._on_object_poses, 10)
        self.get_logger().info(f"loading the {s.backend} backend")
        backend = backends.create(s.backend, **options)
        if s.backend == "graspvla" and s.device == "cuda":  # capture and compile now, not in the first cycle
            self.get_logger().info(f"warm-up inference: {backends.warm_up(backend):.1f} s")

        self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, ACTION_CHUNK, 10)
        self.loop = PolicyLoop(backend, s, clock=self._now,
                               publish=lambda chunk: self.link.across("chunks", self.chunk_pub.publish,
                                                                      chunk_msg.encode(chunk)))
        # the robot host: its TCP poses as heartbeat, its clock's offset (two hosts: the link to it)
        self.link = RobotLink(self, s.controller.rstrip("/"), s.link_timeout, self._on_link,
                              lambda ns: setattr(self.loop, "clock_offset_ns", ns))
        self.link.emulate(s.link_emulation)
        self.status_pub = self.create_publisher(String, STATUS, LATCHED)
        self.bbox_pubs = {v: self.create_publisher(Image, debug_bbox_topic(v), 2) for v in VIEWS}
        self.grasp_pub = self.create_publisher(PoseStamped, DEBUG_GRASP_POSE, 10)
        self.grasp_markers_pub = self.create_publisher(MarkerArray, DEBUG_GRASP_MARKERS, 10)
        self.timings_pub = self.create_publisher(String, DEBUG_TIMINGS, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        controller = s.controller.rstrip("/")
        self.hold_client = self.create_client(Trigger, under(controller, HOLD))
        self.home_client = self.create_client(Trigger, under(controller, HOME))

        for v in VIEWS:
            if s.transport == "model_view":
                self.create_subscription(CompressedImage, model_view_topic(v), lambda m, v=v: self.link.across(
                    v, self._on_view, v, m), qos_profile_sensor_data)
                continue
            self.create_subscription(Image, image_topic(v), lambda m, v=v: self.link.across(v, self._on_image, v, m),
                                     qos_profile_sensor_data)
            self.create_subscription(CameraInfo, camera_info_topic(v), lambda m, v=v: self._on_info(v, m),
                                     qos_profile_sensor_data)
        self.create_subscription(PoseStamped, EE_POSE, lambda m: self.link.across("poses", self._on_pose, m), 50)
        self.create_subscription(PoseStamped, COMMANDED_POSE,
                                 lambda m: self.loop.add_commanded(stamp_to_ns(m.header.stamp), pose_from_msg(m.pose)), 50)
        self.create_subscription(Float64, GRIPPER_COMMAND,
                                 lambda m: self.loop.add_gripper(self._now(), m.data), LATCHED)
        self.create_subscription(Float64, GRIPPER_WIDTH, lambda m: self.loop.set_width(m.data), 10)
        self.create_subscription(String, under(controller, CONTROLLER_STATE),
                                 lambda m: self.loop.set_controller_state(m.data), LATCHED)
        self.create_subscription(String, INSTRUCTION, self._on_instruction, 10)
        self.create_timer(0.1, self._check_episode)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._publish_status("")

        self._worker = threading.Thread(target=self.loop.run, args=(self._on_cycle, self._skip, self.context.ok),
                                        name="policy-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"ready: backend {s.backend}, ≤ {s.rate_hz:g} Hz, waiting for an instruction "
                               f"on {INSTRUCTION}")

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    # --- callbacks: convert and hand to the loop ------------------------------------------
    def _on_change(self, changes: dict) -> None:
        """Live parameters (`ros2 param set`): a bad value raises ValueError and is refused."""
        self.loop.update(**changes)
        if "link_emulation" in changes:
            self.link.emulate(changes["link_emulation"])
        self.get_logger().info("parameters changed: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))

    def _on_pose(self, msg: PoseStamped) -> None:
        self.link.heard()
        self.loop.add_pose(stamp_to_ns(msg.header.stamp), pose_from_msg(msg.pose))

    def _on_link(self, lost: bool, change: str) -> None:
        if not lost:
            self.get_logger().info(change)
            return
        self.get_logger().error(change)
        ep = self.loop.end_episode("link_lost", LOST)
        if ep is not None:
            self.get_logger().error(f"episode {ep.id} link_lost: send the instruction again once the link is back")
            self._call(self.hold_client, "hold")
            self._publish_status(ep.reason)

    def _on_image(self, view: str, msg: Image) -> None:
        received = self._received(view)
        try:
            rgb = image_from_msg(msg)
        except ImageError as err:
            self._skip(Skip("bad_image", f"{view}: {err}"))
            return
        self.loop.add_frame(view, Frame(stamp_to_ns(msg.header.stamp), rgb, self._crops.get(view), received))

    def _on_view(self, view: str, msg: CompressedImage) -> None:
        """transport model_view: the view the robot host made (crop, resize, JPEG), decoded."""
        received = self._received(view)
        try:
            rgb = decode_view(msg.data)
        except ImageError as err:
            self._skip(Skip("bad_image", f"{view}: {err}"))
            return
        self.loop.add_frame(view, Frame(stamp_to_ns(msg.header.stamp), rgb, None, received, viewed=True))

    def _received(self, view: str) -> int:
        self._images[view] += 1
        if self.loop.inferring:
            self._images_inferring[view] += 1
        return self._now()

    def _on_info(self, view: str, msg: CameraInfo) -> None:
        try:
            self._crops.update(view, msg)
        except ValueError as err:
            self._skip(Skip("bad_camera", f"{view}: {err}"))

    def _on_object_names(self, msg: String) -> None:
        self._object_names = json.loads(msg.data)

    def _on_object_poses(self, msg: PoseArray) -> None:
        if len(msg.poses) != len(self._object_names):
            return
        self._truth = {name: (np.array([q.position.x, q.position.y, q.position.z]),
                              np.array([q.orientation.w, q.orientation.x, q.orientation.y, q.orientation.z]))
                       for name, q in zip(self._object_names, msg.poses)}

    def _on_instruction(self, msg: String) -> None:
        command = episodes.parse(msg.data)
        log = self.get_logger()
        if isinstance(command, episodes.Refused):
            log.warning(f"instruction refused ({command.reason}): {command.detail}")
            self._publish_status(f"refused {command.reason}: {command.detail}")
            return
        ended, started = self.loop.instruct(command, msg.data, self._now())
        if ended is not None:
            log.info(f"episode {ended.id} {ended.phase}: {ended.reason}")
            if started is not None:
                self._publish(ended.status())  # every end is on the status topic, also the replaced episode's
        self._call(self.home_client if isinstance(command, episodes.Home) else self.hold_client,
                   "home" if isinstance(command, episodes.Home) else "hold")
        if started is not None:
            log.info(f"episode {started.id}: {started.task!r}")
        self._publish_status(f"instruction {msg.data!r}")

    def _call(self, client, what: str) -> None:
        """Ask the controller, without waiting. Sent even when the ROS graph does not show the
        service (rmw_fastrtps's graph cache can miss a matched one: see common.call_trigger)."""
        if not client.service_is_ready():
            self.get_logger().warning(f"{client.srv_name} is not in the ROS graph; asking anyway" + (
                " (without an answer the controller holds by itself once chunks stop: its hold_timeout)"
                if what == "hold" else ""))
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: f.result() is not None and not f.result().success and
                                 self.get_logger().warning(f"{what} failed: {f.result().message}"))

    def _check_episode(self) -> None:
        ep = self.loop.check_episode(self._now())
        if ep is not None:
            self.get_logger().info(f"episode {ep.id} {ep.phase}: {ep.reason}")
            if not ep.running:
                self._call(self.hold_client, "hold")
            self._publish_status(ep.reason)

    # --- the worker's outputs (on its thread) ---------------------------------------------
    def _on_cycle(self, cycle: Cycle) -> None:
        self._cycles += 1
        if self._last_reason:
            self.get_logger().info(f"cycles run again (after {self._last_reason})")
            self._last_reason = ""
        obs, out = cycle.observation, cycle.output
        for view, image, bbox in zip(VIEWS, (obs.front, obs.side), out.bbox):
            if self.bbox_pubs[view].get_subscription_count():
                self.bbox_pubs[view].publish(image_msg(bbox_view(image, bbox), "rgb8", f"{view}_color_optical_frame",
                                                       obs.stamp_ns))
        grasp = Pose.from_xyz_rpy(out.grasp_xyz, out.grasp_rpy)
        self.grasp_pub.publish(pose_to_msg(grasp, cycle.chunk.frame_id, obs.stamp_ns))
        self.grasp_markers_pub.publish(grasp_markers(grasp, cycle.chunk.frame_id, ns_to_stamp(obs.stamp_ns)))
        self.timings_pub.publish(String(data=json.dumps(cycle.report())))

    def _skip(self, skip: Skip) -> None:
        self._skips[skip.reason] += 1
        if skip.reason != self._last_reason and skip.reason not in QUIET_SKIPS:
            self.get_logger().warning(f"cycle skipped: {skip.reason}: {skip.detail}")
            self._last_reason = skip.reason

    # --- status and diagnostics -----------------------------------------------------------
    def _publish_status(self, reason: str) -> None:
        status = self.loop.status()
        if reason:
            status["reason"] = reason
        self._publish(status)

    def _publish(self, status: dict) -> None:
        self.status_pub.publish(String(data=json.dumps({**status, "backend": self.loop.settings.backend})))

    def _publish_diagnostics(self) -> None:
        status = self.loop.status()
        values = [KeyValue(key="cycles", value=str(self._cycles)),
                  KeyValue(key="episode", value=str(status["episode"])),
                  KeyValue(key="phase", value=status["phase"])]
        values += [KeyValue(key=f"skipped.{k}", value=str(v)) for k, v in sorted(self._skips.items())]
        values += [KeyValue(key=f"images.{v}", value=str(self._images[v])) for v in VIEWS]
        values += [KeyValue(key=f"images_during_inference.{v}", value=str(self._images_inferring[v])) for v in VIEWS]
        values.append(KeyValue(key="inference_s", value=f"{self.loop.inference_s:.3f}"))
        values += self.link.diagnostics()
        values += [KeyValue(key=k, value=v) for k, v in self.loop.latency.diagnostics().items()]
        level = DiagnosticStatus.WARN if self._last_reason else DiagnosticStatus.OK
        message = self._last_reason or "ok"
        if self.link.lost:
            level, message = DiagnosticStatus.ERROR, LOST
        msg = DiagnosticArray(status=[DiagnosticStatus(level=level, name=POLICY_DIAGNOSTICS, values=values,
                                                       message=message,
                                                       hardware_id=self.loop.backend.name)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def close(self) -> None:
        self.loop.stop()
        self._worker.join(timeout=10.0)


def main(args: list[str] | None = None) -> int:
    # The worker (inference, JPEG) and the executor (≈500 callbacks/s: two cameras, the 200 Hz
    # pose stream, /clock) share the GIL. At Python's default 5 ms switch interval a thread
    # that wants it back waits up to 5 ms each time, so callbacks fall behind the cameras
    # during inference and a cycle's own work waits behind callbacks; 0.5 ms keeps both moving.
    sys.setswitchinterval(0.0005)
    return run(PolicyNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

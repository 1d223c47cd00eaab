"""policy_node: runs GraspVLA (or the simulation's expert) closed-loop on the two cameras.

Callbacks only store what arrives (images, TCP poses, the commanded gripper state, the
controller's state, instructions); one worker thread takes the newest synchronised view pair,
builds the official client's observation, runs the backend and publishes the chunk, at most
`rate_hz` times a second. Topics, services and parameters: docs/interfaces.md (## Policy).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, deque

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.camera_node import image_msg
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.convert import pose_from_msg, pose_to_msg, stamp_to_ns
from graspvla_ros.nodes.params import Param, declare
from graspvla_ros.policy import episode as episodes
from graspvla_ros.policy.backends import create
from graspvla_ros.policy.observation import (Frame, GripperHistory, PoseHistory, Skip, observation_from, pick_pair,
                                             proprio_rows)
from graspvla_ros.preprocess import (CLIENT_SIZE, MODEL_SIZE, CropWindow, ImageError, crop_from_camera_info,
                                     image_from_msg)

CONFIG = 'policy.yaml'
PARAMS = (
    Param('backend', 'expert',
          '`graspvla` (the model) or `expert` (simulation only: scripted grasps from the sim ground truth)'),
    Param('runtime', 'torch',
          'graspvla backend: `torch`, `onnxruntime` or `tensorrt`'),
    Param('checkpoint', '',
          'graspvla backend: official checkpoint directory (config.json, preprocessor.npz, checkpoint/)'),
    Param('llm_dir', '',
          "graspvla backend: the LLM's Hugging Face directory (config.json, tokenizer.model); empty: next to the checkpoint"),
    Param('onnx_dir', '',
          'graspvla backend: `graspvla export` directory for onnxruntime/tensorrt (empty: export on the fly)'),
    Param('tiny', False,
          'graspvla backend: generate a tiny random checkpoint at start (runs the real code path, will not grasp)'),
    Param('expert_latency', 0.0,
          "expert backend: s it takes to answer, as the model would (the official client is tuned for ~0.25 s)"),
    Param('seed', 0,
          'seed of the flow noise (cycle k uses seed + k) and of the tiny checkpoint'),
    Param('rate_hz', 5.0,
          'most inference cycles per second (it runs as fast as the backend and new images allow up to it)'),
    Param('waypoint_dt', 0.1,
          's between the 8 waypoints of a chunk'),
    Param('jpeg_quality', 75,
          'JPEG quality of the views, as the official client sends them (0 = no JPEG)'),
    Param('max_view_skew', 0.05,
          's, most the front and side stamps of a pair may differ'),
    Param('max_image_age', 0.3,
          's, oldest a pair may be when a cycle starts'),
    Param('proprio_lookback', 0.3,
          's between the history proprio rows and the current one'),
    Param('episode_timeout', 60.0,
          's after which an episode without a successful grasp ends'),
    Param('lift_success', 0.10,
          'm the TCP must rise after the gripper closed for the episode to succeed'),
    Param('min_grasp_width', 0.005,
          'm, a closed gripper measured narrower than this (/graspvla/gripper_width) holds nothing: no success'),
    Param('base_frame', 'base',
          'the frame chunks must be in and poses are published in'),
    Param('controller', '/controller',
          "the controller node: its `state` topic and `hold`/`home` services"),
)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
VIEWS = ("front", "side")
# Controller states in which a chunk would be refused or is pointless: skip the cycle.
BUSY_STATES = {"GRIPPER", "HOMING", "ESTOPPED", "FAULT"}


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        p = declare(self, PARAMS)
        self.p = p
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._frames = {v: deque(maxlen=4) for v in VIEWS}
        self._crops: dict[str, CropWindow] = {}
        self._crop_keys: dict[str, tuple] = {}
        self._poses = PoseHistory()
        self._gripper = GripperHistory()
        self._controller_gripper_seen = False
        self._width: float | None = None  # measured finger width, None until the controller says
        self._controller_state = ""
        self._episode: episodes.Episode | None = None
        self._episode_count = 0
        self._last_reason = ""
        self._last_pair: tuple[int, int] | None = None
        self._skips: Counter[str] = Counter()
        self._cycles = 0
        # image callbacks per view, in all and while the backend ran, and the backend's total time:
        # the callback rate during inference is the second over the third (diagnostics)
        self._images: Counter[str] = Counter()
        self._images_inferring: Counter[str] = Counter()
        self._inferring = False
        self._inference_s = 0.0
        self._truth: dict | None = None
        self._object_names: list[str] = []

        backend_options = {}
        if p["backend"] == "graspvla":
            backend_options = dict(checkpoint=p["checkpoint"], llm_dir=p["llm_dir"], runtime=p["runtime"],
                                   tiny=p["tiny"], onnx_dir=p["onnx_dir"], seed=p["seed"])
        elif p["backend"] == "expert":
            backend_options = dict(ground_truth=lambda: self._truth, latency=p["expert_latency"])
            self.create_subscription(String, "sim/object_names", self._on_object_names, LATCHED)
            self.create_subscription(PoseArray, "sim/object_poses", self._on_object_poses, 10)
        self.get_logger().info(f"loading the {p['backend']} backend")
        self.backend = create(p["backend"], **backend_options)

        self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, "/graspvla/action_chunk", 10)
        self.status_pub = self.create_publisher(String, "/graspvla/status", LATCHED)
        self.bbox_pubs = {v: self.create_publisher(Image, f"/graspvla/debug/{v}/bbox_image", 2) for v in VIEWS}
        self.grasp_pub = self.create_publisher(PoseStamped, "/graspvla/debug/grasp_pose", 10)
        self.timings_pub = self.create_publisher(String, "/graspvla/debug/timings", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        controller = p["controller"].rstrip("/")
        self.hold_client = self.create_client(Trigger, f"{controller}/hold")
        self.home_client = self.create_client(Trigger, f"{controller}/home")

        for v in VIEWS:
            self.create_subscription(Image, f"{v}/color/image_raw", lambda m, v=v: self._on_image(v, m),
                                     qos_profile_sensor_data)
            self.create_subscription(CameraInfo, f"{v}/color/camera_info", lambda m, v=v: self._on_info(v, m),
                                     qos_profile_sensor_data)
        self.create_subscription(PoseStamped, "/graspvla/ee_pose", self._on_pose, 50)
        self.create_subscription(Float64, "/graspvla/gripper_command", self._on_gripper, LATCHED)
        self.create_subscription(Float64, "/graspvla/gripper_width", self._on_width, 10)
        self.create_subscription(String, f"{controller}/state", self._on_controller_state, LATCHED)
        self.create_subscription(String, "/graspvla/instruction", self._on_instruction, 10)
        self.create_timer(0.1, self._check_episode)
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_status("")

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="policy-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"ready: backend {p['backend']}, ≤ {p['rate_hz']:g} Hz, waiting for an instruction "
                               "on /graspvla/instruction")

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    # --- callbacks: store only -------------------------------------------------------
    def _on_image(self, view: str, msg: Image) -> None:
        received = self._now()
        self._images[view] += 1
        if self._inferring:
            self._images_inferring[view] += 1
        with self._lock:
            crop = self._crops.get(view)
        try:
            rgb = image_from_msg(msg)
        except ImageError as err:
            self._skip("bad_image", f"{view}: {err}")
            return
        with self._lock:
            self._frames[view].append(Frame(stamp_to_ns(msg.header.stamp), rgb, crop, received))
            self._wake.notify_all()

    def _on_info(self, view: str, msg: CameraInfo) -> None:
        """The crop window, recomputed only when the intrinsics change."""
        key = (tuple(msg.k), msg.width, msg.height)
        if self._crop_keys.get(view) == key:
            return
        try:
            crop = crop_from_camera_info(msg)
        except ValueError as err:
            self._skip("bad_camera", f"{view}: {err}")
            return
        with self._lock:
            self._crops[view], self._crop_keys[view] = crop, key

    def _on_pose(self, msg: PoseStamped) -> None:
        with self._lock:
            self._poses.add(stamp_to_ns(msg.header.stamp), pose_from_msg(msg.pose))

    def _on_gripper(self, msg: Float64) -> None:
        with self._lock:
            self._controller_gripper_seen = True
            self._gripper.add(self._now(), float(msg.data))

    def _on_width(self, msg: Float64) -> None:
        self._width = float(msg.data)

    def _on_controller_state(self, msg: String) -> None:
        with self._lock:
            self._controller_state = msg.data

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
        ended = None
        with self._lock:
            old = self._episode
            if old is not None:
                phase = "replaced" if isinstance(command, episodes.Pick) else (
                    "stopped" if isinstance(command, episodes.Stop) else "homed")
                if old.end(phase, f"instruction {msg.data!r}"):
                    log.info(f"episode {old.id} {phase}: {old.reason}")
                    ended = old.status()
            if isinstance(command, episodes.Pick):
                self._episode_count += 1
                self._episode = episodes.Episode(self._episode_count, command.target, command.task, self._now(),
                                                 self.p["episode_timeout"], self.p["lift_success"],
                                                 self.p["min_grasp_width"])
                self.backend.reset()
                self._wake.notify_all()
        if ended is not None and isinstance(command, episodes.Pick):
            self._publish(ended)  # every end is on the status topic, also the replaced episode's
        if isinstance(command, episodes.Home):
            self._call(self.home_client, "home")
        else:
            self._call(self.hold_client, "hold")
        if isinstance(command, episodes.Pick):
            log.info(f"episode {self._episode.id}: {command.task!r}")
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
        """Success (closed on something and lifted) or timeout, from the newest TCP pose, the
        commanded gripper state and the measured finger width."""
        with self._lock:
            ep = self._episode
            if ep is None or not ep.running:
                return
            newest = self._poses.newest
            now = self._now()
            changed = ep.update(now, None if newest is None else float(newest[1].position[2]), self._gripper.at(now),
                                self._width)
        if changed:
            self.get_logger().info(f"episode {ep.id} {ep.phase}: {ep.reason}")
            if not ep.running:
                self._call(self.hold_client, "hold")
            self._publish_status(ep.reason)

    # --- worker ------------------------------------------------------------------------
    def _work(self) -> None:
        period = 1.0 / self.p["rate_hz"]
        next_start = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            self._stop.wait(max(0.0, next_start - time.monotonic()))
            with self._lock:
                ep = self._episode
                if ep is None or not ep.running:
                    self._wake.wait(0.2)
                    continue
            started = time.monotonic()
            try:
                self._cycle(ep)
            except Skip as skip:
                self._skip(skip.reason, skip.detail)
                if skip.reason == "no_new_images":
                    with self._lock:
                        self._wake.wait(period)
                    continue
            except Exception as err:  # a backend failure must not kill the loop; the arm holds meanwhile
                self._skip("backend_error", f"{type(err).__name__}: {err}")
            next_start = max(started + period, time.monotonic())

    def _cycle(self, ep: episodes.Episode) -> None:
        p = self.p
        cycle_start, wall_start, cpu_start = self._now(), time.perf_counter(), time.thread_time()
        with self._lock:
            state = self._controller_state
            if state in BUSY_STATES:
                raise Skip("controller_busy", f"controller is {state}")
            now = self._now()
            # Only views newer than the last pair's: a chunk's stamp must grow, and an old view
            # paired with a new one would show the model a moment it has seen.
            last_front, last_side = self._last_pair or (-1, -1)
            fronts = [f for f in self._frames["front"] if f.stamp_ns > last_front]
            sides = [f for f in self._frames["side"] if f.stamp_ns > last_side]
            if self._last_pair and not (fronts and sides):
                waited = (now - max(self._last_pair)) / 1e9
                raise Skip("no_new_images" if waited < 2.0 else "cameras_stalled",
                           f"no new view pair for {waited:.1f} s")
            front, side = pick_pair(fronts, sides, now, p["max_view_skew"], p["max_image_age"])
            rows, anchor = proprio_rows(front.stamp_ns, self._poses, self._gripper, ep.start_ns, p["proprio_lookback"])
            newest_pose_ns = self._poses.newest[0]
            self._last_pair = (front.stamp_ns, side.stamp_ns)
        received = max(front.received_ns, side.received_ns)
        obs = observation_from(front, side, rows, anchor, ep.task, ep.target, p["jpeg_quality"], ep.id)
        infer_start, wall_infer_start, cpu_infer_start = self._now(), time.perf_counter(), time.thread_time()
        self._inferring = True
        try:
            out = self.backend.infer(obs)
        finally:
            self._inferring = False
            wall_infer_end, cpu_infer_end = time.perf_counter(), time.thread_time()
            self._inference_s += wall_infer_end - wall_infer_start
        infer_end = self._now()
        chunk = ActionChunk(obs.stamp_ns, p["waypoint_dt"], p["base_frame"], out.waypoints, obs.anchor, obs.gripper)
        with self._lock:
            if self._episode is not ep or not ep.running:
                return  # ended or replaced while the model ran: its chunk must not move the arm
            self.chunk_pub.publish(chunk_msg.encode(chunk))
            published = self._now()
            # the node's own work this cycle (wall clock): view pair → observation, chunk → published
            overhead_s = (wall_infer_start - wall_start) + (time.perf_counter() - wall_infer_end)
            # the same on the worker's CPU clock: its work alone, without the waits for the GIL and the CPU
            overhead_cpu_s = (cpu_infer_start - cpu_start) + (time.thread_time() - cpu_infer_end)
            ep.cycles += 1
            self._cycles += 1
            if not self._controller_gripper_seen:  # until the controller reports it: our own commands
                for w in chunk.targets:
                    if w.gripper != 0.0:
                        self._gripper.add(w.stamp_ns, w.gripper)
        if self._last_reason:
            self.get_logger().info(f"cycles run again (after {self._last_reason})")
            self._last_reason = ""
        replay = {"side_stamp_ns": side.stamp_ns, "newest_pose_ns": newest_pose_ns, "episode_start_ns": ep.start_ns,
                  "gripper": [float(rows[0, 6]), float(rows[-1, 6])]}
        self._publish_debug(obs, out, received, (cycle_start, infer_start, infer_end, published),
                            (overhead_s, overhead_cpu_s), replay)

    def _skip(self, reason: str, detail: str) -> None:
        self._skips[reason] += 1
        if reason != self._last_reason and reason != "no_new_images":
            self.get_logger().warning(f"cycle skipped: {reason}: {detail}")
            self._last_reason = reason

    # --- outputs -----------------------------------------------------------------------
    def _publish_debug(self, obs, out, received, times, overhead, replay) -> None:
        cycle_start, infer_start, infer_end, published = times
        overhead_s, overhead_cpu_s = overhead
        scale = CLIENT_SIZE / MODEL_SIZE
        for i, view in enumerate(VIEWS):
            if self.bbox_pubs[view].get_subscription_count() == 0:
                continue
            image = np.ascontiguousarray(obs.front if view == "front" else obs.side).copy()
            x1, y1, x2, y2 = (int(round(v * scale)) for v in out.bbox[i])
            cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
            self.bbox_pubs[view].publish(image_msg(image, "rgb8", f"{view}_color_optical_frame", obs.stamp_ns))
        self.grasp_pub.publish(pose_to_msg(Pose.from_xyz_rpy(out.grasp_xyz, out.grasp_rpy), self.p["base_frame"],
                                            obs.stamp_ns))
        ms = lambda t: round((t - obs.stamp_ns) / 1e6, 2)  # noqa: E731
        self.timings_pub.publish(String(data=json.dumps({
            "episode": obs.episode, "stamp_ns": obs.stamp_ns, "received_ms": ms(received),
            "cycle_start_ms": ms(cycle_start), "overhead_ms": round(overhead_s * 1e3, 2),
            "overhead_cpu_ms": round(overhead_cpu_s * 1e3, 2),
            "inference_start_ms": ms(infer_start), "inference_end_ms": ms(infer_end), "published_ms": ms(published),
            **{f"{k}_ms": round(v * 1e3, 2) for k, v in out.timings.items()},
            # what `graspvla replay-test` needs to run this cycle again from a bag, bit for bit
            "seed": out.seed, "tokens": out.tokens, **replay})))

    def _publish_status(self, reason: str) -> None:
        with self._lock:
            ep = self._episode
            status = ep.status() if ep is not None else {"episode": 0, "instruction": "", "target": "",
                                                         "phase": "idle", "reason": "", "cycles": 0}
        if reason:
            status["reason"] = reason
        self._publish(status)

    def _publish(self, status: dict) -> None:
        self.status_pub.publish(String(data=json.dumps({**status, "backend": self.p["backend"]})))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            ep = self._episode
            values = [KeyValue(key="cycles", value=str(self._cycles)),
                      KeyValue(key="episode", value=str(ep.id if ep else 0)),
                      KeyValue(key="phase", value=ep.phase if ep else "idle")]
            values += [KeyValue(key=f"skipped.{k}", value=str(v)) for k, v in sorted(self._skips.items())]
            values += [KeyValue(key=f"images.{v}", value=str(self._images[v])) for v in VIEWS]
            values += [KeyValue(key=f"images_during_inference.{v}", value=str(self._images_inferring[v]))
                       for v in VIEWS]
            values.append(KeyValue(key="inference_s", value=f"{self._inference_s:.3f}"))
            level = DiagnosticStatus.WARN if self._last_reason else DiagnosticStatus.OK
        msg = DiagnosticArray(status=[DiagnosticStatus(level=level, name="graspvla/policy", values=values,
                                                       message=self._last_reason or "ok",
                                                       hardware_id=self.backend.name)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
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

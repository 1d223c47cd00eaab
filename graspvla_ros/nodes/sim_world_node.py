"""sim_world_node: franky-sim (FR3 + gripper on `host`) with the GraspVLA table world.

Publishes `/clock` from MuJoCo's simulated time (the sim graph runs every node on it), the
front/side cameras on the same topics and encodings as camera_node, the objects'
ground-truth poses and grasp success for the current target. The cameras render in a child
process (`graspvla_ros.sim.render`) that publishes as the node `<name>_cameras`, so rendering
never takes the physics' CPU time under the GIL.
Topics, services and parameters: docs/interfaces.md (## Simulated world).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import Pose, PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from graspvla_ros.camera import Intrinsics
from graspvla_ros import chunk
from graspvla_ros.interfaces import (CLOCK, SIM_CHECK_SUCCESS, SIM_FAULTS, SIM_GRASP_SUCCESS, SIM_INJECT_FAULT,
                                     SIM_OBJECT_NAMES, SIM_OBJECT_POSES, SIM_RESET_OBJECTS, SIM_SET_TARGET, SIM_TARGET,
                                     camera_info_topic, image_topic)
from graspvla_ros.nodes.camera_node import QOS_MEANING, camera_info_msg, image_msg, image_qos
from graspvla_ros.nodes.common import RCLError, log_condition, periodic, run
from graspvla_ros.nodes.convert import ns_to_stamp
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.tf import TfBroadcaster, transform_msg
from graspvla_ros.process import die_with_parent
from graspvla_ros.settings import build, inline, params, setting
from graspvla_ros.sim.pace import PaceMonitor
from graspvla_ros.sim.render import Snapshot, SnapshotRenderer, save_model
from graspvla_ros.sim.scene import OBJECTS, object_spec
from graspvla_ros.sim.settings import SimWorldSettings
from graspvla_ros.sim.world import SimWorld

CONFIG = 'sim_world.yaml'


@dataclass(frozen=True)
class SimWorldNodeSettings:
    """The world's own settings (`sim.settings`) and how this node publishes it."""

    world: SimWorldSettings = inline(SimWorldSettings)
    clock_rate_hz: float = setting(
        250.0, "rate of `/clock` (MuJoCo time; the physics steps 1 ms): the resolution of node-clock stamps in the "
               "sim graph; each node on sim time spends ~10% of a core per 500 Hz taking it (measured)")
    qos: str = setting("sensor_data", QOS_MEANING)
    ground_truth_rate_hz: float = setting(10.0, "rate of `sim/object_poses` and `sim/grasp_success`")
    target: str = setting("", "initial target object name")
    base_frame: str = setting("base", "the frame chunks must be in and poses are published in")

    def __post_init__(self) -> None:
        image_qos(self.qos)  # a bad value fails here, not in the camera process
        if not self.clock_rate_hz > 0 or not self.ground_truth_rate_hz > 0:
            raise ValueError(f"clock_rate_hz and ground_truth_rate_hz must be > 0, got {self.clock_rate_hz}, "
                             f"{self.ground_truth_rate_hz}")


PARAMS = params(SimWorldNodeSettings)
CAMERA_NICE = 10  # the camera process's niceness: ~1/10 of the physics' CPU share when both want it
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class SimWorldNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("sim_world", **node_options)
        s = build(SimWorldNodeSettings, declare(self, PARAMS))
        self.base_frame = s.base_frame
        self._target = ""
        self.world = SimWorld.from_settings(s.world)
        self.clock_pub = self.create_publisher(Clock, CLOCK, 10)
        self.pace = PaceMonitor()
        self.names_pub = self.create_publisher(String, SIM_OBJECT_NAMES, LATCHED)
        self.poses_pub = self.create_publisher(PoseArray, SIM_OBJECT_POSES, 10)
        self.target_pub = self.create_publisher(String, SIM_TARGET, LATCHED)
        self.success_pub = self.create_publisher(Bool, SIM_GRASP_SUCCESS, 10)
        self.create_subscription(String, SIM_SET_TARGET, lambda m: self._set_target(m.data), 10)
        self.faults_pub = self.create_publisher(String, SIM_FAULTS, LATCHED)
        self.create_subscription(String, SIM_INJECT_FAULT, lambda m: self._inject(m.data), 10)
        self.create_service(Trigger, SIM_CHECK_SUCCESS, self._check_success)
        self.create_service(Trigger, SIM_RESET_OBJECTS, self._reset_objects)
        self.world.start()
        self._set_target(s.target)
        self.faults_pub.publish(String(data=json.dumps(self.world.server.faults())))
        self.names_pub.publish(String(data=json.dumps([o.name for o in OBJECTS])))
        self.create_timer(1.0 / s.ground_truth_rate_hz, self._publish_ground_truth)
        # the simulated cameras' true extrinsics (camera_node sends the measured ones)
        self.tf_static = TfBroadcaster(self, static=True)
        self.tf_static.send(
            [transform_msg(self.base_frame, f"{c.name}_color_optical_frame", round(self.world.time() * 1e9),
                           chunk.Pose(np.asarray(c.position, float), c.rotation())) for c in self.world.scene.cameras])
        self._stop = threading.Event()
        self._clock_thread = threading.Thread(target=periodic, args=(self, 1.0 / s.clock_rate_hz,
                                              self._publish_clock, self._stop), name="sim-clock", daemon=True)
        self._clock_thread.start()
        self.cameras = CameraProcess(self.world, s.qos, f"{self.get_name()}_cameras", self.get_namespace())
        self._snapshot_thread = threading.Thread(target=self.cameras.feed,
                                                 args=(1.0 / s.world.camera_rate_hz, self._stop),
                                                 name="sim-camera-snapshots", daemon=True)
        self._snapshot_thread.start()
        if not self.get_parameter("use_sim_time").value:
            self.get_logger().warning("use_sim_time is false: the cameras and /clock carry sim time while this "
                                      "node's other stamps are wall time (the sim graph sets use_sim_time everywhere)")
        self.get_logger().info(f"franky-sim on {s.world.host}, seed {s.world.seed}, cameras "
                               f"{[c.name for c in self.world.scene.cameras]} at {s.world.camera_rate_hz} Hz "
                               f"(process {self.cameras.process.pid}), /clock at {s.clock_rate_hz} Hz")

    def _inject(self, fault: str) -> None:
        """Make the simulated robot fail as a real one does (sim.faults); the faults in force go
        out on the latched `sim/faults`, and once more when a timed one (network_drop) ends."""
        try:
            active = self.world.server.inject(fault)
        except ValueError as err:
            self.get_logger().error(f"{SIM_INJECT_FAULT}: {err}")
            return
        self.get_logger().warning(f"fault injected: {fault}")
        self.faults_pub.publish(String(data=json.dumps(active)))
        if active["offline"]:
            def back() -> None:
                if not self.world.server.faults()["offline"]:
                    timer.cancel()
                    self.faults_pub.publish(String(data=json.dumps(self.world.server.faults())))
            timer = self.create_timer(0.1, back)

    def _publish_clock(self) -> None:
        now = self.world.time()
        self.clock_pub.publish(Clock(clock=ns_to_stamp(round(now * 1e9))))
        said = self.pace.update(time.monotonic(), now)
        if said:
            log_condition(self.get_logger(), self.pace.behind, said)

    def _set_target(self, name: str) -> None:
        if name:
            try:
                object_spec(name)
            except KeyError as e:
                self.get_logger().error(str(e.args[0]))
                return
        self._target = name
        self.target_pub.publish(String(data=name))

    def _publish_ground_truth(self) -> None:
        try:
            self._publish_ground_truth_once()
        except RCLError:
            if self.context.ok():
                raise  # a SIGINT/SIGTERM invalidates the context under a running timer: end quietly

    def _publish_ground_truth_once(self) -> None:
        msg = PoseArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.base_frame
        for name, (pos, quat) in self.world.object_poses().items():
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = (float(v) for v in pos)
            pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in quat)
            msg.poses.append(pose)
        self.poses_pub.publish(msg)
        if self._target:
            self.success_pub.publish(Bool(data=self.world.grasp_success(self._target)))

    def _check_success(self, _request, response):
        if not self._target:
            response.success, response.message = False, f"no target object set (publish its name on {SIM_SET_TARGET})"
            return response
        lift, held = self.world.lift_height(self._target), self.world.in_gripper(self._target)
        response.success = self.world.grasp_success(self._target)
        response.message = f"{self._target}: lifted {lift * 100:.1f} cm, {'in' if held else 'not in'} the gripper"
        return response

    def _reset_objects(self, _request, response):
        """Objects to the next seed's layout; any failure is the response's message, never a crash."""
        seed = self.world.seed + 1
        try:
            self.world.relayout(seed)
        except Exception as e:  # noqa: BLE001 - the world keeps running; the caller reads why
            self.get_logger().error(f"{SIM_RESET_OBJECTS}: seed {seed}: {e}")
            response.success, response.message = False, f"objects not re-placed (seed {seed}): {e}"
            return response
        response.success, response.message = True, f"objects re-placed with seed {seed}"
        return response

    def close(self) -> None:
        self._stop.set()
        self._clock_thread.join()
        self._snapshot_thread.join()
        published = self.cameras.close()
        self.world.stop()
        # python logging: at shutdown the node's rosout publisher is gone already
        logging.getLogger("sim_world").info(f"camera process published {published} frame pairs")


class CameraProcess:
    """The simulated cameras' child process: takes `Snapshot`s through a pipe, renders both
    views of the newest one and publishes them stamped with its sim time, as camera_node does.
    It runs at a lower CPU priority (`CAMERA_NICE`): on a busy machine the camera rate drops
    before the physics slows."""

    def __init__(self, world: SimWorld, qos: str, node_name: str, namespace: str):
        os.environ.setdefault("MUJOCO_GL", "egl")  # before the child imports mujoco
        self._tmp = tempfile.TemporaryDirectory(prefix="sim_world_")
        model = save_model(world.model, Path(self._tmp.name) / "world.mjb")
        cameras = []
        width, height = world.width, world.height
        for cam in world.scene.cameras:
            f = cam.focal_px(height)
            intr = Intrinsics(width, height, f, f, (width - 1) / 2, (height - 1) / 2, "plumb_bob", (0.0,) * 5)
            cameras.append((cam.name, intr))
        self.world = world
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs DDS threads
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=camera_process, name=node_name, daemon=True,
                                   args=(child, str(model), cameras, qos, node_name, namespace))
        self.process.start()
        child.close()

    def feed(self, period: float, stop: threading.Event) -> None:
        """A snapshot every `period` of SIM time, as a real camera exposes every period of real
        time: a physics slowed by the CPU slows the cameras too (and sheds their load), and the
        policy sees the camera rate the world runs at. Until `stop`."""
        due = self.world.time()
        while not stop.is_set():
            now = self.world.time()
            if now >= due:
                self.send_snapshot()
                due = due + period if due + period > now else now + period  # no burst after a stall
            else:
                stop.wait(due - now)  # simulated time never runs ahead of wall time

    def send_snapshot(self) -> None:
        try:
            self._conn.send(self.world.snapshot())
        except OSError:
            pass  # the child has ended (a shutdown's SIGINT reaches it first): nothing to feed

    def close(self) -> int:
        """Stop the child; returns how many snapshots it rendered and published (-1: unknown)."""
        published = -1
        try:
            self._conn.send(None)
        except OSError:
            pass  # the child has ended already; its count may still be in the pipe
        try:
            if self._conn.poll(10.0):
                published = self._conn.recv()
        except (OSError, EOFError):
            pass
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self._conn.close()
        self._tmp.cleanup()
        return published


def camera_process(conn, model_path: str, cameras: list[tuple[str, Intrinsics]], qos: str,
                   node_name: str, namespace: str) -> None:
    """Child process: render each snapshot received (skipping to the newest when behind) and
    publish image + camera_info per camera, until `None` or the parent goes away."""
    die_with_parent()
    context = rclpy.Context()
    # no rclpy signal handlers: SIGINT to the process group ends this loop as KeyboardInterrupt
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = Node(node_name, namespace=namespace or "/", context=context)
    renderer, published = None, 0
    try:
        width, height = cameras[0][1].width, cameras[0][1].height
        renderer = SnapshotRenderer(model_path, [name for name, _ in cameras], width, height)
        publishers = {}
        for name, intr in cameras:
            frame_id = f"{name}_color_optical_frame"
            publishers[name] = (node.create_publisher(Image, image_topic(name), image_qos(qos)),
                                node.create_publisher(CameraInfo, camera_info_topic(name), image_qos(qos)),
                                camera_info_msg(intr, frame_id), frame_id)
        os.nice(CAMERA_NICE)  # after start-up: at low priority on a loaded machine that alone took minutes
        while True:
            snapshot: Snapshot | None = conn.recv()
            while snapshot is not None and conn.poll():
                snapshot = conn.recv()
            if snapshot is None:
                break
            stamp_ns = round(snapshot.time * 1e9)
            for name, rgb in renderer.render(snapshot).items():
                image_pub, info_pub, info, frame_id = publishers[name]
                info.header.stamp = ns_to_stamp(stamp_ns)
                image_pub.publish(image_msg(rgb, "rgb8", frame_id, stamp_ns))
                info_pub.publish(info)
            published += 1
    except (EOFError, KeyboardInterrupt):
        pass  # parent gone, or the SIGINT of a shutdown that reached the whole process group
    finally:
        try:
            conn.send(published)
        except OSError:
            pass
        if renderer is not None:
            renderer.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def main(args: list[str] | None = None) -> int:
    return run(SimWorldNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

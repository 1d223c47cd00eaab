"""sim_world_node: franky-sim (FR3 + gripper on `host`) with the GraspVLA table world.

Publishes the front/side cameras on the same topics and encodings as camera_node, the
objects' ground-truth poses and grasp success for the current target.
Topics, services and parameters: docs/interfaces.md (## Simulated world).
"""
from __future__ import annotations

import json
import sys
import threading

from geometry_msgs.msg import Pose, PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from graspvla_ros.camera import Intrinsics
from graspvla_ros.nodes.camera_node import camera_info_msg, image_msg, image_qos
from graspvla_ros.nodes.common import periodic, run
from graspvla_ros.nodes.params import Param, declare
from graspvla_ros.sim.world import OBJECTS, SimWorld, object_spec

CONFIG = 'sim_world.yaml'
PARAMS = (
    Param('host', '127.0.0.1',
          "loopback address franky-sim binds (the controller's `robot_ip`)"),
    Param('seed', 0,
          'object layout seed'),
    Param('realtime', 1.0,
          '`true` = `RealtimeConfig.Enforce` (needs a real-time kernel), else `Ignore`'),
    Param('camera_rate_hz', 10.0,
          'render + publish rate of each camera (a 640×480 frame costs 70–90 ms of CPU with llvmpipe on the 2-core test machine, BENCHMARKS.md)'),
    Param('width', 640,
          'colour stream profile (rgb8); GraspVLA expects 640×480 from a D435/D415'),
    Param('height', 480,
          'colour stream profile (rgb8); GraspVLA expects 640×480 from a D435/D415'),
    Param('qos', 'sensor_data',
          '`sensor_data` (best effort, depth 5) or `reliable` (depth 5) for the image/info publishers'),
    Param('ground_truth_rate_hz', 10.0,
          'rate of `sim/object_poses` and `sim/grasp_success`'),
    Param('target', '',
          'initial target object name'),
    Param('base_frame', 'base',
          'the frame chunks must be in and poses are published in'),
)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class SimWorldNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("sim_world", **node_options)
        p = declare(self, PARAMS)
        self.base_frame = p["base_frame"]
        self._target = ""
        self.world = SimWorld(p["seed"], p["host"], p["realtime"], p["width"], p["height"])
        qos = image_qos(p["qos"])
        self.cameras = {}
        for cam in self.world.scene.cameras:
            f = cam.focal_px(p["height"])
            intr = Intrinsics(p["width"], p["height"], f, f, (p["width"] - 1) / 2, (p["height"] - 1) / 2,
                              "plumb_bob", (0.0,) * 5)
            frame_id = f"{cam.name}_color_optical_frame"
            self.cameras[cam.name] = (
                self.create_publisher(Image, f"{cam.name}/color/image_raw", qos),
                self.create_publisher(CameraInfo, f"{cam.name}/color/camera_info", qos),
                camera_info_msg(intr, frame_id), frame_id)
        self.names_pub = self.create_publisher(String, "sim/object_names", LATCHED)
        self.poses_pub = self.create_publisher(PoseArray, "sim/object_poses", 10)
        self.target_pub = self.create_publisher(String, "sim/target", LATCHED)
        self.success_pub = self.create_publisher(Bool, "sim/grasp_success", 10)
        self.create_subscription(String, "sim/set_target", lambda m: self._set_target(m.data), 10)
        self.create_service(Trigger, "sim/check_success", self._check_success)
        self.create_service(Trigger, "sim/reset_objects", self._reset_objects)
        self.world.start()
        self._set_target(p["target"])
        self.names_pub.publish(String(data=json.dumps([o.name for o in OBJECTS])))
        self.create_timer(1.0 / p["ground_truth_rate_hz"], self._publish_ground_truth)
        self._stop = threading.Event()
        self._render_thread = threading.Thread(target=self._render_loop, args=(p["camera_rate_hz"],),
                                               name="sim-cameras", daemon=True)
        self._render_thread.start()
        self.get_logger().info(f"franky-sim on {p['host']}, seed {p['seed']}, cameras "
                               f"{list(self.cameras)} at {p['camera_rate_hz']} Hz")

    def _set_target(self, name: str) -> None:
        if name:
            try:
                object_spec(name)
            except KeyError as e:
                self.get_logger().error(str(e.args[0]))
                return
        self._target = name
        self.target_pub.publish(String(data=name))

    def _render_loop(self, rate_hz: float) -> None:
        """Renders and publishes every camera at `rate_hz` (the renderers live on this thread)."""
        renderers = {name: self.world.renderer(name) for name in self.cameras}
        def publish_frames() -> None:
            for name, renderer in renderers.items():
                stamp_ns = self.get_clock().now().nanoseconds
                rgb = renderer.render()
                image_pub, info_pub, info, frame_id = self.cameras[name]
                info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                image_pub.publish(image_msg(rgb, "rgb8", frame_id, stamp_ns))
                info_pub.publish(info)

        try:
            periodic(self, 1.0 / rate_hz, publish_frames, self._stop)
        finally:
            for renderer in renderers.values():
                renderer.close()

    def _publish_ground_truth(self) -> None:
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
            response.success, response.message = False, "no target object set (publish its name on sim/set_target)"
            return response
        lift, held = self.world.lift_height(self._target), self.world.in_gripper(self._target)
        response.success = self.world.grasp_success(self._target)
        response.message = f"{self._target}: lifted {lift * 100:.1f} cm, {'in' if held else 'not in'} the gripper"
        return response

    def _reset_objects(self, _request, response):
        seed = self.world.seed + 1
        self.world.relayout(seed)
        response.success, response.message = True, f"objects re-placed with seed {seed}"
        return response

    def close(self) -> None:
        self._stop.set()
        self._render_thread.join()
        self.world.stop()


def main(args: list[str] | None = None) -> int:
    return run(SimWorldNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""camera_node: one RealSense colour camera (front or side) for GraspVLA.

Topics, parameters and diagnostics: docs/interfaces.md (## Cameras).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node  # before graspvla_ros.camera: rclpy must load before pyrealsense2 (exit segfault otherwise)
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from graspvla_ros.camera import (CameraDriver, DriverStatus, Intrinsics, PlaybackFile, RealSenseDevice,
                                 SoftwareCamera, StampedFrames)
from graspvla_ros.calibration import store
from graspvla_ros.chunk import Pose
from graspvla_ros.camera.settings import CameraSettings
from graspvla_ros.interfaces import DIAGNOSTICS, camera_info_topic, depth_image_topic, depth_info_topic, image_topic
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.convert import ns_to_stamp
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.tf import TfBroadcaster, transform_msg
from graspvla_ros.settings import build, inline, params, setting

CONFIG = 'camera.yaml'
QOS_MEANING = "`sensor_data` (best effort, depth 5) or `reliable` (depth 5) for the image/info publishers"


@dataclass(frozen=True)
class CameraNodeSettings:
    """The camera's own settings (`camera.settings`) and how this node publishes them."""

    name: str = setting("front", "camera name, prefix of the topics (`front` or `side`)")
    camera: CameraSettings = inline(CameraSettings)
    frame_id: str = setting("", "header frame id; empty = `<name>_color_optical_frame`")
    base_frame: str = setting("base", "parent frame of `/tf_static` base → `frame_id`, from the measured extrinsics "
                                      "in `calibration_dir`/<name>.yaml")
    calibration_dir: str = setting("", "where <name>.yaml is; empty = $GRASPVLA_CALIBRATION_DIR, else the package's "
                                       "calibration/")
    qos: str = setting("sensor_data", QOS_MEANING)
    diagnostics_period: float = setting(1.0, "seconds between /diagnostics messages")

    def __post_init__(self) -> None:
        image_qos(self.qos)
        if not self.diagnostics_period > 0:
            raise ValueError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")


PARAMS = params(CameraNodeSettings)
DIAGNOSTIC_LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}


def image_qos(name: str) -> QoSProfile:
    """`sensor_data` (best effort, keep last 5) or `reliable` (keep last 5)."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(depth=5)
    raise ValueError(f"qos must be 'sensor_data' or 'reliable', got {name!r}")


def camera_info_msg(intr: Intrinsics, frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = intr.model
    msg.d = list(intr.coeffs)
    msg.k = [intr.fx, 0.0, intr.ppx, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.ppx, 0.0, 0.0, intr.fy, intr.ppy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def image_msg(array, encoding: str, frame_id: str, stamp_ns: int) -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def diagnostic_status(st: DriverStatus, name: str, hardware_id: str) -> DiagnosticStatus:
    values = {"state": st.state, "frames": st.frames, "dropped": st.dropped, "reconnects": st.reconnects,
              "fps": f"{st.fps:.1f}", "last_error": st.last_error,
              "last_frame_age_s": "" if st.last_frame_age_s is None else f"{st.last_frame_age_s:.3f}"}
    return DiagnosticStatus(level=DIAGNOSTIC_LEVELS[st.level], name=name, message=st.message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


class CameraNode(Node):
    """Publishes one camera's colour (and aligned depth) images with CameraInfo.

    `source` replaces the one the parameters describe (tests hand in a SoftwareCamera whose
    frames they inject themselves); `node_options` go to rclpy's Node.
    """

    def __init__(self, source=None, **node_options) -> None:
        super().__init__("camera", **node_options)
        s = build(CameraNodeSettings, declare(self, PARAMS))
        self.camera = s.name
        stream = s.camera.stream
        self.frame_id = s.frame_id or f"{self.camera}_color_optical_frame"
        self._pattern_stop = threading.Event()
        self._pattern: threading.Thread | None = None
        if source is None:
            source = self._source(s.camera)
        self.hardware_id = getattr(source, "serial", "") or source.description
        qos = image_qos(s.qos)
        self.color_pub = self.create_publisher(Image, image_topic(self.camera), qos)
        self.info_pub = self.create_publisher(CameraInfo, camera_info_topic(self.camera), qos)
        self.depth_pub = self.depth_info_pub = None
        if stream.enable_depth:
            self.depth_pub = self.create_publisher(Image, depth_image_topic(self.camera), qos)
            self.depth_info_pub = self.create_publisher(CameraInfo, depth_info_topic(self.camera), qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.tf_static = TfBroadcaster(self, static=True)
        if self.tf_static.enabled:
            self._send_extrinsics(s.base_frame, Path(s.calibration_dir or store.CALIBRATION_DIR))
        self._info: CameraInfo | None = None
        # the driver says when it waits for the camera and when frames come (never before)
        self.driver = CameraDriver(source, stream, self._publish,
                                   ros_now_ns=lambda: self.get_clock().now().nanoseconds,
                                   stall_timeout=s.camera.stall_timeout,
                                   report=lambda line: self.get_logger().info(f"camera '{self.camera}': {line}"))
        self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        self.driver.start()

    def _send_extrinsics(self, base_frame: str, directory: Path) -> None:
        """base → this camera's optical frame on /tf_static, from <directory>/<name>.yaml."""
        try:
            pose = store.load_calibration(self.camera, directory).pose
        except (FileNotFoundError, ValueError) as e:
            pose, why = None, str(e)
        else:
            why = f"{store.calibration_path(self.camera, directory)} holds no measured extrinsics"
        if pose is None:
            self.get_logger().info(f"no /tf_static {base_frame} → {self.frame_id}: {why}")
            return
        self.tf_static.send([transform_msg(base_frame, self.frame_id, self.get_clock().now().nanoseconds,
                                           Pose(pose[:3, 3], pose[:3, :3]))])

    def _source(self, s: CameraSettings):
        if s.source == "playback":
            return PlaybackFile(s.playback_path, s.playback_real_time)
        if s.source == "software":
            camera = SoftwareCamera(s.serial or "SW0001", s.stream)
            self._pattern = threading.Thread(target=camera.play_pattern, args=(self._pattern_stop,), daemon=True)
            self._pattern.start()
            return camera
        return RealSenseDevice(s.serial)

    def _publish(self, stamped: StampedFrames) -> None:
        frames = stamped.frames
        if self._info is None or (self._info.width, self._info.height) != (frames.intrinsics.width,
                                                                            frames.intrinsics.height):
            self._info = camera_info_msg(frames.intrinsics, self.frame_id)
        self._info.header.stamp = ns_to_stamp(stamped.stamp_ns)
        self.color_pub.publish(image_msg(frames.color, "rgb8", self.frame_id, stamped.stamp_ns))
        self.info_pub.publish(self._info)
        if self.depth_pub is not None and frames.depth is not None:
            depth = frames.depth  # REP 118: 16UC1 in millimetres
            if abs(frames.depth_scale - 0.001) > 1e-6:
                depth = np.clip(np.rint(depth * (frames.depth_scale * 1000.0)), 0, 65535).astype(np.uint16)
            self.depth_pub.publish(image_msg(depth, "16UC1", self.frame_id, stamped.stamp_ns))
            self.depth_info_pub.publish(self._info)

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(self.driver.status(), f"{self.get_name()}: {self.camera} camera",
                                        self.hardware_id)]
        self.diag_pub.publish(msg)

    def close(self) -> None:
        self._pattern_stop.set()
        self.driver.stop()
        if self._pattern is not None:
            self._pattern.join()


def main(args: list[str] | None = None) -> int:
    return run(CameraNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""model_view_node: the official client's view of each camera, for a policy on another host.

On two hosts (`transport: model_view`) the robot host makes what the official robot client sends
its model server: each camera frame centre-cropped (the crop its CameraInfo gives), resized to
256×256 and JPEG-compressed at the policy's quality (`preprocess.encode_view`), published as a
sensor_msgs/CompressedImage with the frame's header. The policy decodes it into exactly the image
it would have made from the raw frame (tests/test_model_view.py), at ~1–4 % of the raw bytes; the
raw frames stay on the robot host. Topics, parameters, diagnostics: docs/interfaces.md (## Cameras).
"""
from __future__ import annotations

import sys
import time
from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from graspvla_ros.camera.settings import ModelViewSettings
from graspvla_ros.interfaces import DIAGNOSTICS, VIEWS, camera_info_topic, image_topic, model_view_topic
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.params import declare
from graspvla_ros.preprocess import ImageError, ViewCrops, encode_view, image_from_msg
from graspvla_ros.settings import build, params

CONFIG = "model_view.yaml"
PARAMS = params(ModelViewSettings)
FORMAT = "rgb8; jpeg compressed rgb8"   # compressed_image_transport's format string


class ModelViewNode(Node):
    def __init__(self) -> None:
        super().__init__("model_view")
        self.settings = build(ModelViewSettings, declare(self, PARAMS))
        self._crops = ViewCrops()
        self._count: Counter[str] = Counter()    # frames.<view>, errors.<view>, bytes_in, bytes_out
        self._encode_s = 0.0
        self._problem = ""
        self._pubs = {v: self.create_publisher(CompressedImage, model_view_topic(v), qos_profile_sensor_data)
                      for v in VIEWS}
        for v in VIEWS:
            self.create_subscription(Image, image_topic(v), lambda m, v=v: self._on_image(v, m), qos_profile_sensor_data)
            self.create_subscription(CameraInfo, camera_info_topic(v), lambda m, v=v: self._on_info(v, m),
                                     qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"sending the model's view of {' and '.join(VIEWS)} "
                               f"(256×256 JPEG q{self.settings.jpeg_quality}) on {model_view_topic('<view>')}")

    def _on_info(self, view: str, msg: CameraInfo) -> None:
        try:
            self._crops.update(view, msg)
        except ValueError as err:
            self._refuse(view, f"camera_info: {err}")

    def _on_image(self, view: str, msg: Image) -> None:
        crop = self._crops.get(view)
        if crop is None:  # the crop comes from the camera's intrinsics: none is sent without them
            self._count[f"no_camera_info.{view}"] += 1
            return
        start = time.perf_counter()
        try:
            data = encode_view(image_from_msg(msg), crop, self.settings.jpeg_quality)
        except ImageError as err:
            self._refuse(view, str(err))
            return
        self._pubs[view].publish(CompressedImage(header=msg.header, format=FORMAT, data=data))
        self._encode_s += time.perf_counter() - start
        self._count[f"frames.{view}"] += 1
        self._count["bytes_in"] += len(msg.data)
        self._count["bytes_out"] += len(data)
        if self._problem.startswith(f"{view}:"):
            self.get_logger().info(f"{view}: frames are sent again")
            self._problem = ""

    def _refuse(self, view: str, why: str) -> None:
        self._count[f"errors.{view}"] += 1
        problem = f"{view}: {why}"
        if problem != self._problem:
            self.get_logger().warning(f"frame not sent: {problem}")
            self._problem = problem

    def _publish_diagnostics(self) -> None:
        c = self._count
        frames = sum(c[f"frames.{v}"] for v in VIEWS)
        values = [KeyValue(key=k, value=str(c[k])) for k in (*(f"frames.{v}" for v in VIEWS),
                                                              *(f"errors.{v}" for v in VIEWS),
                                                              *(f"no_camera_info.{v}" for v in VIEWS), "bytes_in", "bytes_out")]
        values.append(KeyValue(key="bytes_ratio", value=f"{c['bytes_out'] / c['bytes_in']:.4f}" if c["bytes_in"] else "-"))
        values.append(KeyValue(key="encode_ms", value=f"{1e3 * self._encode_s / frames:.1f}" if frames else "-"))
        level = DiagnosticStatus.WARN if self._problem else DiagnosticStatus.OK
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[
            DiagnosticStatus(level=level, name="graspvla/model_view", message=self._problem or "ok", values=values)]))


def main(args: list[str] | None = None) -> int:
    return run(ModelViewNode, args)


if __name__ == "__main__":
    sys.exit(main())

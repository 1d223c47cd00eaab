"""calibration_node: the live overlay check. For each camera it publishes the policy's view of
the live image with the expected arm silhouette (arm at the calibration joint configuration,
camera at its training viewpoint) blended over it, and the alignment score; `calibration/save`
records the latest scores in calibration/<camera>.yaml and the overlays as PNG.

Move the arm to the calibration joint configuration first (calibration/README.md); the node
does not command the robot. Topics, service and parameters: docs/interfaces.md (## Camera
calibration).
"""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from graspvla_ros import preprocess
from graspvla_ros.calibration import overlay, store
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.interfaces import (CALIBRATION_SAVE, calibration_overlay_topic, calibration_score_topic,
                                     VIEWS, camera_info_topic, image_topic, stamp_ns)
from graspvla_ros.nodes.camera_node import image_msg, image_qos
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.params import declare
from graspvla_ros.settings import build, flatten, params, setting
from graspvla_ros.sim.robot_scene import RobotScene

CONFIG = 'calibration.yaml'


@dataclass(frozen=True)
class CalibrationNodeSettings:
    """`rate_hz` applies from the next image, `save_dir` to the next `calibration/save`."""

    cameras: tuple[str, ...] = setting(
        VIEWS, "cameras to check: subscribes <name>/color/image_raw and <name>/color/camera_info")
    rate_hz: float = setting(2.0, "overlays per camera per second, by image stamps (frames in between are skipped)",
                             live=True)
    qos: str = setting("sensor_data", "`sensor_data` or `reliable`, as the cameras publish")
    save_dir: str = setting("", "where calibration/save writes <camera>.yaml and <camera>_overlay.png; empty = the "
                                "package calibration/", live=True)

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        image_qos(self.qos)


PARAMS = params(CalibrationNodeSettings)


class CalibrationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("calibration", **kwargs)
        self.settings = build(CalibrationNodeSettings, declare(self, PARAMS, on_change=self._on_change))
        with RobotScene() as scene:  # rendered once: the expected view does not change
            self.expected = {c: overlay.expected_silhouette(scene, c) for c in self.settings.cameras}
        self._lock = threading.Lock()
        self._info: dict[str, CameraInfo] = {}
        self._last_stamp: dict[str, float] = {}
        self.latest: dict[str, tuple[dict, np.ndarray, Intrinsics]] = {}
        qos = image_qos(self.settings.qos)
        self._pubs = {}
        for cam in self.settings.cameras:
            self.create_subscription(CameraInfo, camera_info_topic(cam), self._on_info(cam), qos)
            self.create_subscription(Image, image_topic(cam), self._on_image(cam), qos)
            self._pubs[cam] = (self.create_publisher(Image, calibration_overlay_topic(cam), 2),
                               self.create_publisher(String, calibration_score_topic(cam), 2))
        self.create_service(Trigger, CALIBRATION_SAVE, self._on_save)

    def _on_change(self, changes: dict) -> None:
        """A live parameter set (`ros2 param set`); a bad value raises ValueError, changing nothing."""
        self.settings = build(CalibrationNodeSettings, {**flatten(self.settings), **changes})

    def _on_info(self, cam: str):
        def on_info(msg: CameraInfo) -> None:
            self._info[cam] = msg
        return on_info

    def _on_image(self, cam: str):
        def on_image(msg: Image) -> None:
            ns = stamp_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
            stamp = ns / 1e9
            info = self._info.get(cam)
            if info is None or stamp - self._last_stamp.get(cam, -np.inf) < 1.0 / self.settings.rate_hz:
                return
            self._last_stamp[cam] = stamp
            try:
                intrinsics = Intrinsics.from_camera_info(info)
                image = preprocess.image_from_msg(msg, (intrinsics.width, intrinsics.height))
                view = preprocess.client_view(image, intrinsics.crop())
            except (preprocess.ImageError, preprocess.FovError) as e:
                self.get_logger().warning(f"{cam}: {e}", throttle_duration_sec=5.0)
                self._pubs[cam][1].publish(String(data=json.dumps({"camera": cam, "error": str(e)})))
                return
            result = overlay.score(self.expected[cam], view)
            blend = overlay.overlay_image(view, self.expected[cam])
            report = {"camera": cam, "stamp": stamp, **result.to_dict()}
            with self._lock:
                self.latest[cam] = (report, blend, intrinsics)
            self._pubs[cam][0].publish(image_msg(np.ascontiguousarray(blend), "rgb8", msg.header.frame_id, ns))
            self._pubs[cam][1].publish(String(data=json.dumps(report)))
        return on_image

    def _on_save(self, _request, response):
        save_dir = self.settings.save_dir
        directory = Path(save_dir) if save_dir else store.CALIBRATION_DIR
        with self._lock:
            latest = dict(self.latest)
        if not latest:
            response.success, response.message = False, "no overlay yet: are the cameras publishing image and camera_info?"
            return response
        written = []
        for cam, (report, blend, intrinsics) in latest.items():
            try:
                cal = store.load_calibration(cam, directory)
            except FileNotFoundError:
                cal = store.CameraCalibration(cam, intrinsics)
            except ValueError as e:
                response.success, response.message = False, f"not overwriting {e}"
                return response
            cal.score = {**{k: v for k, v in report.items() if k not in ("camera", "stamp")},
                         "expected": "rendered", "date": store.utc_now()}
            written.append(str(store.write_calibration(cal, directory)))
            png = directory / f"{cam}_overlay.png"
            cv2.imwrite(str(png), blend[..., ::-1])
            written.append(str(png))
        response.success, response.message = True, "wrote " + ", ".join(written)
        return response


def main(args: list[str] | None = None) -> int:
    return run(CalibrationNode, args)


if __name__ == "__main__":
    sys.exit(main())

"""model_view_node (transport: model_view): the robot host sends the official client's view, and
the policy's input from it is byte-for-byte the single-host one; a frame it cannot encode is not
sent, with the reason on /diagnostics, and the next good one is."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from conftest import wait_for
from graspvla_ros.bringup import Bringup
from graspvla_ros.graph import model_view
from graspvla_ros.policy.observation import Frame
from graspvla_ros.preprocess import crop_from_camera_info, decode_view

pytestmark = pytest.mark.ros


def _frame(stamp_s: int, rgb: np.ndarray, encoding: str = "rgb8") -> tuple[Image, CameraInfo]:
    h, w = rgb.shape[:2]
    image = Image(height=h, width=w, encoding=encoding, step=w * 3, data=rgb.tobytes())
    info = CameraInfo(height=h, width=w, k=[500.0, 0.0, w / 2 - 9.5, 0.0, 500.0, h / 2 - 0.5, 0.0, 0.0, 1.0])
    for msg in (image, info):
        msg.header.stamp.sec, msg.header.frame_id = stamp_s, "front_color_optical_frame"
    return image, info


def test_the_model_view_is_the_policys_own_view_of_the_raw_frame_at_a_fiftieth_of_the_bytes(ros_node):
    views: list[CompressedImage] = []
    statuses: list[DiagnosticStatus] = []
    lock = threading.Lock()

    def keep(store, items):
        with lock:
            store.extend(items)

    ros_node.create_subscription(CompressedImage, "/front/model_view/compressed", lambda m: keep(views, [m]),
                                 qos_profile_sensor_data)
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: keep(
        statuses, [s for s in m.status if s.name == "graspvla/model_view"]), 10)
    image_pub = ros_node.create_publisher(Image, "/front/color/image_raw", qos_profile_sensor_data)
    info_pub = ros_node.create_publisher(CameraInfo, "/front/color/camera_info", qos_profile_sensor_data)
    # a smooth scene (JPEG's ratio on a camera image), off-centre principal point: a crop of its own
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([(x * 255 // 639), (y * 255 // 479), ((x + y) % 256)], axis=-1).astype(np.uint8)

    def send_until_received(stamp_s: int, encoding: str = "rgb8") -> CompressedImage | None:
        """Best effort both ways: the pair again every 0.2 s until a view of that stamp is back."""
        image, info = _frame(stamp_s, rgb, encoding)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info_pub.publish(info)
            image_pub.publish(image)
            time.sleep(0.2)
            with lock:
                found = [v for v in views if v.header.stamp.sec == stamp_s]
            if found:
                return found[0]
        return None

    with Bringup([model_view(jpeg_quality=75, diagnostics_period=0.2)]) as graph:
        view = send_until_received(100)
        assert view is not None and not graph.failed(), f"no model view came back ({graph.failed()})"
        _, info = _frame(100, rgb)
        crop = crop_from_camera_info(info)
        assert (crop.x0, crop.width) != (80, 480), "the test camera should need a crop of its own"
        local = Frame(100, rgb, crop).client_image(75)
        assert np.array_equal(decode_view(view.data), local), "the model view differs from the single-host view"
        assert view.format == "rgb8; jpeg compressed rgb8" and view.header.frame_id == "front_color_optical_frame"
        assert len(view.data) < 0.02 * rgb.nbytes, f"{len(view.data)} bytes for {rgb.nbytes} raw"

        # a frame in an encoding the pipeline refuses: not sent, the reason on /diagnostics
        image, _ = _frame(200, rgb, "mono16")
        for _ in range(5):
            image_pub.publish(image)
            time.sleep(0.2)
        warned = wait_for(lambda: [s for s in list(statuses) if s.level == DiagnosticStatus.WARN], 30,
                          "a WARN diagnostic for the refused frame")
        assert "front: encoding 'mono16' is not supported" in warned[-1].message, warned[-1].message
        with lock:
            assert not [v for v in views if v.header.stamp.sec == 200], "a refused frame was sent"
        assert send_until_received(300) is not None, "frames after a refused one are not sent"
        wait_for(lambda: statuses[-1].level == DiagnosticStatus.OK, 30, "the diagnostic to be OK again")
        values = {kv.key: kv.value for kv in statuses[-1].values}
        assert int(values["errors.front"]) >= 1 and float(values["bytes_ratio"]) < 0.02, values
        assert not graph.failed(), graph.failed()

"""A camera that does not stream yet is said once, then rarely with the time waited and why, and
"streaming" only once frames come: through the driver (real pyrealsense2: no device with that
serial here, a software device), and through camera_node as a process, whose read-only
parameters its parameter service refuses with the reason."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.camera import CameraDriver, RealSenseDevice, SoftwareCamera, StreamSettings


def _driver(source, lines: list, **kw) -> CameraDriver:
    def report(line: str) -> None:
        lines.append((time.monotonic(), line))
    return CameraDriver(source, StreamSettings(), lambda frames: None, report=report, **kw).start()


def test_a_camera_not_connected_is_said_once_then_every_report_period_with_the_time_waited():
    lines: list[tuple[float, str]] = []
    driver = _driver(RealSenseDevice("NOCAM1"), lines, report_period=0.5, backoff_initial=0.05, backoff_max=0.1)
    try:
        wait_for(lambda: len(lines) >= 3, 30, "three reports")
    finally:
        driver.stop()
    assert lines[0][1] == "waiting for RealSense NOCAM1 (640x480@30)"
    for _, line in lines[1:]:
        assert re.fullmatch(r"still waiting for RealSense NOCAM1 after \d+ s: no RealSense camera with serial "
                            r"'NOCAM1'; connected: none; retrying in [\d.]+ s", line), line
    stamps = [t for t, _ in lines]   # (taken in the callback: a few ms after the driver's own clock)
    assert all(b - a >= 0.45 for a, b in zip(stamps, stamps[1:])), "reported at each retry (every 0.1 s)"


def test_streaming_is_said_once_when_the_first_frame_arrives_and_a_lost_camera_once_again():
    lines: list[tuple[float, str]] = []
    camera = SoftwareCamera("SWWAIT")
    driver = _driver(camera, lines, stall_timeout=0.3)
    try:
        assert driver.reading.wait(20.0)
        frame = np.zeros((480, 640, 3), np.uint8)
        for i in range(200):
            camera.inject(frame, 1000.0 + i * 33.3)
            if driver.status().frames >= 10:
                break
            time.sleep(1 / 30)
        assert driver.status().frames >= 10
        camera.unplug()
        wait_for(lambda: len(lines) >= 3, 30, "the lost camera to be reported")
    finally:
        driver.stop()
    said = [line for _, line in lines]
    assert said[:2] == ["waiting for software camera SWWAIT (640x480@30)",
                        "streaming from software camera SWWAIT, 640x480@30"]
    assert re.fullmatch(r"software camera SWWAIT stopped streaming \(no frames from software camera SWWAIT for "
                        r"[\d.]+ s; reconnecting\); waiting for it", said[2]), said[2]
    assert len(said) == 3


@pytest.mark.ros
def test_camera_node_with_a_serial_not_connected_says_it_waits_and_refuses_a_read_only_parameter(ros_node, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from graspvla_ros.bringup import Bringup
    from graspvla_ros.graph import camera

    statuses = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: statuses.extend(s for s in m.status if s.hardware_id == "111"), 10)
    client = ros_node.create_client(SetParameters, "/front_camera/set_parameters")
    log = tmp_path / "nodes.log"
    with open(log, "w") as out, Bringup([camera("front", serial="111", diagnostics_period=0.2)], out=out) as graph:
        wait_for(lambda: "camera 'front': waiting for RealSense 111 (640x480@30)" in log.read_text() or graph.failed(),
                 60, "the camera node to say it waits")
        wait_for(lambda: statuses or graph.failed(), 60, "the camera's diagnostics")
        assert not graph.failed(), log.read_text()
        status = statuses[-1]
        assert status.level != DiagnosticStatus.OK and "no RealSense camera with serial '111'" in status.message
        assert {kv.key: kv.value for kv in status.values}["frames"] == "0"
        assert "streaming" not in log.read_text()

        request = SetParameters.Request(parameters=[Parameter("serial", value="222").to_parameter_msg()])
        result = None
        deadline = time.monotonic() + 60
        while result is None and time.monotonic() < deadline:   # a request sent before discovery is lost: again
            future = client.call_async(request)
            answered = threading.Event()
            future.add_done_callback(lambda _f: answered.set())
            if answered.wait(5.0):
                result = future.result().results[0]
            else:
                client.remove_pending_request(future)
        assert result is not None, "no answer from /front_camera/set_parameters"
        assert not result.successful and "read-only" in result.reason, result.reason

"""Camera core and camera_node through the real pyrealsense2 (software device, .db3 playback)
and real rclpy."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyrealsense2 as rs
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from graspvla_ros.camera.clock import ClockMapper
from graspvla_ros.camera.driver import CameraDriver
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.camera.source import DeviceNotFound, PlaybackFile, RealSenseDevice, SoftwareCamera, StreamSettings

FPS = 30


def _pattern(i: int, w: int = 640, h: int = 480) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = i % 256
    img[:, : w // 2, 1] = 200
    img[h // 2:, :, 2] = 100
    return img


def _feed(camera: SoftwareCamera, reading: threading.Event, n: int, start_ms: float, first: int = 0, **kw) -> int:
    """Inject n frames at the camera's rate once its reader started the stream (`reading`: a
    CameraDriver's); returns how many librealsense accepted (all unless the camera is unplugged)."""
    assert reading.wait(timeout=20.0), "the reader did not start the camera's stream"
    accepted = 0
    for i in range(first, first + n):
        depth = np.full((480, 640), 500 + i, np.uint16) if camera.settings.enable_depth else None
        accepted += camera.inject(_pattern(i), start_ms + i * 1000 / FPS, depth, **kw)
        time.sleep(1 / FPS)
    return accepted


# The tests feed their software cameras from a Python thread, which a loaded machine can hold
# up for over a second; the driver would then rightly call the camera stalled and reopen it,
# losing the frame injected meanwhile. Only the stall test uses a short stall_timeout.
FEEDER_STALL = 10.0


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ---------------------------------------------------------------- pure core

def test_clock_mapper_tracks_drift_instead_of_freezing_the_first_offset():
    """A camera crystal 200 ppm slow and 0–8 ms random transport latency over 10 minutes."""
    rng = np.random.default_rng(0)
    mapper = ClockMapper(window_s=2.0)
    ros0 = 1_700_000_000_000_000_000
    errors, frozen_errors = [], []
    first_offset = None
    for k in range(0, 18000, 3):  # every 3rd frame of 10 min at 30 fps
        true_ns = ros0 + k * 33_333_333  # exposure instant in ROS time
        camera_ms = 5000.0 + (true_ns - ros0) * (1 - 200e-6) / 1e6
        arrival = true_ns + int(rng.uniform(0.5e6, 8e6))
        stamp = mapper.to_ros_ns(camera_ms, rs.timestamp_domain.hardware_clock, arrival, arrival)
        errors.append(stamp - true_ns)
        if first_offset is None:
            first_offset = arrival - round(camera_ms * 1e6)
        frozen_errors.append(round(camera_ms * 1e6) + first_offset - true_ns)
    errors_ms = np.abs(errors[-100:]) / 1e6
    assert errors_ms.max() < 2.0  # the minimum-latency bias only
    assert abs(frozen_errors[-1]) / 1e6 > 100  # 200 ppm × 600 s = 120 ms for a frozen offset
    assert mapper.resets == 0


def test_clock_mapper_restarts_when_camera_time_goes_back_and_passes_global_time():
    mapper = ClockMapper()
    t = 10**18
    assert mapper.to_ros_ns(1000.0, rs.timestamp_domain.hardware_clock, t, t) == t
    # device reset: camera clock back to 0 → new offset instead of a stamp 1 s in the past
    assert mapper.to_ros_ns(0.0, rs.timestamp_domain.hardware_clock, t + 10**8, t + 10**8) == t + 10**8
    assert mapper.resets == 1
    # global time is host time already: only the ROS − system clock offset is added
    assert mapper.to_ros_ns(1.5e12, rs.timestamp_domain.global_time, 77, 70) == 1_500_000_000_000_000_007


def test_intrinsics_read_back_from_camera_info_and_the_calibration_file():
    """One Intrinsics for the driver, camera_info and calibration: what camera_node publishes reads
    back equal (distortion model included); calibration files keep their keys (model only when not
    plumb_bob)."""
    from graspvla_ros.nodes.camera_node import camera_info_msg

    fisheye = Intrinsics(848, 480, 420.0, 420.5, 424.1, 239.8, "equidistant", (0.1, -0.02, 0.003, 0.0))
    assert Intrinsics.from_camera_info(camera_info_msg(fisheye, "front")) == fisheye
    assert Intrinsics.from_dict(fisheye.to_dict()) == fisheye
    assert set(Intrinsics.from_fovy(640, 480, 43.0).to_dict()) == {"width", "height", "fx", "fy", "cx", "cy", "distortion"}


def test_serial_selection_lists_the_cameras_present():
    present = [SoftwareCamera("111111").device, SoftwareCamera("222222").device]
    with pytest.raises(DeviceNotFound, match=r"serial '333333'; connected: 111111 \(Software RealSense\), 222222"):
        RealSenseDevice("333333", devices=lambda: present).open()
    with pytest.raises(DeviceNotFound, match="set `serial` to one of: 111111"):
        RealSenseDevice("", devices=lambda: present).open()
    assert RealSenseDevice("222222", devices=lambda: present).open().get_info(
        rs.camera_info.serial_number) == "222222"
    with pytest.raises(DeviceNotFound, match="connected: none"):
        RealSenseDevice("333333").open()  # no USB camera on this machine


def test_depth_is_aligned_and_paired_with_color():
    settings = StreamSettings(enable_depth=True)
    camera = SoftwareCamera("DEPTH1", settings)
    got = []
    driver = CameraDriver(camera, settings, got.append, stall_timeout=FEEDER_STALL).start()
    try:
        _feed(camera, driver.reading, 15, start_ms=time.time() * 1000, domain=rs.timestamp_domain.global_time)
        assert _wait(lambda: len(got) >= 10)
    finally:
        driver.stop()
    for f in got:
        assert f.frames.depth is not None and f.frames.depth.shape == (480, 640)
        # each colour frame comes with the depth injected with it
        assert int(f.frames.depth[240, 320]) == 500 + int(f.frames.color[0, 0, 0])


def test_a_reader_held_up_for_a_moment_loses_no_frame():
    """A publish that stalls for 0.2 s (GIL contention, a slow subscriber) is caught up from
    librealsense's queue: with a 2-frame queue the frames behind it were dropped."""
    camera = SoftwareCamera("HICCUP")
    got = []

    def slow_sometimes(frames):
        if len(got) == 5:
            time.sleep(0.2)
        got.append(frames)

    driver = CameraDriver(camera, StreamSettings(), slow_sometimes, stall_timeout=FEEDER_STALL).start()
    try:
        assert _feed(camera, driver.reading, 30, start_ms=1000.0) == 30
        assert _wait(lambda: len(got) >= 30), f"{len(got)} frames: {[f.frames.frame_number for f in got]}; {driver.status()}"
    finally:
        driver.stop()
    assert [f.frames.frame_number for f in got] == list(range(1, 31))
    assert driver.status().dropped == 0


def test_playback_of_a_recording(tmp_path):
    path = tmp_path / "two_seconds.db3"
    settings = StreamSettings()
    camera = SoftwareCamera("REC001", settings)
    recorder = rs.recorder(str(path), camera.device)
    sensor = recorder.query_sensors()[0]
    sensor.open(sensor.get_stream_profiles()[0])
    queue = rs.frame_queue(100)
    sensor.start(queue)
    started = threading.Event()
    started.set()
    _feed(camera, started, 20, start_ms=1000.0)
    sensor.stop()
    sensor.close()
    del sensor, recorder, queue  # the file is finalised when the recorder is released
    got = []
    driver = CameraDriver(PlaybackFile(path, real_time=False), settings, got.append, stall_timeout=0.5).start()
    try:
        assert _wait(lambda: len(got) >= 20)
    finally:
        driver.stop()
    first = got[:20]
    assert [int(f.frames.color[0, 0, 0]) for f in first] == list(range(20))
    assert all(f.frames.color.shape == (480, 640, 3) for f in first)
    assert first[0].frames.intrinsics.fx == pytest.approx(615.0)


# ---------------------------------------------------------------- camera_node (rclpy)

@pytest.fixture
def ros():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    context = rclpy.Context()
    rclpy.init(context=context)
    # Single-threaded, as the nodes run: rclpy's MultiThreadedExecutor busy-spins and starves
    # the camera driver's thread of the GIL on a 2-core machine.
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    add.context = context
    thread.start()
    try:
        yield add
    finally:
        executor.shutdown()
        thread.join()
        for node in reversed(nodes):
            getattr(node, "close", lambda: None)()
            node.destroy_node()
        rclpy.shutdown(context=context)


class _Listener:
    """Records what arrives on one camera's topics and on /diagnostics."""

    def __init__(self, add, name: str = "front", qos: str = "sensor_data"):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image

        from graspvla_ros.nodes.camera_node import image_qos
        self.images, self.infos, self.diags = [], [], []
        self.node = add(Node(f"listener_{name}", context=add.context))
        self.node.create_subscription(Image, f"{name}/color/image_raw", self.images.append, image_qos(qos))
        self.node.create_subscription(CameraInfo, f"{name}/color/camera_info", self.infos.append, image_qos(qos))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diags.extend(m.status), 10)

    def last_diag(self):
        return self.diags[-1] if self.diags else None


def _camera_node(add, source, **params):
    from rclpy.parameter import Parameter

    from graspvla_ros.nodes.camera_node import CameraNode
    overrides = [Parameter(k, value=v) for k, v in
                 {"diagnostics_period": 0.1, "stall_timeout": FEEDER_STALL, **params}.items()]
    return add(CameraNode(source, context=add.context, parameter_overrides=overrides))


@pytest.mark.ros
def test_camera_node_publishes_injected_frames(ros):
    listener = _Listener(ros, "front", qos="reliable")
    camera = SoftwareCamera("NODE01")
    node = _camera_node(ros, camera, name="front", qos="reliable")
    # matched both ways: samples published before the writer knows the reader are not sent
    assert _wait(lambda: node.color_pub.get_subscription_count() == 1 and node.info_pub.get_subscription_count() == 1)
    assert _feed(camera, node.driver.reading, 30, start_ms=2000.0, exposure_ms=8.0) == 30
    assert _wait(lambda: len(listener.images) >= 30 and len(listener.infos) >= 30), \
        f"{len(listener.images)} images, {len(listener.infos)} infos of 30; driver {node.driver.status()}"
    assert len(listener.images) == 30 and node.driver.status().dropped == 0
    img = listener.images[-1]
    assert (img.width, img.height, img.encoding, img.step) == (640, 480, "rgb8", 1920)
    assert img.header.frame_id == "front_color_optical_frame"
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3)
    np.testing.assert_array_equal(pixels, _pattern(int(pixels[0, 0, 0])))
    info = listener.infos[-1]
    assert (info.width, info.height) == (640, 480)
    assert list(info.k) == pytest.approx([615.0, 0, 319.5, 0, 615.0, 239.5, 0, 0, 1])
    assert info.header.frame_id == img.header.frame_id
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in listener.images]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    gaps_ms = np.diff(stamps) / 1e6  # the camera's 33.3 ms spacing, not the arrival jitter
    assert np.median(gaps_ms) == pytest.approx(1000 / FPS, abs=0.5)
    ok = [d for d in listener.diags if d.level == DiagnosticStatus.OK]
    assert ok and ok[-1].hardware_id == "NODE01" and "streaming" in ok[-1].message


@pytest.mark.ros
def test_camera_node_latches_its_measured_extrinsics_on_tf_static(ros, tmp_path):
    """RViz's base → camera: the pose calibration measured, latched for late subscribers; a
    camera without a measured pose sends none."""
    from rclpy.node import Node
    from scipy.spatial.transform import Rotation
    from tf2_msgs.msg import TFMessage

    from graspvla_ros.calibration.store import CameraCalibration, write_calibration
    from graspvla_ros.nodes.tf import STATIC_QOS
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [-2.0, 0.1, 1.6]).as_matrix()
    pose[:3, 3] = (1.35, 0.02, 0.54)
    write_calibration(CameraCalibration("front", Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5), pose), tmp_path)
    write_calibration(CameraCalibration("side", Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)), tmp_path)
    _camera_node(ros, SoftwareCamera("TF0001"), name="front", calibration_dir=str(tmp_path))
    _camera_node(ros, SoftwareCamera("TF0002"), name="side", calibration_dir=str(tmp_path))
    got = []
    listener = ros(Node("tf_listener", context=ros.context))   # subscribes after both sent: latched
    listener.create_subscription(TFMessage, "/tf_static", lambda m: got.extend(m.transforms), STATIC_QOS)
    assert _wait(lambda: got), "no /tf_static from the front camera"
    time.sleep(0.5)   # the side camera's would have come with it
    assert [(t.header.frame_id, t.child_frame_id) for t in got] == [("base", "front_color_optical_frame")]
    t, q = got[0].transform.translation, got[0].transform.rotation
    assert (t.x, t.y, t.z) == pytest.approx((1.35, 0.02, 0.54))
    assert Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix() == pytest.approx(pose[:3, :3], abs=1e-6)  # as the file keeps it


@pytest.mark.ros
def test_camera_node_reports_a_stall_and_recovers(ros):
    listener = _Listener(ros, "side")
    camera = SoftwareCamera("STALL1")
    node = _camera_node(ros, camera, name="side", stall_timeout=0.3)
    assert _feed(camera, node.driver.reading, 10, start_ms=1000.0) == 10
    # "streaming" lasts only stall_timeout after the last frame: wait for its trace instead
    assert _wait(lambda: node.driver.status().frames == 10)
    # the camera stops delivering (firmware hang) and then disappears (unplugged)
    camera.unplug()
    assert _wait(lambda: any(d.level == DiagnosticStatus.ERROR and "no frames" in d.message for d in listener.diags))
    assert _wait(lambda: any(d.level == DiagnosticStatus.ERROR and "no RealSense camera with serial 'STALL1'" in d.message
                             for d in listener.diags))
    camera.replug()
    before = len(listener.images)
    done = threading.Event()

    def keep_feeding():
        k = 0
        while not done.is_set():
            _feed(camera, node.driver.reading, 5, 5000.0 + 200 * k, first=5 * k)
            k += 1

    feeder = threading.Thread(target=keep_feeding, daemon=True)
    feeder.start()
    try:
        assert _wait(lambda: node.driver.status().state == "streaming" and len(listener.images) > before + 5)
        assert _wait(lambda: listener.last_diag().level == DiagnosticStatus.OK)
    finally:
        done.set()
        feeder.join()
    status = listener.last_diag()
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["reconnects"]) >= 1 and "no" in values["last_error"]


@pytest.mark.ros
def test_camera_node_process_with_software_source_exits_cleanly():
    """The console-script path: `source:=software` plays a test pattern; SIGTERM exits 0."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from graspvla_ros.nodes.camera_node import image_qos
    proc = subprocess.Popen([sys.executable, "-m", "graspvla_ros.nodes.camera_node", "--ros-args",
                             "-p", "source:=software", "-p", "name:=side", "-r", "__node:=side_camera"],
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("pattern_listener", context=context)
    images = []
    node.create_subscription(Image, "side/color/image_raw", images.append, image_qos("sensor_data"))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 20
        while len(images) < 5 and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert len(images) >= 5, proc.stdout.read() if proc.poll() is not None else "no images"
        assert images[-1].encoding == "rgb8" and images[-1].width == 640
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert rc == 0, proc.stdout.read()


"""calibration_node on real rclpy: live images of the simulated arm at the calibration joints
→ overlay image + score topics; calibration/save writes the score."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from graspvla_ros.calibration import store
from graspvla_ros.calibration.geometry import transform
from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.sim.robot_scene import RobotScene

NOMINAL = load_nominal()


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def ros():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    context = rclpy.Context()
    rclpy.init(context=context)
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
            node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_live_overlay_scores_the_nominal_camera_above_a_turned_one_and_saves(ros, tmp_path):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from graspvla_ros.nodes.calibration_node import CalibrationNode
    from graspvla_ros.nodes.camera_node import camera_info_msg, image_msg

    cam = NOMINAL.camera("front")
    turned = transform(cam.rotation @ np.array([[1, 0, 0], [0, np.cos(0.05), -np.sin(0.05)],
                                                [0, np.sin(0.05), np.cos(0.05)]]), cam.position)  # 2.9° tilt
    with RobotScene() as scene:
        frames = {"nominal": scene.rgb(cam.pose), "turned": scene.rgb(turned)}
    ros(CalibrationNode(context=ros.context, parameter_overrides=[
        Parameter("cameras", value=["front"]), Parameter("qos", value="reliable"), Parameter("rate_hz", value=50.0),
        Parameter("save_dir", value=str(tmp_path))]))
    feeder = ros(Node("feeder", context=ros.context))
    image_pub = feeder.create_publisher(Image, "front/color/image_raw", 5)
    info_pub = feeder.create_publisher(CameraInfo, "front/color/camera_info", 5)
    scores, overlays = [], []
    feeder.create_subscription(String, "calibration/front/score", lambda m: scores.append(json.loads(m.data)), 10)
    feeder.create_subscription(Image, "calibration/front/overlay", overlays.append, 10)
    saver = feeder.create_client(Trigger, "calibration/save")
    assert _wait(lambda: image_pub.get_subscription_count() == 1 and saver.service_is_ready())
    assert not saver.call(Trigger.Request(), timeout_sec=30).success  # nothing scored yet

    info = camera_info_msg(cam.intrinsics, "front")  # what camera_node publishes
    results, stamp = {}, 0
    for name in ("turned", "nominal"):  # the nominal one last: its score is the one saved
        sent = set()
        while name not in results:
            assert len(sent) < 200, "no score"
            stamp += 1
            sent.add(float(stamp))
            info_pub.publish(info)
            image_pub.publish(image_msg(frames[name], "rgb8", "front_color_optical_frame", stamp * 10**9))
            _wait(lambda: any(s["stamp"] in sent for s in scores), 0.5)
            results.update({name: s for s in scores if s["stamp"] in sent})
    assert _wait(lambda: scores[-1]["stamp"] == stamp)  # the last frame sent is the last scored
    assert results["nominal"]["edge_score"] > 0.75
    assert results["turned"]["edge_score"] < results["nominal"]["edge_score"] - 0.05
    assert _wait(lambda: len(overlays) >= 2)
    assert (overlays[-1].width, overlays[-1].height, overlays[-1].encoding) == (512, 512, "rgb8")

    response = saver.call(Trigger.Request(), timeout_sec=30)
    assert response.success, response.message
    saved = store.load_calibration("front", tmp_path)
    assert saved.score["edge_score"] == results["nominal"]["edge_score"] and saved.pose is None
    assert (tmp_path / "front_overlay.png").exists()

    # live parameters through the node's parameter service (`ros2 param set`): save_dir for the
    # next save, rate_hz from the next image; a bad value and a read-only parameter are refused
    from rcl_interfaces.srv import SetParameters

    setter = feeder.create_client(SetParameters, "calibration/set_parameters")

    def set_param(name, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return setter.call(request, timeout_sec=30).results[0]

    refused = set_param("rate_hz", 0.0)
    assert not refused.successful and "rate_hz must be positive" in refused.reason
    refused = set_param("cameras", ["side"])
    assert not refused.successful and "read-only" in refused.reason
    assert set_param("save_dir", str(tmp_path / "again")).successful
    (tmp_path / "again").mkdir()
    assert saver.call(Trigger.Request(), timeout_sec=30).success
    assert (tmp_path / "again" / "front_overlay.png").exists()

    assert set_param("rate_hz", 0.25).successful   # one overlay per 4 s of image stamps
    last, scored = stamp, len(scores)
    while len(scores) == scored:
        assert stamp < last + 20, "no score at 0.25 Hz"
        stamp += 1
        image_pub.publish(image_msg(frames["nominal"], "rgb8", "front_color_optical_frame", stamp * 10**9))
        _wait(lambda: len(scores) > scored, 0.5)
    assert scores[scored]["stamp"] == last + 4, [s["stamp"] for s in scores[scored:]]

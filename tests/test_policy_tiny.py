"""The real GraspVLA code path in the closed loop: policy_node with a tiny random checkpoint
(generated at start) on torch and onnxruntime, through sim_world and controller_node. It will
not grasp; it must run ≥ 10 cycles with well-formed chunks and its debug topics."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from conftest import wait_for
from helpers import SIM_CAMERAS
from graspvla_ros.bringup import Bringup
from graspvla_ros.graph import configure, sim_graph
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.convert import pose_from_msg, stamp_to_ns
from graspvla_ros.policy.observation import PoseHistory

pytestmark = [pytest.mark.ros, pytest.mark.sim]
CYCLES = 10


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_tiny_graspvla_runs_ten_cycles_with_well_formed_chunks(runtime, new_loopback_host, ros_node):
    lock = threading.Lock()
    got = {"chunks": [], "timings": [], "grasp": [], "grasp_markers": [], "front": [], "side": [], "diagnostics": []}
    poses = PoseHistory(span_s=600.0)

    def keep(key):
        def store(m):
            with lock:
                got[key].append(m)
        return store

    def pose(m):
        with lock:
            poses.add(stamp_to_ns(m.header.stamp), pose_from_msg(m.pose))

    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", pose, 100)
    ros_node.create_subscription(MultiDOFJointTrajectory, "/graspvla/action_chunk", keep("chunks"), 50)
    ros_node.create_subscription(String, "/graspvla/debug/timings", keep("timings"), 50)
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", keep("diagnostics"), 50)
    ros_node.create_subscription(PoseStamped, "/graspvla/debug/grasp_pose", keep("grasp"), 50)
    ros_node.create_subscription(MarkerArray, "/graspvla/debug/grasp_markers", keep("grasp_markers"), 50)
    ros_node.create_subscription(Image, "/graspvla/debug/front/bbox_image", keep("front"), 5)
    ros_node.create_subscription(Image, "/graspvla/debug/side/bbox_image", keep("side"), 5)
    say = ros_node.create_publisher(String, "/graspvla/instruction", 10)
    host = new_loopback_host()
    specs = configure(sim_graph(), sim_world={"host": host, "seed": 3, **SIM_CAMERAS}, controller={"robot_ip": host},
                      policy={"backend": "graspvla", "tiny": True, "runtime": runtime})
    with Bringup(specs) as graph:
        wait_for(lambda: say.get_subscription_count() > 0 or graph.failed(), 300, "the policy (tiny checkpoint)")
        assert not graph.failed(), graph.failed()
        # the first instruction can be lost while discovery completes on the policy's side
        for _ in range(5):
            say.publish(String(data="pick up the banana"))
            try:
                wait_for(lambda: got["timings"] or graph.failed(), 30, "the first cycle")
                break
            except AssertionError:
                continue
        wait_for(lambda: len(got["chunks"]) >= CYCLES or graph.failed(), 300, f"{CYCLES} chunks")
        seen = len(got["diagnostics"])
        wait_for(lambda: len(got["diagnostics"]) > seen + 2 or graph.failed(), 60, "diagnostics after the cycles")
        assert not graph.failed(), graph.failed()
    with lock:
        chunks = [chunk_msg.decode(m) for m in got["chunks"]]
        stamps = [c.stamp_ns for c in chunks]
        assert stamps == sorted(set(stamps)), "one chunk per view pair, stamps increasing"
        for c in chunks:
            assert c.rows.shape == (8, 7) and np.isfinite(c.rows).all() and c.frame_id == "base"
            assert set(c.rows[:, 6]) <= {-1.0, 0.0, 1.0} and c.anchor_gripper in (-1.0, 1.0)
        anchored = [c for c in chunks if poses.oldest_ns is not None and c.stamp_ns >= poses.oldest_ns]
        assert len(anchored) >= 3  # the first cycles may answer views from before this test's first pose
        for c in anchored:
            assert c.anchor.translation_to(poses.at(c.stamp_ns)) < 1.5e-3
        timings = [json.loads(m.data) for m in got["timings"]]
        assert len(timings) >= CYCLES - 1
        t = timings[-1]
        assert 0 <= t["received_ms"] <= t["cycle_start_ms"] <= t["inference_start_ms"] <= t["inference_end_ms"] \
            <= t["published_ms"]
        # the node's own work (crop, resize, JPEG, chunk) takes time, on the wall and on its CPU clock
        assert t["model_ms"] > 0 and t["overhead_ms"] > 0 and t["overhead_cpu_ms"] > 0
        diag = {kv.key: kv.value for m in got["diagnostics"] for s in m.status if s.name == "graspvla/policy"
                for kv in s.values}
        assert int(diag["images.front"]) > 0 and int(diag["images.side"]) > 0, diag
        assert float(diag["inference_s"]) > 0
        for view in ("front", "side"):  # the callbacks during inference are some of all the callbacks
            assert int(diag[f"images_during_inference.{view}"]) <= int(diag[f"images.{view}"]), diag
        assert got["grasp"] and got["grasp"][-1].header.frame_id == "base"
        grasps = {(g.header.stamp.sec, g.header.stamp.nanosec): g.pose for g in got["grasp"]}
        drawn = [(m.header, m.pose) for a in got["grasp_markers"] for m in a.markers]
        assert drawn and all(h.frame_id == "base" for h, _ in drawn)
        for header, pose in drawn:   # the gripper is drawn at the grasp pose of the same cycle
            grasp = grasps.get((header.stamp.sec, header.stamp.nanosec))
            assert grasp is None or (pose.position, pose.orientation) == (grasp.position, grasp.orientation)
        for view in ("front", "side"):
            assert got[view] and (got[view][-1].width, got[view][-1].height) == (256, 256)

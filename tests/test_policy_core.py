"""The policy's pure core: observations as the official client builds them, view-pair sync,
instructions and episodes, the expert's GraspVLA-format answers."""
from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
from PIL import Image

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN, Pose
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.model.generate import split_actions, quantize_gripper
from graspvla_ros.policy import episode
from graspvla_ros.policy.backend import postprocess
from graspvla_ros.policy.observation import (Frame, GripperHistory, PoseHistory, Skip, client_image,
                                             observation_from, pick_pair, proprio_rows)
from graspvla_ros.preprocess import client_view, decode_view, encode_view, official_crop

MS = 1_000_000


def _moving_history(t0=10_000 * MS, n=400, period_ms=5):
    """A TCP moving +x at 0.1 m/s and yawing at 0.5 rad/s, sampled every 5 ms (the 200 Hz stream)."""
    h = PoseHistory(span_s=5.0)
    for i in range(n):
        t = i * period_ms / 1000
        h.add(t0 + i * period_ms * MS, Pose.from_xyz_rpy((0.4 + 0.1 * t, 0.0, 0.3), (-math.pi, 0.0, 0.5 * t)))
    return h, t0


def test_pose_history_interpolates_between_samples_and_refuses_outside():
    h, t0 = _moving_history()
    p = h.at(t0 + 1002 * MS + 500_000)   # between the samples at 1000 and 1005 ms
    assert p.position[0] == pytest.approx(0.4 + 0.1 * 1.0025, abs=1e-9)
    assert p.rpy[2] == pytest.approx(0.5 * 1.0025, abs=1e-6)
    newest = t0 + 399 * 5 * MS
    assert h.at(newest + 20 * MS).position[0] == pytest.approx(h.newest[1].position[0])
    with pytest.raises(Skip, match="no_pose"):
        h.at(newest + 200 * MS)
    with pytest.raises(Skip, match="no_pose"):
        h.at(t0 - 1)


def _frame(stamp_ns, value=100):
    return Frame(stamp_ns, np.full((480, 640, 3), value, np.uint8))


def build_observation(front, side, poses, gripper, instruction, target, episode_start_ns, jpeg_quality=75):
    """The observation of a synchronised pair, as PolicyLoop.cycle builds it."""
    rows, anchor = proprio_rows(front.stamp_ns, poses, gripper, episode_start_ns)
    return observation_from(front, side, rows, anchor, instruction, target, jpeg_quality)


def test_proprio_rows_are_the_pose_at_the_stamp_and_0_3_s_before_with_the_commanded_gripper():
    h, t0 = _moving_history()
    g = GripperHistory()
    g.add(t0 + 1500 * MS, GRIPPER_CLOSE)
    stamp = t0 + 1600 * MS + 1_234_567
    obs = build_observation(_frame(stamp), _frame(stamp), h, g, "pick up red cube", "red cube",
                            episode_start_ns=t0, jpeg_quality=75)
    t = (stamp - t0) / 1e9
    assert obs.stamp_ns == stamp and obs.proprio.shape == (4, 7)
    cur, prev = obs.proprio[-1], obs.proprio[0]
    assert cur[:3] == pytest.approx([0.4 + 0.1 * t, 0.0, 0.3], abs=1e-9)
    assert prev[:3] == pytest.approx([0.4 + 0.1 * (t - 0.3), 0.0, 0.3], abs=1e-9)
    assert cur[5] == pytest.approx(0.5 * t, abs=1e-6) and prev[5] == pytest.approx(0.5 * (t - 0.3), abs=1e-6)
    assert abs(cur[3]) == pytest.approx(math.pi, abs=1e-6), "roll stays ±π, never unwrapped"
    assert cur[6] == GRIPPER_CLOSE and prev[6] == GRIPPER_OPEN, "gripper = commanded state at each time"
    assert np.array_equal(obs.proprio[0], obs.proprio[1]) and np.array_equal(obs.proprio[1], obs.proprio[2])
    assert obs.anchor.position == pytest.approx(cur[:3]) and obs.gripper == GRIPPER_CLOSE
    assert obs.front.shape == (256, 256, 3) and obs.front.dtype == np.uint8


def test_all_proprio_rows_are_equal_at_episode_start():
    h, t0 = _moving_history()
    stamp = t0 + 1000 * MS
    obs = build_observation(_frame(stamp), _frame(stamp), h, GripperHistory(), "pick up x", "x",
                            episode_start_ns=stamp - 100 * MS)
    assert all(np.array_equal(row, obs.proprio[-1]) for row in obs.proprio)


def _pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_client_image_is_the_official_crop_resize_and_jpeg_75():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    view = client_view(rgb)
    assert np.array_equal(client_image(rgb, None, 0), view)
    jpeg = client_image(rgb, None, 75)
    assert np.array_equal(jpeg, _pil_jpeg(view, 75)) and not np.array_equal(jpeg, view)
    assert np.abs(jpeg.astype(int) - view).mean() < np.abs(_pil_jpeg(view, 10).astype(int) - view).mean()


def test_a_model_view_from_the_robot_host_is_the_image_the_single_host_path_makes():
    """transport: model_view: the robot host encodes, the policy decodes; the model gets the same
    bytes as when the policy crops, resizes and JPEGs the raw frame itself."""
    rgb = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    crop = official_crop(640, 480)
    wire = encode_view(rgb, crop, 75)
    assert len(wire) < 0.05 * rgb.nbytes
    remote = Frame(7, decode_view(wire), viewed=True)
    local = Frame(7, rgb, crop)
    assert np.array_equal(remote.client_image(75), local.client_image(75))


def test_view_pairs_must_be_close_in_time_and_fresh():
    now = 5_000 * MS
    fronts = [_frame(now - 300 * MS), _frame(now - 100 * MS)]
    sides = [_frame(now - 290 * MS), _frame(now - 20 * MS)]
    f, s = pick_pair(fronts, sides, now, max_skew_s=0.05, max_age_s=0.5)
    assert (f.stamp_ns, s.stamp_ns) == (now - 300 * MS, now - 290 * MS)
    with pytest.raises(Skip) as e:
        pick_pair(fronts, sides, now, max_skew_s=0.05, max_age_s=0.2)
    assert e.value.reason == "stale"
    with pytest.raises(Skip) as e:
        pick_pair(fronts[1:], sides[1:], now, max_skew_s=0.05, max_age_s=1.0)
    assert e.value.reason == "views_apart" and "80 ms apart" in e.value.detail
    with pytest.raises(Skip) as e:
        pick_pair([], sides, now, 0.05, 1.0)
    assert e.value.reason == "no_images"


@pytest.mark.parametrize("text, expected", [
    ("pick up the red cube", episode.Pick("red cube")),
    ("Pick up  a Green Ball.", episode.Pick("green ball")),
    ("red cube", episode.Pick("red cube")),
    ("banana", episode.Pick("banana")),
    ("stop", episode.Stop()), (" STOP! ", episode.Stop()), ("home", episode.Home()),
])
def test_instructions(text, expected):
    assert episode.parse(text) == expected


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   ", "empty"), ("pick up the", "empty"),
                                          ("red\x00cube", "non_printable"), ("pick up\nred", "non_printable"),
                                          ("x" * 257, "too_long")])
def test_bad_instructions_are_refused_with_a_reason(text, reason):
    refused = episode.parse(text)
    assert isinstance(refused, episode.Refused) and refused.reason == reason and refused.detail


def test_the_task_is_the_official_prompts_pick_up():
    assert episode.parse("the red cube").task == "pick up red cube"


def test_episode_succeeds_after_closing_and_lifting_10_cm_and_times_out_otherwise():
    e = episode.Episode(1, "red cube", "pick up red cube", start_ns=0, timeout_s=30)
    assert not e.update(1 * 10**9, 0.30, GRIPPER_OPEN)
    assert not e.update(2 * 10**9, 0.02, GRIPPER_CLOSE)
    assert not e.update(3 * 10**9, 0.11, GRIPPER_CLOSE) and e.running
    assert e.update(4 * 10**9, 0.125, GRIPPER_CLOSE) and e.phase == "succeeded"
    assert not e.end("stopped", "late") and e.phase == "succeeded"
    empty = episode.Episode(3, "red cube", "pick up red cube", start_ns=0, timeout_s=30)
    assert not empty.update(1 * 10**9, 0.02, GRIPPER_CLOSE, width=0.0004)
    assert empty.update(2 * 10**9, 0.15, GRIPPER_CLOSE, width=0.0004) and empty.running, "said once, goes on"
    assert "closed on nothing (width 0.4 mm)" in empty.reason
    assert not empty.update(3 * 10**9, 0.16, GRIPPER_CLOSE, width=0.0004)
    assert not empty.update(4 * 10**9, 0.16, GRIPPER_OPEN) and not empty.update(5 * 10**9, 0.02, GRIPPER_CLOSE, 0.04)
    assert empty.update(6 * 10**9, 0.15, GRIPPER_CLOSE, width=0.04) and empty.phase == "succeeded"

    t = episode.Episode(2, "red cube", "pick up red cube", start_ns=0, timeout_s=5)
    assert t.update(6 * 10**9, 0.3, GRIPPER_OPEN) and t.phase == "timeout"
    assert t.status()["phase"] == "timeout" and t.status()["episode"] == 2


def test_postprocess_is_the_models_gripper_thresholds_and_split():
    raw = np.array([[0.02, 0, -0.01, 0, 0, 0.1, 0.9], [0, 0, 0, 0, 0, 0, 0.5],
                    [0, 0.01, 0, 0.05, 0, 0, 0.1], [0, 0, 0, 0, 0, 0, 0.39]])
    out = postprocess(raw)
    assert out.shape == (8, 7) and np.array_equal(out, split_actions(quantize_gripper(raw)))
    assert list(out[:, 6]) == [0, 1, 0, 0, 0, -1, 0, -1]
    assert out[0, :3] == pytest.approx([0.01, 0, -0.005])


# --- the expert's answers, against the world's geometry -----------------------------------

def _expert(objects):
    from graspvla_ros.policy.expert import ExpertBackend

    return ExpertBackend(lambda: objects)


def _obs(anchor: Pose, gripper=GRIPPER_OPEN, stamp_ns=10**9, target="purple bar"):
    from graspvla_ros.policy.observation import Observation

    blank = np.zeros((256, 256, 3), np.uint8)
    return Observation(stamp_ns, f"pick up {target}", target, blank, blank, np.zeros((4, 7)), anchor, gripper)


def test_expert_answers_in_graspvla_format_and_approaches_from_above():
    yaw = 0.3
    bar = (np.array([0.55, 0.1, 0.02]), np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]))
    expert = _expert({"purple bar": bar})
    home = Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY)
    out = expert.infer(_obs(home))
    assert out.waypoints.shape == (8, 7) and out.bbox.shape == (2, 4)
    assert set(out.waypoints[:, 6]) <= {0.0, 1.0}
    assert np.linalg.norm(out.waypoints[:, :3], axis=1).max() <= 0.0101
    # the grasp closes the fingers (hand y) across the bar's narrow side (its body x)
    grasp = Pose.from_xyz_rpy(out.grasp_xyz, out.grasp_rpy)
    body_x = np.array([math.cos(yaw), math.sin(yaw), 0])
    assert abs(grasp.rotation[:, 1] @ body_x) == pytest.approx(1.0, abs=1e-6)
    assert grasp.rotation[:, 2] @ (0, 0, -1) == pytest.approx(1.0, abs=1e-6), "TCP z points down"
    assert out.grasp_xyz == pytest.approx([0.55, 0.1, 0.02]), "at the centre: the finger pads centred on it"
    # the bbox holds the bar's projection in both 224 px views
    from graspvla_ros.sim.scene import CAMERAS
    for (x1, y1, x2, y2), cam in zip(out.bbox, CAMERAS):
        u, v = cam.project(bar[0], 640, 480)
        assert x1 < (u - 80) * 224 / 480 < x2 and y1 < v * 224 / 480 < y2 and 0 <= x1 < x2 <= 224


def test_expert_closes_at_the_grasp_pose_waits_for_the_fingers_then_lifts():
    cube = (np.array([0.5, 0.0, 0.02]), np.array([1.0, 0, 0, 0]))
    expert = _expert({"red cube": cube})
    probe = expert.infer(_obs(Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY), target="red cube"))
    at_grasp = Pose.from_xyz_rpy(probe.grasp_xyz, probe.grasp_rpy)
    expert.infer(_obs(Pose(at_grasp.position + (0, 0, 0.05), at_grasp.rotation), target="red cube"))  # aligned
    closing = expert.infer(_obs(at_grasp, target="red cube"))
    assert GRIPPER_CLOSE in closing.waypoints[:, 6] and np.abs(closing.waypoints[:, :6]).max() < 1e-9
    held = expert.infer(_obs(at_grasp, GRIPPER_CLOSE, stamp_ns=2 * 10**9, target="red cube"))
    assert np.abs(held.waypoints[:, :3]).max() < 1e-9, "still while the fingers close"
    lifting = expert.infer(_obs(at_grasp, GRIPPER_CLOSE, stamp_ns=4 * 10**9, target="red cube"))
    assert lifting.waypoints[:, 2].sum() == pytest.approx(0.08) and (lifting.waypoints[:, :2] == 0).all()


def test_expert_skips_unknown_objects():
    with pytest.raises(Skip) as e:
        _expert({"red cube": (np.zeros(3), np.array([1.0, 0, 0, 0]))}).infer(
            _obs(Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY), target="violet teapot"))
    assert e.value.reason == "unknown_object"


def test_expert_opens_a_gripper_closed_elsewhere_before_approaching():
    cube = (np.array([0.5, 0.0, 0.02]), np.array([1.0, 0, 0, 0]))
    out = _expert({"red cube": cube}).infer(_obs(Pose.from_xyz_rpy((0.4, 0.2, 0.2), HOME_RPY), GRIPPER_CLOSE,
                                                 target="red cube"))
    assert GRIPPER_OPEN in out.waypoints[:, 6] and np.abs(out.waypoints[:, :3]).max() < 1e-9


def test_expert_takes_a_round_object_across_the_line_clear_of_its_neighbours():
    ball = (np.array([0.5, 0.0, 0.025]), np.array([1.0, 0, 0, 0]))
    # a tall neighbour 6.5 cm away along the home hand's closing line (y = (sin ψ, −cos ψ) at ψ = π/4)
    home_y = np.array([math.sin(HOME_RPY[2]), -math.cos(HOME_RPY[2])])
    cylinder = (np.array([*(ball[0][:2] + 0.065 * home_y), 0.035]), np.array([1.0, 0, 0, 0]))
    expert = _expert({"green ball": ball, "blue cylinder": cylinder})
    out = expert.infer(_obs(Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY), target="green ball"))
    closing = Pose.from_xyz_rpy(out.grasp_xyz, out.grasp_rpy).rotation[:2, 1]
    assert abs(float(closing @ home_y)) <= math.cos(math.radians(60)) + 1e-9, "the fingers must not open toward the cylinder"
    assert out.grasp_xyz[2] == pytest.approx(0.025), "pads centred on the ball: lower, it pops up out of them"
    again = expert.infer(_obs(Pose.from_xyz_rpy((0.5, 0.0, 0.15), (np.pi, 0.0, 0.3)), target="green ball"))
    assert np.allclose(again.grasp_rpy, out.grasp_rpy), "the line chosen is kept"


def test_expert_opens_and_tries_again_when_the_lift_leaves_the_object_behind():
    cube = (np.array([0.5, 0.0, 0.02]), np.array([1.0, 0, 0, 0]))
    expert = _expert({"red cube": cube})
    probe = expert.infer(_obs(Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY), target="red cube"))
    at_grasp = Pose.from_xyz_rpy(probe.grasp_xyz, probe.grasp_rpy)
    expert.infer(_obs(Pose(at_grasp.position + (0, 0, 0.05), at_grasp.rotation), target="red cube"))
    expert.infer(_obs(at_grasp, target="red cube"))
    expert.infer(_obs(at_grasp, GRIPPER_CLOSE, stamp_ns=2 * 10**9, target="red cube"))
    up = Pose(at_grasp.position + (0, 0, 0.05), at_grasp.rotation)  # lifted 5 cm, the cube still on the table
    missed = expert.infer(_obs(up, GRIPPER_CLOSE, stamp_ns=4 * 10**9, target="red cube"))
    assert GRIPPER_OPEN in missed.waypoints[:, 6] and np.abs(missed.waypoints[:, :3]).max() < 1e-9
    reopened = expert.infer(_obs(up, GRIPPER_OPEN, stamp_ns=5 * 10**9, target="red cube"))
    assert GRIPPER_CLOSE not in reopened.waypoints[:, 6] and reopened.waypoints[:, 2].sum() < 0, \
        "open, it goes down for the cube again"


def test_expert_answers_no_sooner_than_its_latency():
    from graspvla_ros.policy.expert import ExpertBackend

    cube = {"red cube": (np.array([0.5, 0.0, 0.02]), np.array([1.0, 0, 0, 0]))}
    expert = ExpertBackend(lambda: cube, latency=0.05)
    start = time.perf_counter()
    out = expert.infer(_obs(Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY), target="red cube"))
    assert time.perf_counter() - start >= 0.05 and out.timings["model"] >= 0.05

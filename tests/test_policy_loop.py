"""The policy's cycle without ROS (graspvla_ros.policy.loop), with the real expert backend on a
ground truth of one cube: each reason a cycle is skipped, a chunk built from exactly its inputs,
the episode rules, live settings, the worker, and the module boundaries around it."""
from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN, Pose
from graspvla_ros.policy.episode import Pick, Stop
from graspvla_ros.policy.expert import ExpertBackend
from graspvla_ros.policy.loop import BUSY_STATES, Cycle, PolicyLoop, Skip
from graspvla_ros.policy.observation import Frame, PoseHistory, proprio_row
from graspvla_ros.policy.settings import PolicySettings
from graspvla_ros.settings import build

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000
T0 = 1_000_000 * MS          # the episode starts here (node clock, ns)
HOME_RPY = (-math.pi, 0.0, math.pi / 4)
CUBE = {"red cube": (np.array([0.5, 0.0, 0.02]), np.array([1.0, 0.0, 0.0, 0.0]))}
RGB = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)


def _moving(t_ns: int) -> Pose:
    """The TCP moving +x at 0.1 m/s and yawing at 0.5 rad/s from T0."""
    t = (t_ns - T0) / 1e9
    return Pose.from_xyz_rpy((0.4 + 0.1 * t, 0.0, 0.3), (-math.pi, 0.0, math.pi / 4 + 0.5 * t))


def _poses(loop: PolicyLoop, start_ns: int, end_ns: int, pose=_moving) -> None:
    """The controller's 200 Hz pose stream over [start, end]."""
    for t in range(start_ns, end_ns + 1, 5 * MS):
        loop.add_pose(t, pose(t) if callable(pose) else pose)


def _views(loop: PolicyLoop, front_ns: int, side_ns: int | None = None) -> None:
    loop.add_frame("front", Frame(front_ns, RGB, None, front_ns + 20 * MS))
    loop.add_frame("side", Frame(front_ns if side_ns is None else side_ns, RGB, None, front_ns + 25 * MS))


def _loop(truth=lambda: CUBE, published=None, **settings) -> PolicyLoop:
    return PolicyLoop(ExpertBackend(truth), PolicySettings(**{"backend": "expert", **settings}), clock=lambda: T0,
                      publish=None if published is None else published.append)


def _skip(loop: PolicyLoop, now_ns: int) -> Skip:
    with pytest.raises(Skip) as e:
        loop.cycle(now_ns)
    return e.value


def test_each_reason_a_cycle_is_skipped():
    loop = _loop()
    assert _skip(loop, T0).reason == "no_episode"
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    stamp = T0 + 1000 * MS
    skip = _skip(loop, stamp)
    assert skip.reason == "no_images" and skip.detail == "no front or side image yet"
    loop.add_frame("front", Frame(stamp, RGB))
    assert _skip(loop, stamp).detail == "no side image yet"
    loop.add_frame("side", Frame(stamp - 80 * MS, RGB))
    skip = _skip(loop, stamp)
    assert skip.reason == "views_apart" and "80 ms apart" in skip.detail
    loop.add_frame("side", Frame(stamp + 10 * MS, RGB))
    skip = _skip(loop, stamp + 1000 * MS)
    assert skip.reason == "stale" and "(max 300 ms)" in skip.detail
    assert _skip(loop, stamp + 20 * MS).reason == "no_pose"
    _poses(loop, T0, stamp + 20 * MS)
    for state in ("GRIPPER", "HOMING", "ESTOPPED", "FAULT"):   # as the controller publishes them
        loop.set_controller_state(state)
        skip = _skip(loop, stamp + 20 * MS)
        assert skip.reason == "controller_busy" and skip.detail == f"controller is {state}"
    loop.set_controller_state("RUNNING")
    assert isinstance(loop.cycle(stamp + 20 * MS), Cycle)
    skip = _skip(loop, stamp + 100 * MS)
    assert skip.reason == "no_new_images", "the same views twice: the model would see a moment again"
    assert _skip(loop, stamp + 2100 * MS).reason == "cameras_stalled"
    with pytest.raises(ValueError, match="unknown view 'top'"):
        loop.add_frame("top", Frame(stamp, RGB))


def test_views_newer_than_the_newest_pose_wait_for_the_pose_at_their_exposure():
    """The anchor is interpolated between the samples around the exposure: taking the newest
    sample instead put it up to 50 ms of motion off (2 mm at the arm's speed in CI)."""
    loop = _loop()
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    front = T0 + 1000 * MS + 2_500_000
    _poses(loop, T0 - 200 * MS, front - 2_500_000)
    _views(loop, front)
    skip = _skip(loop, front + 30 * MS)
    assert skip.reason == "pose_pending", "the pose that covers the views is due in a few ms"
    loop.add_pose(front + 2_500_000, _moving(front + 2_500_000))
    anchor = loop.cycle(front + 35 * MS).chunk.anchor
    assert anchor.translation_to(_moving(front)) < 1e-9 and anchor.rotation_to(_moving(front)) < 1e-6


def test_a_pose_stream_that_stays_behind_the_views_gives_its_newest_pose_after_50_ms():
    loop = _loop()
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    front = T0 + 1000 * MS
    _poses(loop, T0 - 200 * MS, front - 5 * MS)
    _views(loop, front)
    assert _skip(loop, front + 49 * MS).reason == "pose_pending"
    anchor = loop.cycle(front + 50 * MS).chunk.anchor
    assert anchor.translation_to(_moving(front - 5 * MS)) < 1e-9


def test_a_chunk_is_stamped_and_anchored_at_the_front_views_exposure_with_its_proprio():
    published = []
    loop = _loop(published=published)
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    front, side = T0 + 1000 * MS + 2_500_000, T0 + 1010 * MS   # between two pose samples
    _poses(loop, T0 - 200 * MS, front + 40 * MS)
    loop.add_gripper(T0 + 900 * MS, GRIPPER_CLOSE)   # the controller's commanded state since then
    _views(loop, front, side)
    cycle = loop.cycle(front + 60 * MS)

    truth = PoseHistory()
    for t in range(T0 - 200 * MS, front + 40 * MS + 1, 5 * MS):
        truth.add(t, _moving(t))
    chunk, obs = cycle.chunk, cycle.observation
    assert published == [chunk] and chunk.stamp_ns == obs.stamp_ns == front
    assert chunk.anchor.translation_to(_moving(front)) < 1e-9 and chunk.anchor.rotation_to(_moving(front)) < 1e-6
    assert chunk.anchor_gripper == GRIPPER_CLOSE and chunk.frame_id == "base" and chunk.dt == pytest.approx(0.1)
    assert np.allclose(obs.proprio[-1], proprio_row(truth.at(front), GRIPPER_CLOSE))
    assert np.allclose(obs.proprio[0], proprio_row(truth.at(front - 300 * MS), GRIPPER_OPEN)), "0.3 s before: open"
    assert np.array_equal(chunk.rows, cycle.output.waypoints)
    assert (obs.instruction, obs.target, obs.episode) == ("pick up red cube", "red cube", 1)
    assert obs.front.shape == obs.side.shape == (256, 256, 3)
    report = cycle.report()
    assert (report["stamp_ns"], report["side_stamp_ns"], report["episode_start_ns"]) == (front, side, T0)
    assert report["newest_pose_ns"] == T0 - 200 * MS + ((front + 40 * MS - (T0 - 200 * MS)) // (5 * MS)) * 5 * MS
    assert report["gripper"] == [GRIPPER_OPEN, GRIPPER_CLOSE]
    assert report["cycle_start_ms"] == 60.0 and report["received_ms"] == 25.0
    assert report["seed"] is None and report["tokens"] == [] and report["model_ms"] >= 0
    assert loop.status()["cycles"] == 1


@pytest.mark.parametrize("command, phase", [(Stop(), "stopped"), (Pick("red cube"), "replaced")])
def test_a_chunk_computed_while_its_episode_ended_is_dropped(command, phase):
    published, loop = [], None

    def truth_while_an_instruction_arrives():   # runs inside the backend, outside the loop's lock
        loop.instruct(command, "an instruction", T0 + 1100 * MS)
        return CUBE

    loop = _loop(truth_while_an_instruction_arrives, published)
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    stamp = T0 + 1000 * MS
    _poses(loop, T0, stamp)
    _views(loop, stamp)
    ended = _skip(loop, stamp + 20 * MS)
    assert ended.reason == "episode_ended" and "episode 1 ended while the backend ran" in ended.detail
    assert published == []
    status = loop.status()
    assert (status["episode"], status["phase"], status["cycles"]) == \
        ((2, "running", 0) if isinstance(command, Pick) else (1, phase, 0))


def test_a_lost_link_ends_the_running_episode_once_and_drops_the_chunk_under_way():
    published, loop, ended = [], None, []

    def truth_while_the_link_goes():
        ended.append(loop.end_episode("link_lost", "no TCP pose"))
        return CUBE

    loop = _loop(truth_while_the_link_goes, published)
    assert loop.end_episode("link_lost", "no TCP pose") is None, "no episode to end yet"
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    stamp = T0 + 1000 * MS
    _poses(loop, T0, stamp)
    _views(loop, stamp)
    assert _skip(loop, stamp + 20 * MS).reason == "episode_ended" and published == []
    assert ended[0] is not None and ended[0].id == 1
    assert loop.end_episode("link_lost", "again") is None, "ended once"
    status = loop.status()
    assert (status["phase"], status["reason"]) == ("link_lost", "no TCP pose")


def _grasp_poses() -> list[Pose]:
    """TCP poses that take the expert to its close: above the cube, aligned 5 cm above the
    grasp, at the grasp (as tests/test_policy_core.py walks it)."""
    probe = ExpertBackend(lambda: CUBE).infer(_obs_at(Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY)))
    grasp = Pose.from_xyz_rpy(probe.grasp_xyz, probe.grasp_rpy)
    return [Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY), Pose(grasp.position + (0, 0, 0.05), grasp.rotation), grasp]


def _obs_at(anchor: Pose):
    from graspvla_ros.policy.observation import Observation

    blank = np.zeros((256, 256, 3), np.uint8)
    return Observation(T0, "pick up red cube", "red cube", blank, blank, np.zeros((4, 7)), anchor, GRIPPER_OPEN)


@pytest.mark.parametrize("controller_reports", [False, True])
def test_the_proprio_gripper_is_the_loops_own_close_until_the_controller_reports(controller_reports):
    loop = _loop()
    if controller_reports:
        loop.add_gripper(T0, GRIPPER_OPEN)
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    t = T0
    for pose in _grasp_poses():
        t += 1000 * MS
        _poses(loop, t - 400 * MS, t, pose)
        _views(loop, t)
        cycle = loop.cycle(t + 20 * MS)
    closes = [w.stamp_ns for w in cycle.chunk.targets if w.gripper == GRIPPER_CLOSE]
    assert closes, "the expert closes at the grasp pose"
    t = closes[-1] + 500 * MS
    _poses(loop, t - 400 * MS, t, cycle.chunk.anchor)
    _views(loop, t)
    after = loop.cycle(t + 20 * MS)
    assert after.observation.gripper == (GRIPPER_OPEN if controller_reports else GRIPPER_CLOSE)


def test_live_settings_apply_while_running_and_others_are_refused():
    loop = _loop()
    loop.instruct(Pick("red cube"), "pick up the red cube", T0)
    stamp = T0 + 1000 * MS
    _poses(loop, T0, stamp)
    _views(loop, stamp)
    assert _skip(loop, stamp + 500 * MS).reason == "stale"
    assert loop.update(max_image_age=1.0).max_image_age == 1.0
    assert isinstance(loop.cycle(stamp + 500 * MS), Cycle)
    with pytest.raises(ValueError, match="rate_hz must be > 0, got 0"):
        loop.update(rate_hz=0.0)
    with pytest.raises(ValueError, match="backend cannot change while the policy runs"):
        loop.update(backend="graspvla")
    assert loop.settings.rate_hz == 5.0 and loop.settings.backend == "expert"
    assert loop.check_episode(T0 + 2000 * MS) is None
    loop.update(episode_timeout=1.5)   # the running episode too
    ended = loop.check_episode(T0 + 2000 * MS)
    assert ended is not None and ended.phase == "timeout" and "1.5 s" in ended.reason


def test_settings_refuse_bad_values_with_the_reason():
    with pytest.raises(ValueError, match="backend must be one of graspvla, expert, got 'gpt'"):
        build(PolicySettings, {"backend": "gpt"})
    with pytest.raises(ValueError, match="jpeg_quality must be 0"):
        build(PolicySettings, {"jpeg_quality": 101})
    assert build(PolicySettings, {"rate_hz": 2.0, "use_sim_time": True}).rate_hz == 2.0


def test_the_worker_cycles_once_per_new_view_pair_and_stops():
    cycles, skips = [], []
    loop = PolicyLoop(ExpertBackend(lambda: CUBE), PolicySettings(backend="expert", max_image_age=30.0, rate_hz=50.0),
                      clock=time.monotonic_ns)
    worker = threading.Thread(target=loop.run, args=(cycles.append, skips.append), daemon=True)
    worker.start()
    now = time.monotonic_ns()
    _poses(loop, now - 1000 * MS, now + 1000 * MS, Pose.from_xyz_rpy((0.5, 0.0, 0.2), HOME_RPY))
    _views(loop, now)
    loop.instruct(Pick("red cube"), "pick up the red cube", now - 500 * MS)
    wait_for(lambda: cycles, 30, "the first cycle")
    _views(loop, now + 1 * MS)
    wait_for(lambda: len(cycles) >= 2, 30, "a cycle for the new pair")
    assert [c.chunk.stamp_ns for c in cycles] == [now, now + 1 * MS]
    assert {s.reason for s in skips} <= {"no_new_images"}
    loop.stop()
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_busy_states_are_the_states_in_which_the_controller_refuses_chunks():
    from graspvla_ros import interfaces
    from graspvla_ros.control.state import REFUSING, ControllerState

    assert ControllerState is interfaces.ControllerState
    assert BUSY_STATES == set(REFUSING)


def test_the_policy_loads_only_the_backend_it_runs_and_backends_import_no_circle():
    code = """
import sys
import graspvla_ros.nodes.policy_node
from graspvla_ros.policy import backends
assert not [m for m in sys.modules if m.split('.')[0] in ('mujoco', 'torch')], 'the node module loads a runtime'
assert 'graspvla_ros.policy.expert' not in sys.modules and 'graspvla_ros.control' not in sys.modules
try:
    backends.create('gpt')
except ValueError as err:
    print(err)
backends.create('expert', ground_truth=lambda: None)
assert 'mujoco' in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "unknown backend 'gpt' (known: graspvla, expert)"
    for module in ("backend", "expert"):
        source = (ROOT / "graspvla_ros" / "policy" / f"{module}.py").read_text()
        assert "policy.backends" not in source and (module == "expert" or "policy.expert" not in source)


def test_the_debug_view_draws_the_bbox_scaled_from_the_model_input():
    from graspvla_ros.policy.debug import bbox_view

    view = np.zeros((256, 256, 3), np.uint8)
    drawn = bbox_view(view, [28.0, 56.0, 112.0, 168.0])   # 224 px → ×256/224: 32, 64, 128, 192
    assert not view.any(), "the observation's view is not drawn on"
    assert (drawn[64, 32:129] == (0, 255, 0)).all() and (drawn[64:193, 128] == (0, 255, 0)).all()
    assert not drawn[100:150, 50:100].any()


def test_commanded_history_is_the_official_blocking_clients():
    """The official blocking client's proprio (../shared/notes/graspvla-facts.md): its history is
    the start pose then every commanded waypoint; rows [prev ×3, current] are the waypoint 3
    before the last and the last; the chunk chains from the last commanded waypoint; at the start
    all rows are the measured pose. Gripper: the commanded state at each row's time."""
    import numpy as np

    from graspvla_ros.chunk import Pose
    from graspvla_ros.policy.observation import CommandedHistory, GripperHistory, commanded_rows, proprio_row

    start = (0, Pose.from_xyz_rpy((0.36, 0.0, 0.49), (-np.pi, 0.0, np.pi / 4)))
    waypoints = [(k * 100_000_000, Pose.from_xyz_rpy((0.36 + 0.01 * k, 0.0, 0.49), (-np.pi, 0.0, np.pi / 4)))
                 for k in range(1, 7)]
    history = CommandedHistory()
    for t, p in waypoints:
        history.add(t, p)
    gripper = GripperHistory()
    gripper.add(550_000_000, -1.0)  # closed between waypoints 5 and 6

    rows, anchor = commanded_rows(0, history.between(0, 0), start, gripper)
    np.testing.assert_array_equal(rows, np.stack([proprio_row(start[1], 1.0)] * 4))
    assert anchor is start[1]

    rows, anchor = commanded_rows(250_000_000, history.between(0, 250_000_000), start, gripper)
    np.testing.assert_array_equal(rows[0], proprio_row(start[1], 1.0))        # fewer than 3 back: the start
    np.testing.assert_array_equal(rows[-1], proprio_row(waypoints[1][1], 1.0))
    assert anchor is waypoints[1][1]

    rows, anchor = commanded_rows(650_000_000, history.between(0, 650_000_000), start, gripper)
    np.testing.assert_array_equal(rows[:3], np.stack([proprio_row(waypoints[2][1], 1.0)] * 3))  # 3 before the last
    np.testing.assert_array_equal(rows[-1], proprio_row(waypoints[5][1], -1.0))
    assert anchor is waypoints[5][1]


def test_model_options_pick_the_path_of_the_device():
    """`device` (the policy parameter, serve-zmq's --device): cpu keeps the official fp32 path,
    cuda asks for the fast path and is refused with the reason where there is no CUDA; only the
    torch runtime takes a device."""
    import pytest
    import torch

    from graspvla_ros.policy.backends import model_options

    assert model_options("torch", None) == {}
    assert model_options("torch", "cpu") == {"device": "cpu"}
    assert model_options("torch", "cpu", "bfloat16") == {"device": "cpu", "dtype": torch.bfloat16}
    if torch.cuda.is_available():
        assert model_options("torch", "cuda")["cuda_graphs"] is True
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            model_options("torch", "cuda")
    with pytest.raises(ValueError, match="only the torch runtime"):
        model_options("onnxruntime", "cpu")
    with pytest.raises(ValueError, match="float32 export"):
        model_options("onnxruntime", None, "bfloat16")

"""The scripted policy (square + gripper close/open) and the metrics the demo prints."""
import numpy as np
import pytest

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_HOLD, GRIPPER_OPEN, Pose
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.policy.scripted import CHUNK_PERIOD, evaluate, speeds, square_path
from graspvla_ros.safety import SafetyLimits

HOME = Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY)


def test_square_goes_round_and_back_then_closes_and_opens_the_gripper():
    path = square_path(HOME, side=0.08, speed=0.04, dt=0.1)
    offsets = np.array([p.position - HOME.position for p in path.poses])
    np.testing.assert_allclose(offsets.min(axis=0), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(offsets.max(axis=0), [0.08, 0.08, 0], atol=1e-12)
    np.testing.assert_allclose(offsets[-1], 0, atol=1e-12)
    assert path.cruise_speed == pytest.approx(0.04)
    assert path.duration == pytest.approx(4 * 0.08 / 0.04 + 3.0)
    moves = path.grippers[: 4 * 20 + 1]
    assert set(moves) == {GRIPPER_HOLD}
    after = list(path.grippers[4 * 20 + 1:])
    assert after == [GRIPPER_CLOSE] * 15 + [GRIPPER_OPEN] * 15
    assert all(np.allclose(p.rotation, HOME.rotation) for p in path.poses)


def test_chunk_targets_follow_the_reference_from_wherever_the_arm_is():
    path = square_path(HOME)
    lagging = Pose(path.position_at(1.23) + [-0.003, -0.002, 0.0], HOME.rotation)
    chunk = path.chunk(1.23, lagging, stamp_ns=10**9)
    assert len(chunk.targets) == 8 and chunk.dt == path.dt
    for k, w in enumerate(chunk.targets, start=1):
        np.testing.assert_allclose(w.pose.position, path.position_at(1.23 + k * path.dt), atol=1e-9)
        assert w.stamp_ns == 10**9 + round(k * path.dt * 1e9)
    np.testing.assert_allclose(chunk.rows[0, :3], chunk.targets[0].pose.position - lagging.position, atol=1e-12)
    limits = SafetyLimits()
    limits.check(chunk, now_ns=10**9, last_stamp_ns=None)
    clipped = limits.clip(lagging, list(chunk.targets))
    for a, b in zip(clipped, chunk.targets):
        np.testing.assert_allclose(a.pose.position, b.pose.position, atol=1e-12)


def test_chunks_past_the_end_rest_at_the_last_pose():
    path = square_path(HOME, side=0.02)
    chunk = path.chunk(path.duration - 0.15, path.poses[-1], stamp_ns=0)
    for w in chunk.targets:
        np.testing.assert_allclose(w.pose.position, path.poses[-1].position, atol=1e-12)
    assert chunk.targets[-1].gripper == GRIPPER_OPEN


def _trace(path, speed_at_switch=None, rate=200.0):
    """TCP samples of an ideal run; optionally the arm dips to `speed_at_switch` at each switch."""
    t = np.arange(0.0, path.duration + 0.5, 1.0 / rate)
    if speed_at_switch is None:
        return t, np.array([path.position_at(x) for x in t])
    # time warp: progress along the path slows near each switch (every CHUNK_PERIOD)
    phase = (t % CHUNK_PERIOD) / CHUNK_PERIOD
    rate_factor = speed_at_switch + (1 - speed_at_switch) * np.sin(np.pi * phase) ** 2
    warped = np.concatenate([[0.0], np.cumsum(rate_factor[1:] * np.diff(t))])
    return t, np.array([path.position_at(x) for x in warped])


def test_speeds_of_a_constant_velocity_trace():
    t = np.arange(0, 1, 0.005)
    x = np.stack([0.03 * t, np.zeros_like(t), np.zeros_like(t)], axis=1)
    _, v = speeds(t, x)
    np.testing.assert_allclose(v, 0.03, rtol=1e-9)


def test_perfect_tracking_scores_zero_error_and_full_speed_at_switches():
    path = square_path(HOME)
    t, x = _trace(path)
    switches = np.arange(0.0, path.duration, CHUNK_PERIOD)
    m = evaluate(path, 0.0, t, x, switches, path.poses[-1].position)
    assert m.rms_error < 1e-3 and m.final_error < 1e-9
    assert m.switches >= 16  # 4 straight sides, several switches each
    assert m.switch_speed_ratio == pytest.approx(1.0, abs=0.05)
    assert "chunk switches" in m.lines()[1]


def test_an_arm_that_stops_at_every_switch_scores_near_zero():
    path = square_path(HOME)
    t, x = _trace(path, speed_at_switch=0.0)
    m = evaluate(path, 0.0, t, x, np.arange(0.0, path.duration, CHUNK_PERIOD), path.poses[-1].position)
    assert m.switch_speed_ratio < 0.1

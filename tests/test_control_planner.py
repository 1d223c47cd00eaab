"""The pure planner (no robot): latency compensation, gripper segments, TCP velocities."""
import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import ActionChunk, Pose, Waypoint
from graspvla_ros.control import planner

NOW = 10_000_000_000
ANCHOR = Pose.from_xyz_rpy((0.4, 0.0, 0.3), (-np.pi, 0.0, np.pi / 4))


def chunk(grippers, stamp=NOW, step=(0.01, 0, 0, 0, 0, 0)):
    return ActionChunk(stamp, 0.1, "base", np.array([[*step, g] for g in grippers], float), ANCHOR)


def test_latency_compensation_carries_a_dropped_gripper_change():
    c = chunk([0, -1, 0, 0, 0, 0, 0, 0])
    kept = planner.latency_compensate(c.targets, NOW + 350_000_000)  # steps 1–3 passed
    assert [w.stamp_ns for w in kept] == [w.stamp_ns for w in c.targets[3:]]
    assert kept[0].gripper == -1 and all(w.gripper == 0 for w in kept[1:])


def test_all_steps_passed_keeps_the_last_one_only_for_a_gripper_change():
    late = NOW + 2_000_000_000
    assert planner.latency_compensate(chunk([0] * 4).targets, late) == []
    kept = planner.latency_compensate(chunk([0, 1, 0, 0]).targets, late)
    assert len(kept) == 1 and kept[0].gripper == 1 and kept[0].stamp_ns == late
    np.testing.assert_allclose(kept[0].pose.position, chunk([0] * 4).targets[-1].pose.position)


def test_split_at_gripper_ends_a_segment_at_each_change():
    c = chunk([0, 0, -1, -1, 0, 1, 0, 0])
    segments = planner.split_at_gripper(list(c.targets), commanded=1.0)
    assert [len(s.waypoints) for s in segments] == [3, 3, 2]
    assert [s.gripper for s in segments] == [-1, 1, None]
    # a repeat of the commanded state is no change
    assert [s.gripper for s in planner.split_at_gripper(list(chunk([-1] * 4).targets), commanded=-1.0)] == [None]


def test_retime_spaces_the_rest_from_now():
    rest = planner.retime(chunk([0, 0, 0]).targets, NOW + 5_000_000_000, 0.1)
    assert [w.stamp_ns for w in rest] == [NOW + 5_100_000_000, NOW + 5_200_000_000, NOW + 5_300_000_000]


def test_streaming_setpoints_pass_with_velocity_and_end_at_rest():
    c = chunk([0] * 4)
    points = planner.streaming_setpoints(ANCHOR, c.targets, NOW, tcp_offset=0.0)
    np.testing.assert_allclose(points[0].linear, [0.1, 0, 0], atol=1e-9)  # 1 cm per 0.1 s
    np.testing.assert_allclose(points[-1].linear, 0.0)
    assert [round(p.duration, 6) for p in points] == [0.1] * 4


def test_flange_velocity_accounts_for_the_tcp_offset():
    """A pure rotation about the TCP: the TCP stays put, the flange (offset behind it) must move."""
    offset = 0.03
    poses = [Pose(ANCHOR.position, Rotation.from_rotvec([0, 0, 0.05 * k]).as_matrix() @ ANCHOR.rotation) for k in range(4)]
    waypoints = [Waypoint(NOW + k * 100_000_000, p, 0.0) for k, p in enumerate(poses[1:], start=1)]
    points = planner.streaming_setpoints(poses[0], waypoints, NOW, offset)
    mid = points[0]
    omega = np.array([0, 0, 0.5])
    r = poses[1].rotation[:, 2] * offset
    np.testing.assert_allclose(mid.angular, omega, atol=1e-9)
    np.testing.assert_allclose(mid.linear, -np.cross(omega, r), atol=1e-9)
    np.testing.assert_allclose(mid.flange.position, poses[1].position - r, atol=1e-12)
    # the TCP of the flange pose is the planned TCP
    np.testing.assert_allclose(planner.flange_to_tcp(mid.flange, offset).position, poses[1].position, atol=1e-12)


def test_a_twist_over_the_limits_is_scaled_down_whole():
    """0.5 rad/s against a 0.3 rad/s limit: the twist (linear and angular together, so the
    flange and the TCP still agree) is scaled to the limit; one within both is left alone."""
    offset = 0.03
    poses = [Pose(ANCHOR.position + [0.01 * k, 0, 0], Rotation.from_rotvec([0, 0, 0.05 * k]).as_matrix() @ ANCHOR.rotation)
             for k in range(4)]
    waypoints = [Waypoint(NOW + k * 100_000_000, p, 0.0) for k, p in enumerate(poses[1:], start=1)]
    free = planner.streaming_setpoints(poses[0], waypoints, NOW, offset)[0]
    limited = planner.streaming_setpoints(poses[0], waypoints, NOW, offset, (1.0, 0.3))[0]
    np.testing.assert_allclose(np.linalg.norm(limited.angular), 0.3, rtol=1e-9)
    np.testing.assert_allclose(limited.linear, free.linear * 0.6, atol=1e-12)
    np.testing.assert_allclose(limited.flange.position, free.flange.position)
    assert limited.duration == free.duration
    roomy = planner.streaming_setpoints(poses[0], waypoints, NOW, offset, (1.0, 1.0))[0]
    np.testing.assert_allclose(roomy.angular, free.angular)

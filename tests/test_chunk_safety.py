"""Action chunks, frames and every safety rule (pure core, no robot)."""
import numpy as np
import pytest

from graspvla_ros.chunk import ActionChunk, Pose, euler_to_matrix, matrix_to_euler
from graspvla_ros.control import explain_connection_error, FrankaProtocolMismatch
from graspvla_ros.safety import ChunkRejected, RejectionLog, SafetyLimits

NOW = 10_000_000_000
ANCHOR = Pose.from_xyz_rpy((0.4, 0.0, 0.3), (-np.pi, 0.0, np.pi / 4))


def chunk(rows, stamp=NOW, frame="base", dt=0.1):
    return ActionChunk(stamp, dt, frame, np.asarray(rows, float), ANCHOR)


def test_euler_is_static_xyz():
    roll, pitch, yaw = 0.3, -0.2, 0.5
    rx = np.array([[1, 0, 0], [0, np.cos(roll), -np.sin(roll)], [0, np.sin(roll), np.cos(roll)]])
    ry = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    np.testing.assert_allclose(euler_to_matrix([roll, pitch, yaw]), rz @ ry @ rx, atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(rz @ ry @ rx), [roll, pitch, yaw], atol=1e-12)


def test_deltas_chain_in_the_base_frame():
    rows = [[0.01, 0, 0, 0, 0, 0.1, 0], [0, 0.02, 0, 0.05, 0, 0, -1]]
    c = chunk(rows)
    t1, t2 = c.targets
    np.testing.assert_allclose(t1.pose.position, ANCHOR.position + [0.01, 0, 0])
    np.testing.assert_allclose(t2.pose.position, ANCHOR.position + [0.01, 0.02, 0])
    # rotations premultiply: R_k = euler2mat(Δ_k) @ R_{k-1}
    np.testing.assert_allclose(t1.pose.rotation, euler_to_matrix([0, 0, 0.1]) @ ANCHOR.rotation)
    np.testing.assert_allclose(t2.pose.rotation, euler_to_matrix([0.05, 0, 0]) @ t1.pose.rotation)
    assert [t.stamp_ns for t in c.targets] == [NOW + 100_000_000, NOW + 200_000_000]
    assert t2.gripper == -1


def test_from_targets_inverts_the_chain():
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.uniform(-0.01, 0.01, (8, 6)), rng.choice([-1, 0, 1], 8)])
    c = chunk(rows)
    back = ActionChunk.from_targets(c.stamp_ns, c.dt, c.frame_id, c.anchor,
                                    [t.pose for t in c.targets], [t.gripper for t in c.targets])
    np.testing.assert_allclose(back.rows, rows, atol=1e-12)


@pytest.mark.parametrize("rows, reason", [
    (np.zeros((0, 7)), "empty"),
    (np.zeros((4, 6)), "bad_shape"),
    (np.zeros(7), "bad_shape"),
    ([[np.nan, 0, 0, 0, 0, 0, 0]], "not_finite"),
    ([[0, 0, np.inf, 0, 0, 0, 0]], "not_finite"),
    ([[0, 0, 0, 0, 0, 0, 0.5]], "bad_gripper"),
])
def test_malformed_chunks_are_refused(rows, reason):
    with pytest.raises(ChunkRejected) as err:
        SafetyLimits().check(chunk(rows), NOW, None)
    assert err.value.reason == reason


def test_frame_age_and_order_rules():
    limits = SafetyLimits()
    ok = np.zeros((4, 7))
    with pytest.raises(ChunkRejected, match="unknown_frame"):
        limits.check(chunk(ok, frame="camera"), NOW, None)
    with pytest.raises(ChunkRejected, match="too_old"):
        limits.check(chunk(ok, stamp=NOW - 1_100_000_000), NOW, None)
    with pytest.raises(ChunkRejected, match="non_monotonic"):
        limits.check(chunk(ok, stamp=NOW), NOW, last_stamp_ns=NOW)
    with pytest.raises(ChunkRejected, match="bad_dt"):
        limits.check(chunk(ok, dt=0.0), NOW, None)
    # the official eager client's latency: chunks 0.5–0.7 s after their observation are accepted
    limits.check(chunk(ok, stamp=NOW - 700_000_000), NOW, last_stamp_ns=NOW - 800_000_000)


def test_steps_are_clipped_relative_to_the_pose_before():
    limits = SafetyLimits(max_step_translation=0.02, max_step_rotation=0.05)
    c = chunk([[0.1, 0, 0, 0, 0, 0.3, 0], [0.1, 0, 0, 0, 0, 0, 0]])
    out = limits.clip(ANCHOR, list(c.targets))
    assert ANCHOR.translation_to(out[0].pose) == pytest.approx(0.02)
    assert ANCHOR.rotation_to(out[0].pose) == pytest.approx(0.05)
    assert out[0].pose.translation_to(out[1].pose) == pytest.approx(0.02)
    assert out[0].pose.rotation_to(out[1].pose) <= 0.05 + 1e-9


def test_workspace_box_clamps_every_target():
    limits = SafetyLimits(max_step_translation=1.0)
    c = chunk([[0.5, 0, 0, 0, 0, 0, 0], [0, 0, -0.5, 0, 0, 0, 0]])
    out = limits.clip(ANCHOR, list(c.targets))
    np.testing.assert_allclose(out[0].pose.position, [0.8, 0.0, 0.3])
    np.testing.assert_allclose(out[1].pose.position, [0.8, 0.0, 0.0])


def test_limits_validate_their_parameters():
    with pytest.raises(ValueError, match="workspace"):
        SafetyLimits(workspace_min=(0.8, 0, 0), workspace_max=(0.2, 1, 1))
    with pytest.raises(ValueError, match="max_chunk_age"):
        SafetyLimits(max_chunk_age=-1)


def test_rejections_are_counted_always_and_logged_once():
    log = RejectionLog()
    assert log.record("too_old") and not log.record("too_old")
    assert log.record("not_finite")
    log.accepted()
    assert log.record("too_old")
    assert log.counts == {"too_old": 3, "not_finite": 1}


def test_panda_protocol_mismatch_is_one_clear_line():
    err = explain_connection_error("172.16.0.2", RuntimeError("libfranka: incorrect object size"))
    assert isinstance(err, FrankaProtocolMismatch)
    assert "Panda" in str(err) and "\n" not in str(err)
    other = RuntimeError("connection refused")
    assert explain_connection_error("172.16.0.2", other) is other

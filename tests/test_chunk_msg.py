"""The ROS encoding of chunks round-trips and refuses what is not a chunk."""
import numpy as np
import pytest

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.nodes.chunk_msg import decode, encode

pytestmark = pytest.mark.ros


def sample_chunk():
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.uniform(-0.01, 0.01, (8, 6)), rng.choice([-1.0, 0.0, 1.0], 8)])
    anchor = Pose.from_xyz_rpy((0.36, 0.0, 0.49), (-np.pi, 0, np.pi / 4))
    return ActionChunk(1_700_000_000_123_456_789, 0.1, "base", rows, anchor, anchor_gripper=-1.0)


def test_round_trip_is_lossless():
    chunk = sample_chunk()
    msg = encode(chunk)
    assert msg.header.frame_id == "base" and len(msg.points) == 9
    back = decode(msg)
    assert back.stamp_ns == chunk.stamp_ns and back.dt == pytest.approx(0.1) and back.anchor_gripper == -1.0
    np.testing.assert_allclose(back.rows, chunk.rows, atol=1e-9)
    np.testing.assert_allclose(back.anchor.rotation, chunk.anchor.rotation, atol=1e-12)


def test_the_policys_ids_travel_with_the_chunk_and_a_chunk_without_them_has_none():
    import dataclasses

    chunk = dataclasses.replace(sample_chunk(), episode=12, seq=345)
    back = decode(encode(chunk))
    assert (back.episode, back.seq) == (12, 345)
    assert (decode(encode(sample_chunk())).episode, decode(encode(sample_chunk())).seq) == (0, 0)
    msg = encode(chunk)
    msg.points[0].velocities[0].linear.y = 2.5
    with pytest.raises(ValueError, match="ids"):
        decode(msg)


def test_serialised_bytes_round_trip():
    from rclpy.serialization import deserialize_message, serialize_message
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    chunk = sample_chunk()
    back = decode(deserialize_message(serialize_message(encode(chunk)), MultiDOFJointTrajectory))
    np.testing.assert_allclose(back.rows, chunk.rows, atol=1e-9)


def test_malformed_messages_are_refused_with_a_reason():
    msg = encode(sample_chunk())
    msg.joint_names = ["ee"]
    with pytest.raises(ValueError, match="joint_names"):
        decode(msg)
    msg = encode(sample_chunk())
    msg.points = msg.points[:1]
    with pytest.raises(ValueError, match="at least one target"):
        decode(msg)
    msg = encode(sample_chunk())
    msg.points[3].time_from_start.nanosec += 50_000_000
    with pytest.raises(ValueError, match="evenly spaced"):
        decode(msg)

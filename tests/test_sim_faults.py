"""The simulated robot fails as libfranka's robot does, seen through the real franky client."""
import time

import franky
import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.sim.server import SimServer

pytestmark = pytest.mark.sim


@pytest.fixture
def sim(new_loopback_host):
    with SimServer(new_loopback_host()) as server:
        yield server


def connect(host):
    return franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore,
                        controller_mode=franky.ControllerMode.CartesianImpedance)


def start_long_motion(robot):
    """A joint motion that takes a few seconds, started asynchronously."""
    q = list(robot.current_joint_positions)
    q[0] += 1.0
    robot.relative_dynamics_factor = 0.1
    robot.move(franky.JointMotion(q), asynchronous=True)
    wait_for(lambda: np.abs(robot.current_joint_velocities).max() > 0.02, 10, "the joint motion to start")
    return q


def test_user_stop_aborts_the_motion_and_blocks_moves_and_recovery_until_released(sim):
    robot = connect(sim.host)
    start_long_motion(robot)
    sim.inject("user_stop")
    with pytest.raises(franky.ControlException, match="User Stop pressed"):
        robot.join_motion()
    assert robot.state.robot_mode == franky.RobotMode.UserStopped
    with pytest.raises(franky.CommandException, match="User Stop pressed"):
        robot.recover_from_errors()
    with pytest.raises(franky.CommandException, match="not possible in the current mode"):
        robot.move(franky.JointMotion(list(robot.current_joint_positions)))
    sim.inject("user_stop_release")
    wait_for(lambda: robot.state.robot_mode != franky.RobotMode.UserStopped, 5, "the user stop released")
    assert moves(robot)


def moves(robot) -> bool:
    """A 0.1 rad joint motion runs to its end and turns joint 1 (the sim's arm still lags its
    target when the motion generator ends, by up to 0.04 rad at full speed)."""
    start = np.array(robot.current_joint_positions)
    robot.move(franky.JointMotion(list(start + [0.1, 0, 0, 0, 0, 0, 0])))
    return wait_for(lambda: robot.current_joint_positions[0] - start[0] > 0.09, 5, "joint 1 turned by 0.1 rad")


def test_reflex_aborts_with_its_flag_and_recovery_clears_it(sim):
    robot = connect(sim.host)
    start_long_motion(robot)
    sim.inject("reflex:joint_motion_generator_acceleration_discontinuity")
    with pytest.raises(franky.ControlException, match="reflex"):
        robot.join_motion()
    state = robot.state
    assert state.robot_mode == franky.RobotMode.Reflex and robot.has_errors
    assert state.current_errors.joint_motion_generator_acceleration_discontinuity
    assert state.last_motion_errors.joint_motion_generator_acceleration_discontinuity
    assert not state.current_errors.cartesian_reflex
    with pytest.raises(franky.CommandException, match="not possible in the current mode"):
        robot.move(franky.JointMotion(list(robot.current_joint_positions)))
    robot.recover_from_errors()  # its return value can be read from a stale state: check the state
    assert not robot.has_errors
    assert moves(robot)


def test_recovery_is_rejected_while_a_motion_runs(sim):
    robot = connect(sim.host)
    start_long_motion(robot)
    with pytest.raises(franky.CommandException, match="not possible in the current mode"):
        robot.recover_from_errors()
    robot.move(franky.JointStopMotion(), asynchronous=True)
    robot.join_motion()
    robot.recover_from_errors()
    assert not robot.has_errors


def test_network_drop_times_out_the_client_and_a_new_connection_recovers(sim):
    robot = connect(sim.host)
    start_long_motion(robot)
    before = np.array(robot.current_joint_positions)
    sim.inject("network_drop:2.0")
    with pytest.raises(franky.NetworkException):
        robot.join_motion()
    assert sim.faults()["offline"]
    wait_for(lambda: not sim.faults()["offline"], 10, "the link back")
    robot = connect(sim.host)
    assert robot.state.current_errors.communication_constraints_violation and robot.has_errors
    held = np.array(robot.current_joint_positions)
    assert np.abs(held - before).max() < 0.3, "the arm should have stopped when the link dropped"
    robot.recover_from_errors()
    assert not robot.has_errors
    assert moves(robot)


def test_gripper_fail_fails_the_next_command_only(sim):
    gripper = franky.Gripper(sim.host)
    sim.inject("gripper_fail")
    future = gripper.move_async(0.05, 0.1)
    assert future.wait(5)
    with pytest.raises(Exception):
        future.get()
    assert gripper.move(0.05, 0.1)


def test_force_bias_rises_while_the_arm_accelerates(sim):
    robot = connect(sim.host)
    assert abs(robot.state.O_F_ext_hat_K[2]) < 1.0
    sim.inject("force_bias:8")
    q = np.array(robot.current_joint_positions)
    peak = 0.0
    robot.move(franky.JointMotion(list(q + [0.4, 0, 0, 0, 0, 0, 0])), asynchronous=True)
    deadline = time.monotonic() + 10
    while not robot.join_motion(timeout=0.0) and time.monotonic() < deadline:
        peak = max(peak, robot.state.O_F_ext_hat_K[2])
    assert 2.0 < peak <= 8.0 + 1.0, f"the bias peaked at {peak:.2f} N"
    wait_for(lambda: abs(robot.state.O_F_ext_hat_K[2]) < 1.0, 10, "the bias gone at rest")


def test_unknown_faults_are_refused_with_the_known_ones(sim):
    with pytest.raises(ValueError, match="known: user_stop"):
        sim.inject("meteor")
    with pytest.raises(ValueError, match="unknown error flag"):
        sim.inject("reflex:bad_flag")
    with pytest.raises(ValueError, match="number"):
        sim.inject("network_drop:soon")

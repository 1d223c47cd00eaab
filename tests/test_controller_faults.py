"""The controller against a simulated arm that fails as a real Franka does (sim.faults): every
fault ends in a defined state with the reason, the worker lives on, home answers, and once the
fault is gone the next chunk moves the arm again."""
import time

import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.control import ArmController, ControllerState
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.sim_settings import sim_controller_settings
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.sim.server import SimServer

pytestmark = pytest.mark.sim
HOME = Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY)


@pytest.fixture
def rig(new_loopback_host):
    """(sim, controller, states seen), homed."""
    with SimServer(new_loopback_host()) as sim, \
            ArmController(sim_controller_settings(sim.host, **{"safety.hold_timeout": 0.6})) as ctl:
        states = []
        ctl.add_state_listener(lambda state, why: states.append((state, why)))
        ctl.home()
        yield sim, ctl, states


def chunk(ctl, d=(0.0, 0.0, 0.0), grip=0.0, n=8):
    return ActionChunk(ctl.clock(), 0.1, "base", np.array([[*d, 0, 0, 0, grip]] * n, float), ctl.read_state().ee)


def stream_until(ctl, condition, what, d=(0.0, 0.004, 0.0), timeout=15.0):
    """Send a chunk every 0.2 s until `condition()`; refused chunks are fine, and none is sent
    while the robot's state cannot be read (no anchor for it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        try:
            ctl.submit(chunk(ctl, d))
        except ChunkRejected:
            pass
        except Exception as err:  # the state cannot be read: the link is down
            assert "Net" in str(err) or "Timeout" in str(err) or "not connected" in str(err), err
        time.sleep(0.2)


def moves_again(ctl):
    """The worker is alive and a chunk moves the arm 2 cm along +x."""
    assert ctl._worker.is_alive()
    start = ctl.read_state().ee.position
    ctl.submit(chunk(ctl, (0.005, 0, 0), n=4))
    wait_for(lambda: ctl.read_state().ee.position[0] > start[0] + 0.015, 15, "a chunk to move the arm again")


def at_rest(ctl, timeout=5.0):
    def still():
        a = ctl.read_state()
        wait_for(lambda: ctl.read_state().robot_time >= a.robot_time + 0.1, 5, "the robot clock")
        b = ctl.read_state()
        return np.linalg.norm(b.ee.position - a.ee.position) / (b.robot_time - a.robot_time) < 1e-3
    wait_for(still, timeout, "the arm at rest")


def test_user_stop_holds_refuses_and_goes_on_once_released(rig):
    sim, ctl, states = rig
    stream_until(ctl, lambda: ctl.state == ControllerState.RUNNING, "RUNNING")
    sim.inject("user_stop")
    stream_until(ctl, lambda: ctl.state == ControllerState.USER_STOPPED, "USER_STOPPED")
    at_rest(ctl)
    assert ctl._worker.is_alive()
    with pytest.raises(ChunkRejected, match="user_stopped"):
        ctl.submit(chunk(ctl))
    with pytest.raises(RuntimeError, match="USER_STOPPED"):
        ctl.home()
    ctl.flush()  # the listeners heard every transition so far
    assert any("user stop" in why for state, why in states if state == ControllerState.USER_STOPPED)
    sim.inject("user_stop_release")
    wait_for(lambda: ctl.state == ControllerState.IDLE, 10, "IDLE once the user stop is released")
    ctl.home()
    moves_again(ctl)


def test_one_reflex_recovers_and_holds_the_next_chunk_moves_on(rig):
    sim, ctl, states = rig
    stream_until(ctl, lambda: ctl.state == ControllerState.RUNNING, "RUNNING")
    sim.inject("reflex:cartesian_motion_generator_joint_acceleration_discontinuity")
    wait_for(lambda: any("recovered from a reflex" in why for _, why in states), 10, "the reflex recovered")
    assert ctl.state == ControllerState.HOLDING and ctl.reflex_count == 1
    ctl.flush()  # the listeners heard every transition so far
    assert any("joint_acceleration_discontinuity" in why for _, why in states)  # delivered before "recovered"
    assert not sim.faults()["errors"], "the robot's errors must be recovered"
    moves_again(ctl)


def test_repeated_reflexes_give_fault_until_the_operator_recovers(rig):
    sim, ctl, states = rig
    for n in range(3):
        stream_until(ctl, lambda: ctl.state == ControllerState.RUNNING, "RUNNING")
        sim.inject("reflex")
        wait_for(lambda n=n: ctl.reflex_count == n + 1, 10, f"reflex {n + 1}")
    wait_for(lambda: ctl.state == ControllerState.FAULT, 10, "FAULT after 3 reflexes")
    with pytest.raises(ChunkRejected, match="fault"):
        ctl.submit(chunk(ctl))
    ctl.flush()  # the listeners heard every transition so far
    assert any("3 reflexes" in why for state, why in states if state == ControllerState.FAULT)
    ctl.recover()
    assert ctl.state == ControllerState.IDLE
    ctl.home()
    moves_again(ctl)


def test_a_lost_link_disconnects_and_reconnects_when_the_robot_answers(rig):
    sim, ctl, states = rig
    stream_until(ctl, lambda: ctl.state == ControllerState.RUNNING, "RUNNING")
    sim.inject("network_drop:600")
    stream_until(ctl, lambda: ControllerState.DISCONNECTED in [s for s, _ in states], "DISCONNECTED")
    assert ctl.state == ControllerState.DISCONNECTED and not ctl.connected and ctl._worker.is_alive()
    with pytest.raises(ChunkRejected, match="disconnected"):
        ctl.submit(ActionChunk(ctl.clock(), 0.1, "base", np.zeros((8, 7)), HOME))
    with pytest.raises(RuntimeError, match="DISCONNECTED"):
        ctl.home()
    sim.inject("network_restore")
    wait_for(lambda: ctl.state == ControllerState.IDLE, 20, "IDLE after the reconnect")
    ctl.flush()  # the listeners heard every transition so far
    assert any("reconnected" in why for _, why in states)
    assert not sim.faults()["errors"], "the communication reflex must be recovered"
    ctl.home()
    moves_again(ctl)


def test_a_failed_gripper_command_is_reported_and_the_chunk_goes_on(rig):
    sim, ctl, states = rig
    sim.inject("gripper_fail")
    ctl.submit(chunk(ctl, (0, 0, -0.003), grip=-1.0, n=2))
    wait_for(lambda: ctl.gripper_failures == 1, 10, "the gripper failure reported")
    wait_for(lambda: ctl.state != ControllerState.GRIPPER, 10, "GRIPPER to end")
    assert ctl.gripper_command == -1.0, "the commanded state is what was sent"
    wait_for(lambda: any("gripper close failed" in why for _, why in states), 10, "the failure in the state's reason")
    moves_again(ctl)


def test_estop_during_a_gripper_change_holds_the_arm(rig):
    sim, ctl, states = rig
    ctl.submit(chunk(ctl, (0, 0, -0.004), grip=-1.0, n=3))
    wait_for(lambda: ctl.state == ControllerState.GRIPPER, 10, "GRIPPER")
    ctl.estop()
    assert ctl.state == ControllerState.ESTOPPED
    at_rest(ctl)
    rest = ctl.read_state().ee.position
    time.sleep(0.5)
    np.testing.assert_allclose(ctl.read_state().ee.position, rest, atol=1e-3)
    ctl.release()
    moves_again(ctl)


def test_an_end_effector_other_than_the_expected_one_is_reported(new_loopback_host):
    with SimServer(new_loopback_host(), ee_offset=0.12) as sim, ArmController(sim_controller_settings(sim.host)) as ctl:
        assert "17 mm" in ctl.ee_warning, ctl.ee_warning
    with SimServer(new_loopback_host()) as sim, ArmController(sim_controller_settings(sim.host)) as ctl:
        assert ctl.ee_warning == ""

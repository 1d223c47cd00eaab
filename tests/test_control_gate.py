"""MotionGate.wait: the timeout runs on the controller's clock, the outcome is seen on wall time."""
import threading
import time

from graspvla_ros.control.gate import MotionGate
from graspvla_ros.control.state import StateMachine


def _gate(clock):
    machine = StateMachine()
    gate = MotionGate(machine, arm=lambda: None, clock=clock)
    return machine, gate


def test_a_motion_that_ended_is_seen_while_the_clock_stands_still():
    """The sim graph's clock is /clock: a stalled simulator stops it. An outcome that is true
    must still end the wait (it did not, and homing stayed HOMING for minutes in CI)."""
    machine, gate = _gate(clock=lambda: 5_000_000_000)
    ended = threading.Event()
    threading.Timer(0.05, ended.set).start()
    start = time.monotonic()
    assert gate.wait(machine.epoch, ended.is_set, timeout=2.0, contact=False)
    assert time.monotonic() - start < 10 * 2.0 + 1.0, "it waited for the wall-time backstop"


def test_the_timeout_runs_on_the_controllers_clock():
    """10 s of controller time pass in a few ms of wall time: the wait ends with False."""
    machine, gate = _gate(clock=lambda: time.monotonic_ns() * 1000)
    start = time.monotonic()
    assert not gate.wait(machine.epoch, lambda: False, timeout=10.0, contact=False)
    assert time.monotonic() - start < 9.0, "the timeout ran on wall time"


def test_a_frozen_clock_ends_the_wait_on_the_wall_backstop():
    machine, gate = _gate(clock=lambda: 0)
    start = time.monotonic()
    assert not gate.wait(machine.epoch, lambda: False, timeout=0.1, contact=False)
    assert time.monotonic() - start >= 2.0 - 0.05  # 10 × 0.1 s + 1 s

"""The motion gate: every motion command of a job goes through it.

Invariants: a command is issued under the state lock, and only while the job's epoch is current
(e-stop, hold, home, faults and contact start a new epoch under that lock, so work of an older
epoch can no longer move the arm); a motion of another control type than the running one is
issued only after the running one was stopped and has ended (franky cannot swap them); every
wait checks the epoch and the contact reaction every 5 ms, on the controller's clock.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from graspvla_ros.chunk import Pose
from graspvla_ros.control import planner
from graspvla_ros.control.franky_adapter import FrankyArm, MotionTypeBusy
from graspvla_ros.control.state import StateMachine


class Interrupted(Exception):
    """The job's epoch was overtaken (e-stop, hold, home, a fault, contact): stop working on it."""


class Contact(Exception):
    """franky's contact reaction fired: the arm is backing off."""


class MotionGate:
    def __init__(self, machine: StateMachine, arm: Callable[[], FrankyArm], clock: Callable[[], int]):
        self.machine = machine
        self.lock = machine.lock
        self._arm = arm
        self.clock = clock

    @property
    def arm(self) -> FrankyArm:
        return self._arm()

    def check(self, epoch: int) -> None:
        if not self.machine.current(epoch):
            raise Interrupted()

    def issue(self, epoch: int, command: Callable, *args) -> None:
        """Issue a motion command if `epoch` is still current (checked and issued under the lock);
        a running motion of another type is stopped first and the command issued once it ended."""
        for _ in range(3):
            with self.lock:
                self.check(epoch)
                self.check_contact()
                try:
                    command(*args)
                    return
                except MotionTypeBusy:
                    self.arm.stop()
            self.wait_motion(epoch, 5.0)
        raise RuntimeError("the previous motion did not end; the new one was not started")

    def check_contact(self) -> None:
        if self.arm.contact.event.is_set():
            raise Contact(f"contact: |F_z| = {abs(self.arm.contact.force_z):.1f} N")

    def wait(self, epoch: int, done: Callable[[], bool], timeout: float, poll: float = 0.005,
             contact: bool = True) -> bool:
        """Check `done` every `poll` s of wall time until true, or until `timeout` s passed on the
        controller's clock (sim time in the sim graph: a slowed simulator slows the timeout with
        it); checks the epoch (and, with `contact`, the contact reaction) every 5 ms meanwhile.
        `done` is polled on wall time so that a stalled clock cannot hide a motion that ended; a
        clock that stops (no /clock) ends the wait after 10× its timeout of wall time."""
        start = self.clock()
        next_poll = time.monotonic()
        backstop = next_poll + 10 * timeout + 1.0
        while True:
            self.check(epoch)
            if contact:
                self.check_contact()
            wall = time.monotonic()
            if wall >= next_poll:
                if done():
                    return True
                next_poll = wall + poll
            if self.clock() - start >= timeout * 1e9 or wall >= backstop:
                return False
            time.sleep(0.005)

    def wait_motion(self, epoch: int, timeout: float) -> bool:
        """Until the running motion ended (raises its error), contact, or `timeout`."""
        return self.wait(epoch, lambda: self.arm.join(0.0), timeout)

    def arrive(self, epoch: int, target: Pose, timeout: float, here: Callable[[], Pose]) -> None:
        """Until the motion to `target` ended (≤ timeout). If franky's planner fails as the motion
        ends (-111, seen in franky-sim) with the arm already within 2 mm / 0.02 rad, that counts
        as arrived; any other error propagates."""
        try:
            self.wait_motion(epoch, timeout)
        except RuntimeError as err:
            if self.arm.classify(err) != "planner" or not planner.reached(here(), target, 2e-3, 0.02):
                raise

"""The connection to the robot and its fingers: opened, read, dropped.

Invariant: a connection whose robot stopped answering is abandoned, never destroyed (see
FrankyArm.abandon); the commanded gripper state carries over to the next connection.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN, Pose
from graspvla_ros.control.franky_adapter import FrankyArm, RobotState
from graspvla_ros.control.gripper import Fingers
from graspvla_ros.control.settings import ControllerSettings

log = logging.getLogger(__name__)


class Connection:
    def __init__(self, settings: ControllerSettings, on_planned: Callable[[list[Pose]], None]):
        self.settings = settings
        self.on_planned = on_planned
        self.arm: FrankyArm | None = None
        self.fingers: Fingers | None = None

    def open(self, timeout: float) -> None:
        """Connect (retrying for up to `timeout` s while the robot does not answer)."""
        s = self.settings
        arm = FrankyArm(s.robot_ip, realtime=s.realtime, dynamics_factor=s.relative_dynamics_factor,
                        tcp_offset=s.tcp_offset, compliance=s.compliance, contact=s.contact, limit_rate=s.limit_rate,
                        timeout=timeout, dry_run=s.dry_run, on_planned=self.on_planned)
        first = self.fingers is None
        commanded = GRIPPER_OPEN if first else self.fingers.commanded
        self.drop()
        self.fingers = Fingers(arm.gripper, dry_run=s.dry_run)
        if first:  # until the first command (home opens the gripper), assume the state the fingers show
            commanded = GRIPPER_OPEN if self.fingers.width >= s.gripper.open_width / 2 else GRIPPER_CLOSE
        self.fingers.commanded = commanded
        self.arm = arm

    def drop(self, abandon: bool = False) -> None:
        """Let go of the connection (a new one may replace it); `abandon` one whose robot stopped
        answering."""
        fingers, self.fingers = self.fingers, None
        arm, self.arm = self.arm, None
        if fingers is not None:
            fingers.close()
        if arm is not None and abandon:
            arm.abandon()

    def close(self) -> None:
        """Stop the arm and let go (abandoning the connection if the robot does not answer)."""
        answered = True
        if self.arm is not None:
            try:
                self.arm.robot.stop()
            except Exception:  # the robot does not answer: nothing left to stop, and nothing to wait for
                answered = False
        self.drop(abandon=not answered)

    def read(self, stamp_ns: int) -> RobotState:
        arm, fingers = self.arm, self.fingers
        if arm is None or fingers is None:
            raise ConnectionError(f"the robot at {self.settings.robot_ip} is not connected")
        return arm.state(stamp_ns, fingers.width)

    def end_effector_warning(self) -> str:
        """What is wrong with Desk's end effector for the TCP that `tcp_offset` assumes ("" if nothing)."""
        problem = end_effector_problem(self.arm, self.settings.ee_offset)
        return problem and f"{problem}; set the Franka Hand in Desk, or ee_offset to what is mounted"


def end_effector_problem(arm: FrankyArm, ee_offset: float) -> str:
    """What is wrong with the end effector `arm` reports (Desk's setting) for one `ee_offset` m
    along the flange's z ("" if nothing)."""
    offset = arm.end_effector_offset()
    expected = np.array([0.0, 0.0, ee_offset])
    error = float(np.linalg.norm(offset - expected))
    if error <= 1e-3:
        return ""
    return (f"the robot's end effector is {np.round(offset, 4).tolist()} m from the flange, not "
            f"{expected.tolist()} (Desk's end-effector setting): the TCP is off by {error * 1e3:.0f} mm")

"""Homing as a job of the worker: open the gripper, then move to the reset pose (or to a joint
configuration: the camera calibration pose)."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graspvla_ros.chunk import GRIPPER_OPEN, Pose
from graspvla_ros.control.gate import Interrupted
from graspvla_ros.control.state import ControllerState
from graspvla_ros.control.strategies import change_gripper
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY

if TYPE_CHECKING:
    from graspvla_ros.control.arm_controller import ArmController

log = logging.getLogger(__name__)
MOTION_TIMEOUT = 20.0  # s


@dataclass
class HomeJob:
    """A home request for the worker: its epoch, set `done` when it ended, `error` if it failed.
    `joints` (7, rad): go to this joint configuration instead of the reset pose."""

    epoch: int
    joints: tuple[float, ...] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def fail(self, why: str) -> None:
        self.error = why
        self.done.set()


def run_home(ctl: ArmController, job: HomeJob) -> None:
    """The job, start to end; a fault propagates to the worker after the job is marked failed."""
    epoch = job.epoch
    try:
        ctl.recovery.settle_and_recover(epoch)
        result = change_gripper(ctl, epoch, GRIPPER_OPEN, force=True)
        if not result.ok:
            log.warning("home: the gripper did not open (%s); homing the arm anyway", result.detail)
        for attempt in range(2):  # franky's planner can fail to take over a motion just ending (-111)
            try:
                if job.joints is None:
                    ctl.gate.issue(epoch, ctl.arm.move_to, Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY), False)
                else:
                    ctl.gate.issue(epoch, ctl.arm.move_joints, job.joints)
                if not ctl.gate.wait_motion(epoch, MOTION_TIMEOUT):
                    job.error = f"home motion did not finish in {MOTION_TIMEOUT:g} s"
                    return
                break
            except RuntimeError as err:
                if attempt or ctl.arm.classify(err) != "planner":
                    raise
                log.warning("home: %s; trying again", str(err))
        with ctl.gate.lock:
            ctl.gate.check(epoch)
            ctl.order.forget()   # a new start: no chunk stamp or commanded pose carries over
            ctl.last_commanded = None
            ctl.machine.set(ControllerState.IDLE, "homed" if job.joints is None else "at the joint configuration")
    except Interrupted:
        job.error = "home interrupted (e-stop, hold, another home or a fault)"
    except Exception as err:  # a fault: the worker reacts to it
        job.error = str(err)
        raise
    finally:
        job.done.set()

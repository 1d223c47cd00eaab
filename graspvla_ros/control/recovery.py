"""Every fault of the robot ends in a defined controller state, never in a dead worker.

What the controller does for each kind franky's exceptions are classified as
(`FrankyArm.classify`), as a real Franka behaves (libfranka 0.21, franky 2.0):

- reflex: once the motion has ended, recover (only with errors present, checked) and hold;
  the next chunk moves on. `max_reflexes` within `reflex_window` s give FAULT instead.
- user_stop: USER_STOPPED, chunks refused (`user_stopped`) until the robot reports the stop
  released; then recover and IDLE (a new history).
- network: DISCONNECTED, chunks refused (`disconnected`); a new connection is tried every
  second; once the robot answers: recover, IDLE (an e-stop latched meanwhile stays latched).
- busy (the robot refused a command while a motion still ran): wait for the motion to end,
  then as reflex.
- planner (franky's own trajectory planner failed, not the robot): hold where the arm is.
- motion_type: stop the running motion with its own type of stop, hold.
- rejected, fatal: FAULT with the reason, until `~/recover`.
- contact (franky's reaction fired inside the 1 kHz loop and is backing the arm off): wait for
  the retreat to end (re-issuing it if a chunk's motion replaced it), then IDLE: a new history.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from graspvla_ros.chunk import Pose
from graspvla_ros.control.franky_adapter import RobotFault
from graspvla_ros.control.gate import Interrupted
from graspvla_ros.control.state import LATCHED, ControllerState

if TYPE_CHECKING:
    from graspvla_ros.control.arm_controller import ArmController

log = logging.getLogger(__name__)
RECONNECT_PERIOD = 1.0  # s between connection attempts while the robot does not answer
SETTLE_TIMEOUT = 5.0    # s a motion may take to end before a recovery


class Recovery:
    def __init__(self, ctl: ArmController):
        self.ctl = ctl
        self._reflexes: deque[float] = deque()
        self._next_attempt = 0.0
        self._lost_at = 0.0

    def handle(self, err: BaseException) -> None:
        """React to an exception a job (or the supervision between jobs) raised."""
        ctl = self.ctl
        kind = "network" if ctl.arm is None else ctl.arm.classify(err)
        log.warning("robot fault (%s): %s: %s", kind, type(err).__name__, str(err))
        ctl.faults[kind] += 1
        if kind == "network":
            self.disconnected(err)
        elif kind == "user_stop":
            ctl.interrupt(ControllerState.USER_STOPPED, f"user stop pressed ({err}): release it to go on")
        elif kind in ("reflex", "busy"):
            self.reflex(err)
        elif kind == "planner":
            log.warning("the motion it refused: %s", ctl.arm.last_motion())
            self.hold(f"motion planner failed ({err})")
        elif kind == "motion_type":
            with ctl.gate.lock:
                ctl.arm.stop()
            self.hold(f"motion type clash ({err})")
        else:
            ctl.interrupt(ControllerState.FAULT, f"{type(err).__name__}: {err}")

    def hold(self, why: str) -> None:
        self.ctl.interrupt(ControllerState.HOLDING, why)

    def reflex(self, err: BaseException) -> None:
        ctl = self.ctl
        ctl.reflex_count += 1
        now = time.monotonic()
        self._reflexes.append(now)
        while self._reflexes and now - self._reflexes[0] > ctl.settings.reflex_window:
            self._reflexes.popleft()
        flags = ", ".join(ctl.arm.last_motion_errors()) or str(err)
        if len(self._reflexes) >= ctl.settings.max_reflexes:
            ctl.interrupt(ControllerState.FAULT, f"{len(self._reflexes)} reflexes within "
                                                 f"{ctl.settings.reflex_window:g} s (last: {flags})")
            return
        epoch = ctl.interrupt(ControllerState.HOLDING, f"reflex ({flags}): recovering")
        try:
            self.settle_and_recover(epoch)
        except Interrupted:
            return
        except Exception as again:  # the recovery failed too: its own kind decides
            self.handle(again)
            return
        ctl.set_if_current(epoch, ControllerState.HOLDING, f"recovered from a reflex ({flags}); holding")

    def settle_and_recover(self, epoch: int) -> None:
        """Recover only once no motion runs (the robot refuses it otherwise) and only with errors
        present; raises RobotFault when the robot refuses or errors remain."""
        ctl = self.ctl
        if not ctl.gate.wait(epoch, lambda: not ctl.arm.moving(), SETTLE_TIMEOUT, contact=False):
            with ctl.gate.lock:
                ctl.arm.stop()
            if not ctl.gate.wait(epoch, lambda: not ctl.arm.moving(), SETTLE_TIMEOUT, contact=False):
                raise RobotFault("fatal", "the motion did not end; no recovery possible")
        ctl.arm.recover()

    # --- between jobs -----------------------------------------------------------------------
    def supervise(self) -> None:
        """Between jobs: the robot's mode (a user stop released, a lost link) and motion errors."""
        ctl = self.ctl
        state = ctl.state
        if state == ControllerState.USER_STOPPED:
            if ctl.arm.robot_mode() != "UserStopped":
                epoch = ctl.machine.epoch
                ctl.arm.recover()
                ctl.set_if_current(epoch, ControllerState.IDLE, "user stop released: start a new history")
            else:
                time.sleep(0.05)
            return
        ctl.arm.robot_mode()  # a read: raises NetworkException when the robot stopped answering
        if state in (ControllerState.RUNNING, ControllerState.HOLDING):
            ctl.arm.poll()

    def disconnected(self, err: BaseException) -> None:
        ctl = self.ctl
        self._lost_at = time.monotonic()
        self._next_attempt = self._lost_at + RECONNECT_PERIOD
        ctl.connection.drop(abandon=True)
        with ctl.gate.lock:
            latched = ctl.state == ControllerState.ESTOPPED
        if not latched:
            ctl.interrupt(ControllerState.DISCONNECTED, f"robot not answering ({err}): reconnecting")

    def reconnect(self) -> None:
        """One connection attempt a second while the robot does not answer."""
        ctl = self.ctl
        if time.monotonic() < self._next_attempt:
            time.sleep(0.05)
            return
        self._next_attempt = time.monotonic() + RECONNECT_PERIOD
        try:
            ctl.connection.open(timeout=0.0)
            ctl.arm.recover()
        except Exception as err:  # still away (NetworkException), or the recovery refused
            log.debug("reconnect: %s", str(err))
            if ctl.arm is not None and ctl.arm.classify(err) == "user_stop":
                ctl.interrupt(ControllerState.USER_STOPPED, f"reconnected; user stop pressed ({err})")
            else:
                ctl.connection.drop(abandon=True)
            return
        away = time.monotonic() - self._lost_at
        with ctl.gate.lock:
            if ctl.state == ControllerState.DISCONNECTED:
                ctl.machine.interrupt(ControllerState.IDLE, f"reconnected after {away:.1f} s: start a new history")
        log.info("robot answers again after %.1f s", away)

    # --- contact --------------------------------------------------------------------------------
    def retreat(self, why: str) -> None:
        """franky's contact reaction is backing the arm off: let it finish, make sure it did,
        then IDLE (the official reaction: a new history)."""
        ctl = self.ctl
        lift = ctl.settings.contact.lift
        ctl.contact_count += 1
        where = ctl.arm.contact.where
        ctl.arm.contact.event.clear()
        with ctl.gate.lock:
            if ctl.state in LATCHED:
                return
            epoch = ctl.machine.interrupt(ControllerState.HOLDING, f"{why}: backing off {lift * 100:.0f} cm")
            ctl.slot.clear()
            ctl.retreating = True
        try:
            ctl.gate.wait(epoch, lambda: not ctl.arm.moving(), SETTLE_TIMEOUT, contact=False)
            ctl.arm.recover()
            if where is not None and ctl.read_state().ee.translation_to(where) < 0.8 * lift:
                # a chunk's motion replaced the reaction's retreat before it was seen: back off here
                away = Pose(ctl.limits.clamp_position(where.position + where.rotation @ np.array([0.0, 0.0, -lift])),
                            where.rotation)
                ctl.gate.issue(epoch, ctl.arm.move_to, away, False)
                ctl.gate.wait(epoch, lambda: not ctl.arm.moving(), SETTLE_TIMEOUT, contact=False)
            ctl.set_if_current(epoch, ControllerState.IDLE, "backed off from the contact: start a new history")
        except Interrupted:
            pass
        finally:
            ctl.retreating = False

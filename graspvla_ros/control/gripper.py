"""Gripper settings (the official client's by default) and the fingers' driver.

Invariants: `commanded` is the last gripper state the controller COMMANDED (+1 open, −1 closed),
what the policy gets as proprio, changed when a command is sent (as the official client records
it); every gripper call runs on the driver's own thread, so `run` returns within the timeout
even when the gripper does not answer (franky's grasp/move calls block behind the previous
command); a failure or a timeout is returned, never swallowed; `width` is a cached reading,
refreshed by a poller thread, so reading it never waits on the gripper.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN
from graspvla_ros.settings import setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GripperSettings:
    """The controller's `gripper.*` parameters. Defaults: the official real-robot client
    (close = grasp(0.04, 0.2 m/s, 30 N, ε ±0.04); open = move(0.08, 0.1 m/s))."""

    grasp_width: float = setting(0.04, "m, width a close command grasps at (official 0.04)")
    grasp_speed: float = setting(0.2, "m/s, finger speed of a close")
    force: float = setting(30.0, "N, grasp force")
    epsilon_inner: float = setting(0.04, "m, grasp succeeds if the final width is within grasp_width − inner … + outer")
    epsilon_outer: float = setting(0.04, "m, grasp succeeds if the final width is within grasp_width − inner … + outer")
    open_width: float = setting(0.08, "m, width of an open command")
    open_speed: float = setting(0.1, "m/s, finger speed of an open")
    timeout: float = setting(2.0, "s a gripper change may take (arm held meanwhile) before the chunk goes on without it")


@dataclass(frozen=True)
class GripperResult:
    """How a gripper change ended: `ok`, or why not (`detail`)."""

    ok: bool
    detail: str = ""


class Fingers:
    def __init__(self, gripper, dry_run: bool = False) -> None:
        self._gripper = gripper
        self.dry_run = dry_run  # the change is commanded (and announced) but the fingers are not moved
        self.commanded = GRIPPER_OPEN
        self.width = float(gripper.width)
        self._jobs: queue.Queue = queue.Queue()
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._driver = threading.Thread(target=self._drive, name="gripper", daemon=True)
        self._driver.start()
        self._poller = threading.Thread(target=self._poll, name="gripper-width", daemon=True)
        self._poller.start()

    def run(self, command: float, settings: GripperSettings) -> GripperResult:
        """Make the change and wait for it, at most `settings.timeout` s. A grasp that closes on
        nothing (no object) still counts as commanded closed."""
        self.commanded = command
        if self.dry_run:
            return GripperResult(True, "dry run: not sent")
        if self._busy.is_set():
            return GripperResult(False, "the previous gripper command has not finished")
        done, result = threading.Event(), []
        self._busy.set()
        self._jobs.put((command, settings, done, result))
        if not done.wait(settings.timeout):
            return GripperResult(False, f"did not finish within {settings.timeout:g} s")
        return result[0]

    def _drive(self) -> None:
        while (job := self._jobs.get()) is not None:
            command, settings, done, result = job
            try:
                if command == GRIPPER_CLOSE:
                    self._gripper.grasp(settings.grasp_width, settings.grasp_speed, settings.force,
                                        settings.epsilon_inner, settings.epsilon_outer)
                else:
                    self._gripper.move(settings.open_width, settings.open_speed)
                result.append(GripperResult(True))
            except Exception as err:  # GripperException, CommandException, NetworkException: reported
                result.append(GripperResult(False, f"{type(err).__name__}: {err}"))
            finally:
                self._busy.clear()
                done.set()

    def close(self) -> None:
        """Stop the poller and the driver (a call stuck on a gripper that does not answer is left
        to its own timeout: the thread is a daemon)."""
        self._stop.set()
        self._jobs.put(None)
        self._poller.join(timeout=2.0)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.width = float(self._gripper.width)
            except Exception as err:  # disconnected: keep the last width, try again
                log.debug("gripper width: %s", str(err))

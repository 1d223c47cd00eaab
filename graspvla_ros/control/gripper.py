"""Gripper settings (the official client's by default) and the fingers' driver.

Invariants: `commanded` is the last gripper state the controller COMMANDED (+1 open, −1 closed),
what the policy gets as proprio, changed only when a command was sent; a command runs to
completion (or its timeout) before `run` returns, because the arm is held meanwhile; `width`
is a cached reading, refreshed by a poller thread, so reading it never waits on the gripper.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GripperSettings:
    """Defaults: the official real-robot client (close = grasp(0.04, 0.2 m/s, 30 N, ε ±0.04);
    open = move(0.08, 0.1 m/s))."""

    grasp_width: float = 0.04    # m, commanded width of a grasp
    grasp_speed: float = 0.2     # m/s
    force: float = 30.0          # N
    epsilon_inner: float = 0.04  # m
    epsilon_outer: float = 0.04  # m
    open_width: float = 0.08     # m
    open_speed: float = 0.1      # m/s
    timeout: float = 2.0         # s a change may take before the arm goes on without it

    @classmethod
    def from_params(cls, params: dict) -> GripperSettings:
        """From node parameters: the `gripper.<field>` entries (others are ignored)."""
        return cls(**{k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("gripper.")})


class Fingers:
    def __init__(self, gripper) -> None:
        self._gripper = gripper
        self.commanded = GRIPPER_OPEN
        self.width = float(gripper.width)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gripper-width", daemon=True)
        self._poller.start()

    def run(self, command: float, settings: GripperSettings) -> bool:
        """Make the change and wait for it (≤ settings.timeout); True if it finished in time.
        A grasp that closes on nothing (no object) still counts as commanded closed."""
        if command == GRIPPER_CLOSE:
            future = self._gripper.grasp_async(settings.grasp_width, settings.grasp_speed, settings.force,
                                               settings.epsilon_inner, settings.epsilon_outer)
        else:
            future = self._gripper.move_async(settings.open_width, settings.open_speed)
        self.commanded = command
        try:
            return bool(future.wait(settings.timeout))
        except Exception as err:  # GripperException/CommandException: reported, the arm loop goes on
            log.warning("gripper command %+.0f failed: %s", command, err)
            return False

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=2.0)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.width = float(self._gripper.width)
            except Exception as err:  # disconnected: keep the last width, try again
                log.debug("gripper width: %s", err)

"""The controller's state machine and the one lock that guards it.

Invariants:
- the state, the motion epoch and every robot motion command change under `lock` (the
  executor issues every franky motion under it, after checking its epoch is current), so once
  `estop` has returned, no motion other than its stop reaches the robot;
- `stopped_ns` (the clock's time chunks last stopped running: any interruption, any state
  other than RUNS_CHUNKS entered) changes with the state, under the lock (control.order);
- listeners never run under the lock: transitions are queued and delivered in order on a
  notifier thread, so a slow subscriber (state publishing, logging) cannot stall the arm.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from graspvla_ros.interfaces import ControllerState

log = logging.getLogger(__name__)


# States that refuse chunks, with the rejection reason.
REFUSING = {ControllerState.HOMING: "homing", ControllerState.GRIPPER: "gripper_busy",
            ControllerState.ESTOPPED: "estopped", ControllerState.FAULT: "fault",
            ControllerState.USER_STOPPED: "user_stopped", ControllerState.DISCONNECTED: "disconnected"}
# States that last until the operator or the robot ends them: hold, home and moves are refused.
LATCHED = (ControllerState.ESTOPPED, ControllerState.FAULT, ControllerState.USER_STOPPED, ControllerState.DISCONNECTED)

# States in which chunks run (a gripper change is part of one); entering any other is a stop.
RUNS_CHUNKS = (ControllerState.RUNNING, ControllerState.GRIPPER)

Listener = Callable[[ControllerState, str], None]


class StateMachine:
    """Current state + epoch under one lock; `epoch` counts interruptions (e-stop, hold, home,
    contact), so work started under an older epoch knows it was overtaken."""

    def __init__(self, initial: ControllerState = ControllerState.IDLE, clock: Callable[[], int] = time.monotonic_ns):
        self.lock = threading.Lock()
        self.state = initial
        self.epoch = 0
        self._clock = clock
        self.stopped_ns = clock()   # when chunks last stopped running (control.order)
        self.listeners: list[Listener] = []
        self._events: queue.Queue[tuple[Callable[..., None], tuple] | None] = queue.Queue()
        self._notifier = threading.Thread(target=self._notify_loop, name="controller-state", daemon=True)
        self._notifier.start()

    def set(self, state: ControllerState, why: str, announce: bool = False) -> None:
        """Change state (call with `lock` held); listeners hear of it later, in order. With
        `announce`, they hear of it even when the state stays (a new reason: recovered, holding)."""
        if state != self.state or announce:
            if state not in RUNS_CHUNKS:
                self.stopped_ns = self._clock()
            self.state = state
            self.notify(self._announce, state, why)

    def interrupt(self, state: ControllerState, why: str) -> int:
        """Change state and start a new epoch (call with `lock` held); returns the new epoch."""
        self.epoch += 1
        self.stopped_ns = self._clock()
        self.set(state, why)
        return self.epoch

    def current(self, epoch: int) -> bool:
        return epoch == self.epoch

    def notify(self, fn: Callable[..., None], *args) -> None:
        """Run `fn(*args)` on the notifier thread, after everything queued before it."""
        self._events.put((fn, args))

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued so far was delivered (tests, shutdown)."""
        done = threading.Event()
        self.notify(done.set)
        done.wait(timeout)

    def close(self) -> None:
        self._events.put(None)
        self._notifier.join(timeout=2.0)

    def _announce(self, state: ControllerState, why: str) -> None:
        log.info("controller %s (%s)", state.value, why)
        for listener in list(self.listeners):
            listener(state, why)

    def _notify_loop(self) -> None:
        while (event := self._events.get()) is not None:
            fn, args = event
            try:
                fn(*args)
            except Exception:  # a broken listener must not stop the others or the arm
                log.exception("controller listener failed")

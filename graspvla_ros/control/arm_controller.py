"""The arm controller: runs chunks on a franky arm with the official grasp semantics, safely.

One worker thread owns every job that moves the arm (chunks, home, retreats, recoveries), so ROS
callbacks never block on the robot; its parts are the motion gate, the strategies, homing and
the reaction to each fault (`recovery`). Invariants (control.state, control.gate): every motion
is issued under the state lock while the job's epoch is current, and e-stop, hold, home, faults
and contact start a new epoch under that lock; every exception a job raises ends in a defined
state, never in a dead worker; `close` joins the worker before the robot is let go.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from graspvla_ros.chunk import GRIPPER_OPEN, ActionChunk, Pose
from graspvla_ros.control.franky_adapter import FrankyArm, RobotState
from graspvla_ros.control.gate import Contact, Interrupted, MotionGate
from graspvla_ros.control.connection import Connection
from graspvla_ros.control.homing import HomeJob, run_home
from graspvla_ros.control.order import ChunkOrder
from graspvla_ros.control.recovery import Recovery
from graspvla_ros.control.settings import ControllerSettings, Timing
from graspvla_ros.control.slot import ChunkSlot
from graspvla_ros.control.state import LATCHED, REFUSING, ControllerState, StateMachine
from graspvla_ros.control.strategies import ChunkStrategy, Strategy, create
from graspvla_ros.latency import CONTROLLER_STAGES, LatencyWindow
from graspvla_ros.safety import ChunkRejected, RejectionLog

log = logging.getLogger(__name__)
NEVER = 2**63 - 1


class ArmController:
    """Executes chunks on a franky robot; a context manager that connects and disconnects.

    `clock` gives the time chunks are stamped in and due times are compared with: the node's
    clock (ROS time, sim time in the sim graph), the same clock as the chunks' stamps.
    """

    def __init__(self, settings: ControllerSettings, clock: Callable[[], int] = time.monotonic_ns,
                 timing: Timing = Timing()):
        self.settings = settings
        self.limits = settings.safety
        self.host = settings.robot_ip
        self.clock = clock
        self.timing = timing
        self.rejections = RejectionLog()
        self.latency = LatencyWindow(CONTROLLER_STAGES, settings.latency_window)   # ms after the exposure
        self.faults: Counter[str] = Counter()
        self.reflex_count = self.contact_count = self.gripper_failures = 0
        self.on_gripper_command: Callable[[float], None] = lambda command: None
        self.on_commanded: Callable[[Pose], None] = lambda pose: None
        self.on_planned: Callable[[list[Pose]], None] = lambda poses: None  # every motion's TCP path
        self.ee_warning = ""
        self.machine = StateMachine(clock=clock)
        self.order = ChunkOrder()
        self.flush = self.machine.flush  # until every transition so far was delivered to the listeners
        self._lock = self.machine.lock
        self.slot = ChunkSlot(self._lock)
        self.gate = MotionGate(self.machine, lambda: self.connection.arm, clock)
        self.recovery = Recovery(self)
        self.strategy = settings.strategy
        self.connection = Connection(settings, lambda poses: self.machine.notify(self.on_planned, poses))
        self.last_chunk_ns = 0
        self.last_commanded: Pose | None = None  # official_blocking chains from it
        self.still_since_ns = 0  # when the arm last came to rest after a job (official_blocking)
        self._home_job: HomeJob | None = None
        self.retreating = False
        self._running = False
        self._worker: threading.Thread | None = None

    # --- connection -------------------------------------------------------------------
    def connect(self, timeout: float = 0.0) -> ArmController:
        """Connect, retrying refused or timed-out connections for up to `timeout` s (a robot or
        simulator still starting); protocol mismatches fail at once."""
        self.connection.open(timeout)
        self.ee_warning = self.connection.end_effector_warning()
        if self.ee_warning:
            log.warning(self.ee_warning)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="franka-worker", daemon=True)
        self._worker.start()
        try:
            self.arm.recover()
        except Exception as err:  # a user stop pressed, errors that stay: the state says so
            self._safely(self.recovery.handle, err)
        return self

    def close(self) -> None:
        """Stop the worker (it finishes its current wait), then stop the arm and let go."""
        with self._lock:
            self._running = False
            self.machine.epoch += 1
            self.slot.wake()
            home, self._home_job = self._home_job, None
        if home is not None:
            home.fail("the controller closed")
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            if self._worker.is_alive():
                log.error("franka worker did not stop; the robot connection stays open")
                return
        self.connection.close()
        self.machine.close()

    def __enter__(self) -> ArmController:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------
    @property
    def state(self) -> ControllerState:
        return self.machine.state

    @property
    def arm(self) -> FrankyArm | None:
        return self.connection.arm

    @property
    def connected(self) -> bool:
        return self.arm is not None

    @property
    def strategy(self) -> Strategy:
        return self._strategy.strategy

    @strategy.setter
    def strategy(self, name: str | Strategy) -> None:
        self._strategy: ChunkStrategy = create(name)

    @property
    def gripper_command(self) -> float:
        """The last gripper state commanded (+1 open, −1 closed)."""
        fingers = self.connection.fingers
        return fingers.commanded if fingers is not None else GRIPPER_OPEN

    def add_state_listener(self, listener: Callable[[ControllerState, str], None]) -> None:
        """`listener(state, why)` on every transition, on the notifier thread (never under the lock)."""
        self.machine.listeners.append(listener)

    def read_state(self) -> RobotState:
        return self.connection.read(self.clock())

    def apply(self, name: str, value) -> None:
        """A live parameter (`relative_dynamics_factor`, `safety.*`), from the next motion on; a bad
        value raises ValueError and changes nothing."""
        if name == "relative_dynamics_factor":
            self.settings = dataclasses.replace(self.settings, relative_dynamics_factor=value)  # checks it
            if self.arm is not None:
                self.arm.set_dynamics_factor(value)
        else:
            self.limits = dataclasses.replace(self.limits, **{name.removeprefix("safety."): value})
            self.settings = dataclasses.replace(self.settings, safety=self.limits)
        self.connection.settings = self.settings

    # --- commands ---------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> None:
        """Accept a chunk for execution or raise ChunkRejected with the reason."""
        now = self.clock()
        try:
            with self._lock:
                state = self.machine.state
                if state in REFUSING:
                    raise ChunkRejected(REFUSING[state], f"controller is {state.value}")
                if self.retreating:
                    raise ChunkRejected("retreating", "backing off from a contact")
                self._strategy.admit(self, chunk)
                self.order.admit_ids(chunk, self.machine.stopped_ns)
                self.limits.check(chunk, now, self.order.last_stamp_ns)
                self.order.admit_stamp(chunk, self.machine.stopped_ns)
                self.order.accepted(chunk)
                self.last_chunk_ns = now
                self.slot.put(chunk)
        except ChunkRejected as rejection:
            if self.rejections.record(rejection.reason) and rejection.reason != "moving":  # "moving": by design
                log.warning("chunk rejected: %s", rejection)
            raise
        self.rejections.accepted()

    def estop(self) -> None:
        """Latched stop: the arm decelerates to rest now (with the stop motion of the running
        motion's type); every chunk is refused until `release`. The stop is issued under the lock
        after the new epoch began, so no later motion of an older job can overwrite it. With the
        robot not answering, the robot has stopped itself; the e-stop stays latched."""
        with self._lock:
            self._stop(ControllerState.ESTOPPED, "e-stop requested")

    def hold(self) -> None:
        """Stop the current motion, drop the pending chunk, hold the pose; later chunks run again."""
        with self._lock:
            self._refuse_if_latched("hold")
            self._stop(ControllerState.HOLDING, "hold requested")

    def release(self) -> None:
        """End an e-stop: IDLE (DISCONNECTED while the robot does not answer)."""
        with self._lock:
            if self.machine.state == ControllerState.ESTOPPED:
                self.order.forget()
                self.machine.interrupt(ControllerState.DISCONNECTED if self.arm is None else ControllerState.IDLE,
                                       "e-stop released")

    def recover(self) -> None:
        """Clear a FAULT (operator action): recover the robot's errors, then IDLE."""
        with self._lock:
            if self.machine.state != ControllerState.FAULT:
                return
            epoch = self.machine.epoch
        if self.arm is None:
            raise ConnectionError(f"the robot at {self.host} is not connected")
        self.arm.recover()
        self.set_if_current(epoch, ControllerState.IDLE, "recovered by the operator")

    def request_home(self, joints: Sequence[float] | None = None) -> HomeJob:
        """Start homing (open the gripper, then move to the reset pose, or to the joint
        configuration `joints`) on the worker; chunks are refused until it ends. Returns the job,
        whose `done` is set when it ended."""
        if joints is not None and (len(joints) != 7 or not np.all(np.isfinite(joints))):
            raise ValueError(f"joints must be 7 finite angles (rad), got {list(joints)}")
        with self._lock:
            self._refuse_if_latched("home")
            why = "homing" if joints is None else "moving to a joint configuration"
            job = HomeJob(self.machine.interrupt(ControllerState.HOMING, why),
                          None if joints is None else tuple(float(q) for q in joints))
            self.slot.clear()  # the home motion replaces the running one; no older job can issue another
            self._home_job = job
            self.slot.wake()
        return job

    def home(self, timeout: float = 30.0, joints: Sequence[float] | None = None) -> None:
        """Home (or go to `joints`) and wait for it (and for its transitions to reach the
        listeners); raises if it was interrupted or failed."""
        job = self.request_home(joints)
        if not job.done.wait(timeout):
            raise TimeoutError(f"home did not finish in {timeout} s")
        self.flush()
        if job.error:
            raise RuntimeError(job.error)

    def move_to(self, pose: Pose, timeout: float = 10.0) -> None:
        """Blocking move of the TCP to an absolute base-frame pose (clamped into the workspace),
        for tests and set-up: like `hold`, it ends the chunk under way first (state HOLDING). A
        set-up move goes where it is told: no contact reaction (the robot's reflexes still apply)."""
        with self._lock:
            self._refuse_if_latched("move")
            epoch = self.machine.interrupt(ControllerState.HOLDING, "moving to a set pose")
            self.slot.clear()
        try:
            self.gate.issue(epoch, self.arm.move_to, Pose(self.limits.clamp_position(pose.position), pose.rotation), False)
            self.gate.wait_motion(epoch, timeout)
        except Interrupted:
            raise RuntimeError("move interrupted (e-stop, hold, home or a fault)") from None
        self.flush()

    def _refuse_if_latched(self, what: str) -> None:
        if self.machine.state in LATCHED:
            raise RuntimeError(f"cannot {what} while {self.machine.state.value}")

    def _stop(self, state: ControllerState, why: str) -> None:
        """A new epoch in `state`, the pending chunk dropped, the stop motion issued (call with the
        lock held); a stop the robot refuses or cannot hear is said (rare: logged under the lock),
        and the worker sees why."""
        self.machine.interrupt(state, why)
        self.slot.clear()
        try:
            if self.arm is None:
                raise ConnectionError("not connected")
            self.arm.stop()
        except Exception as err:  # the robot refused or is gone
            log.warning("%s: the stop motion failed (%s); the robot's own reaction stops the arm", why, err)

    # --- for the worker's parts -------------------------------------------------------
    def interrupt(self, state: ControllerState, why: str) -> int:
        """A new epoch in `state` (a fault or its recovery), the pending chunk dropped; an e-stop
        latched meanwhile is not overwritten. Returns the epoch."""
        with self._lock:
            if self.machine.state == ControllerState.ESTOPPED and state != ControllerState.ESTOPPED:
                return self.machine.epoch
            self.slot.clear()
            self.order.forget()
            return self.machine.interrupt(state, why)

    def set_if_current(self, epoch: int, state: ControllerState, why: str) -> None:
        """The end of a fault's reaction, announced with its reason, unless something newer began."""
        with self._lock:
            if self.machine.current(epoch):
                self.machine.set(state, why, announce=True)

    # --- worker -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                self.slot.wait(0.01)
                if not self._running:
                    return
                home, self._home_job = self._home_job, None
                self._watchdog()
                chunk = None if home or self.arm is None else self.slot.take()
                epoch = self.machine.epoch
                if home or chunk is not None:
                    self.still_since_ns = NEVER
            try:
                if self.arm is None:
                    if home is not None:
                        home.fail(f"the robot at {self.host} is not connected")
                    self.recovery.reconnect()
                    continue
                self.gate.check_contact()
                if home is not None:
                    run_home(self, home)
                elif chunk is not None:
                    self._run_chunk(chunk, epoch)
                else:
                    self.recovery.supervise()
                    continue
            except Interrupted:
                pass
            except Contact as contact:
                self._safely(self.recovery.retreat, str(contact))
            except Exception as err:  # every robot fault ends in a state: recovery decides which
                self._safely(self.recovery.handle, err)
            with self._lock:
                self.still_since_ns = self.clock()

    def _run_chunk(self, chunk: ActionChunk, epoch: int) -> None:
        self._strategy.execute(self, chunk, epoch)

    def _safely(self, reaction: Callable, *args) -> None:
        """Run a fault reaction; if it fails itself, FAULT with the reason (the worker lives on)."""
        try:
            reaction(*args)
        except Exception as err:
            log.exception("the reaction to a fault failed")
            self.interrupt(ControllerState.FAULT, f"fault reaction failed: {type(err).__name__}: {err}")

    def _watchdog(self) -> None:
        """No fresh chunk for hold_timeout (a policy or link gone): hold as `hold` does, the running
        motion stopped now, so HOLDING always means the arm decelerates to rest (under the lock: no
        chunk slips in between the decision and the stop)."""
        if self.machine.state == ControllerState.RUNNING and \
                self.clock() - self.last_chunk_ns > self.limits.hold_timeout * 1e9:
            self._stop(ControllerState.HOLDING, f"no chunk for {self.limits.hold_timeout} s")


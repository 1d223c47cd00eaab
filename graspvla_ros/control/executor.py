"""The executor: runs chunks on a franky arm with the official grasp semantics, safely.

One worker thread owns every job that moves the arm (chunks, home, contact retreats), so ROS
callbacks never block on the robot. Strategies:

- ``streaming`` (default): steps already due are dropped (latency compensation, never dropping a
  gripper change); the rest become ONE waypoint motion that passes each target at its due time
  with the path's velocity, replaced asynchronously by the next chunk (no stop between chunks).
- ``official_blocking``: the official blocking client: each waypoint in turn, ≤ step_timeout
  toward step_tolerance, then ≤ settle_timeout to settle_tolerance at the chunk's end; chains
  (clips) from the last COMMANDED waypoint; no latency compensation. The arm waits for the
  model: a chunk whose images were taken before the last job ended is refused (`moving`).
- ``official_nonblocking``: the chunk's last waypoint at once.

In every strategy a gripper change is gated by position: the arm goes to the waypoint that
carries it and comes to rest there (≤ reach_timeout), holds while the fingers move (≤
gripper.timeout), and only then goes on with the rest of the chunk. Meanwhile the state is
GRIPPER and chunks are refused (`gripper_busy`), so a newer chunk never cancels the change.

Invariants (see control.state): every motion is issued under the state lock after checking
that the job's epoch is current; e-stop, hold, home and contact start a new epoch under that
lock, so work of an older epoch can no longer move the arm; listeners run on the notifier
thread, never under the lock; `close` joins the worker before the robot is let go.
"""
from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN, ActionChunk, Pose, Waypoint
from graspvla_ros.control import planner
from graspvla_ros.control.franky_adapter import Compliance, FrankyArm, MotionTypeBusy, RobotState
from graspvla_ros.control.gripper import Fingers, GripperSettings
from graspvla_ros.control.slot import ChunkSlot
from graspvla_ros.control.state import REFUSING, ControllerState, StateMachine
from graspvla_ros.safety import ChunkRejected, RejectionLog, SafetyLimits

log = logging.getLogger(__name__)

# GraspVLA's reset pose (official real-robot client), for the TCP described in docs/interfaces.md.
HOME_POSITION = (0.36307, -0.00142, 0.48912)
HOME_RPY = (-np.pi, 0.0, np.pi / 4)


class Strategy(str, enum.Enum):
    STREAMING = "streaming"
    OFFICIAL_BLOCKING = "official_blocking"
    OFFICIAL_NONBLOCKING = "official_nonblocking"


@dataclass(frozen=True)
class Timing:
    """Waits of the official client (s, m, rad)."""

    step_timeout: float = 0.1                 # official_blocking: per waypoint, toward step_tolerance
    step_tolerance: tuple[float, float] = (0.01, math.radians(10))
    settle_timeout: float = 2.0               # official_blocking: at the chunk's end
    settle_tolerance: tuple[float, float] = (0.005, math.radians(5))
    reach_timeout: float = 1.0                # to reach the waypoint carrying a gripper change (after its due time)


@dataclass(frozen=True)
class ContactSettings:
    """The official reaction to contact: |F_z| above `force_limit` or a robot error → recover,
    lift `lift` m with up to `jitter` m of random xy, and ask for a new history (IDLE)."""

    force_limit: float = 15.0  # N
    lift: float = 0.05         # m
    jitter: float = 0.01       # m


@dataclass
class HomeJob:
    """A home request for the worker: its epoch, set `done` when it ended, `error` if it failed.
    `joints` (7, rad): go to this joint configuration instead of the reset pose (the camera
    calibration pose)."""

    epoch: int
    joints: tuple[float, ...] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""


class _Interrupted(Exception):
    """The job's epoch was overtaken (e-stop, hold, home, contact): stop working on it."""


class _Contact(Exception):
    """An external force above the limit was measured."""


_NEVER = 2**63 - 1


def _monotonic_ns() -> int:
    return time.monotonic_ns()


class FrankaExecutor:
    """Executes chunks on a franky robot; a context manager that connects and disconnects.

    `clock` gives the time chunks are stamped in and due times are compared with: the node's
    clock (ROS time, sim time in the sim graph), the same clock as the chunks' stamps.
    """

    def __init__(self, host: str, *, strategy: Strategy | str = Strategy.STREAMING,
                 limits: SafetyLimits = SafetyLimits(), gripper: GripperSettings = GripperSettings(),
                 realtime: bool = False, dynamics_factor: float = 0.3, tcp_offset: float = 0.0,
                 max_recoveries: int = 3, clock: Callable[[], int] = _monotonic_ns,
                 compliance: Compliance = Compliance(), contact: ContactSettings = ContactSettings(),
                 timing: Timing = Timing()):
        self.host = host
        self.strategy = Strategy(strategy)
        self.limits = limits
        self.gripper_settings = gripper
        self.realtime = realtime
        self.dynamics_factor = dynamics_factor
        self.tcp_offset = tcp_offset
        self.max_recoveries = max_recoveries
        self.clock = clock
        self.compliance = compliance
        self.contact = contact
        self.timing = timing
        self.rejections = RejectionLog()
        self.reflex_count = 0
        self.contact_count = 0
        self.on_gripper_command: Callable[[float], None] = lambda command: None
        self._machine = StateMachine()
        self._lock = self._machine.lock
        self._slot = ChunkSlot(self._lock)
        self._arm: FrankyArm | None = None
        self._fingers: Fingers | None = None
        self._last_stamp_ns: int | None = None
        self._last_chunk_ns = 0
        self._last_commanded: Pose | None = None  # official_blocking chains from it
        # official_blocking: when the arm last came to rest after a job; a chunk whose images are
        # older was planned while the arm moved (the official client asks the model only after)
        self._still_since_ns = 0
        self._home_job: HomeJob | None = None
        self._retreating = False
        self._running = False
        self._worker: threading.Thread | None = None
        self._rng = np.random.default_rng()

    # --- connection -------------------------------------------------------------------
    def connect(self, timeout: float = 0.0) -> FrankaExecutor:
        """Connect, retrying refused or timed-out connections for up to `timeout` s (a robot or
        simulator still starting); protocol mismatches fail at once."""
        self._arm = FrankyArm(self.host, realtime=self.realtime, dynamics_factor=self.dynamics_factor,
                              tcp_offset=self.tcp_offset, compliance=self.compliance, timeout=timeout)
        self._fingers = Fingers(self._arm.gripper)
        # until the first command (home opens the gripper), assume the state the fingers show
        self._fingers.commanded = GRIPPER_OPEN if self._fingers.width >= self.gripper_settings.open_width / 2 else GRIPPER_CLOSE
        self._running = True
        self._worker = threading.Thread(target=self._work, name="franka-worker", daemon=True)
        self._worker.start()
        return self

    def close(self) -> None:
        """Stop the worker (it finishes its current wait), then stop the arm and let go."""
        with self._lock:
            self._running = False
            self._machine.epoch += 1
            self._slot.wake()
            home, self._home_job = self._home_job, None
        if home is not None:
            home.error = "the controller closed"
            home.done.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            if self._worker.is_alive():
                log.error("franka worker did not stop; the robot connection stays open")
                return
        if self._arm is not None:
            try:
                self._arm.robot.stop()
            except Exception:  # already stopped or disconnected: nothing left to stop
                pass
        if self._fingers is not None:
            self._fingers.close()
        self._machine.close()
        self._arm = self._fingers = None

    def __enter__(self) -> FrankaExecutor:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------
    @property
    def state(self) -> ControllerState:
        return self._machine.state

    @property
    def gripper_command(self) -> float:
        """The last gripper state commanded (+1 open, −1 closed)."""
        return self._fingers.commanded

    def add_state_listener(self, listener: Callable[[ControllerState, str], None]) -> None:
        """`listener(state, why)` on every transition, on the notifier thread (never under the lock)."""
        self._machine.listeners.append(listener)

    def flush(self) -> None:
        """Until every queued notification was delivered."""
        self._machine.flush()

    def read_state(self) -> RobotState:
        return self._arm.state(self.clock(), self._fingers.width)

    # --- commands ---------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> None:
        """Accept a chunk for execution or raise ChunkRejected with the reason."""
        now = self.clock()
        try:
            with self._lock:
                state = self._machine.state
                if state in REFUSING:
                    raise ChunkRejected(REFUSING[state], f"controller is {state.value}")
                if self._retreating:
                    raise ChunkRejected("retreating", "lifting away from a contact")
                if self.strategy == Strategy.OFFICIAL_BLOCKING and chunk.stamp_ns < self._still_since_ns:
                    raise ChunkRejected("moving", "official_blocking: its images were taken while the arm moved")
                self.limits.check(chunk, now, self._last_stamp_ns)
                self._last_stamp_ns = chunk.stamp_ns
                self._last_chunk_ns = now
                self._slot.put(chunk)
        except ChunkRejected as rejection:
            if self.rejections.record(rejection.reason) and rejection.reason != "moving":  # "moving": by design
                log.warning("chunk rejected: %s", rejection)
            raise
        self.rejections.accepted()

    def estop(self) -> None:
        """Latched stop: the arm decelerates to rest now; every chunk is refused until `release`.
        The stop is issued under the lock after the new epoch began, so no later motion of an
        older job can overwrite it."""
        with self._lock:
            self._machine.interrupt(ControllerState.ESTOPPED, "e-stop requested")
            self._slot.clear()
            error = self._stop_arm()
        if error:
            log.warning("e-stop: %s; recovered", error)

    def hold(self) -> None:
        """Stop the current motion, drop the pending chunk, hold the pose; later chunks run again."""
        with self._lock:
            self._refuse_if_latched("hold")
            self._machine.interrupt(ControllerState.HOLDING, "hold requested")
            self._slot.clear()
            error = self._stop_arm()
        if error:
            log.warning("hold: %s; recovered", error)

    def release(self) -> None:
        with self._lock:
            if self._machine.state == ControllerState.ESTOPPED:
                self._last_stamp_ns = None
                self._machine.interrupt(ControllerState.IDLE, "e-stop released")

    def recover(self) -> None:
        """Clear robot errors after a FAULT (operator action)."""
        self._arm.recover()
        with self._lock:
            if self._machine.state == ControllerState.FAULT:
                self._last_stamp_ns = None
                self._machine.interrupt(ControllerState.IDLE, "recovered by operator")

    def request_home(self, joints: Sequence[float] | None = None) -> HomeJob:
        """Start homing (open the gripper, then move to the reset pose, or to the joint
        configuration `joints`) on the worker; chunks are refused until it ends. Returns the job,
        whose `done` is set when it ended."""
        if joints is not None and (len(joints) != 7 or not np.all(np.isfinite(joints))):
            raise ValueError(f"joints must be 7 finite angles (rad), got {list(joints)}")
        with self._lock:
            self._refuse_if_latched("home")
            why = "homing" if joints is None else "moving to a joint configuration"
            job = HomeJob(self._machine.interrupt(ControllerState.HOMING, why),
                          None if joints is None else tuple(float(q) for q in joints))
            self._slot.clear()  # the home motion replaces the running one; no older job can issue another
            self._home_job = job
            self._slot.wake()
        return job

    def home(self, timeout: float = 30.0, joints: Sequence[float] | None = None) -> None:
        """Home (or go to `joints`) and wait for it; raises if it was interrupted or failed."""
        job = self.request_home(joints)
        if not job.done.wait(timeout):
            raise TimeoutError(f"home did not finish in {timeout} s")
        if job.error:
            raise RuntimeError(job.error)

    def move_to(self, pose: Pose, timeout: float = 10.0) -> None:
        """Blocking move of the TCP to an absolute base-frame pose (clamped into the workspace),
        for tests and set-up: like `hold`, it ends the chunk under way first (state HOLDING)."""
        with self._lock:
            self._refuse_if_latched("move")
            epoch = self._machine.interrupt(ControllerState.HOLDING, "moving to a set pose")
            self._slot.clear()
        try:
            self._issue(epoch, self._arm.move_to, Pose(self.limits.clamp_position(pose.position), pose.rotation))
            self._wait_motion(epoch, timeout)
        except _Interrupted:
            raise RuntimeError("move interrupted (e-stop, hold or home)") from None

    def _refuse_if_latched(self, what: str) -> None:
        if self._machine.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
            raise RuntimeError(f"cannot {what} while {self._machine.state.value}")

    def _stop_arm(self) -> Exception | None:
        """Issue the stop motion (with the lock held; nothing is logged here); returns the motion
        error it recovered from, if any."""
        try:
            self._arm.stop()
        except self._arm.motion_errors as err:
            self._arm.recover()
            return err
        return None

    # --- motion gate ------------------------------------------------------------------
    def _issue(self, epoch: int, command: Callable, *args) -> None:
        """Issue a motion command if `epoch` is still current (checked and issued under the lock).
        If a motion of another type still runs (a joint motion before a Cartesian one: franky
        cannot swap a running motion's type), it is stopped and the command issued once it ended."""
        for _ in range(3):
            with self._lock:
                self._check(epoch)
                try:
                    command(*args)
                    return
                except MotionTypeBusy:
                    self._arm.stop()
            self._wait_motion(epoch, 5.0)
        raise RuntimeError("the previous motion did not end; the new one was not started")

    def _check(self, epoch: int) -> None:
        if not self._machine.current(epoch):
            raise _Interrupted()

    def _wait(self, epoch: int, done: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
        """Check `done` every `poll` s until true or `timeout` s passed, both on the executor's
        clock (sim time in the sim graph: a slowed simulator slows the waits with it); watches
        for contact and the epoch every 5 ms meanwhile. A clock that stops (no /clock) ends
        the wait after 10× its timeout of wall time."""
        start = next_check = self.clock()
        backstop = time.monotonic() + 10 * timeout + 1.0
        while True:
            self._check(epoch)
            self._check_contact()
            now = self.clock()
            if now >= next_check:
                if done():
                    return True
                if now - start >= timeout * 1e9:
                    return False
                next_check = now + round(poll * 1e9)
            if time.monotonic() >= backstop:
                return False
            time.sleep(0.005)

    def _wait_motion(self, epoch: int, timeout: float) -> bool:
        """Until the running motion ended (raises its motion error), contact, or `timeout`."""
        return self._wait(epoch, lambda: self._arm.join(0.0), timeout)

    def _arrive(self, epoch: int, target: Pose, timeout: float) -> None:
        """Until the motion to `target` ended (≤ timeout). If franky's planner fails as the motion
        ends (-111, seen in franky-sim) with the arm already within 2 mm / 0.02 rad, that counts
        as arrived (after recovering); any other error propagates."""
        try:
            self._wait_motion(epoch, timeout)
        except self._arm.motion_errors as err:
            if self._arm.is_robot_error(err) or not planner.reached(self.read_state().ee, target, 2e-3, 0.02):
                raise
            log.warning("motion planner failed at the gripper waypoint (%s); the arm is there, going on", err)
            self._arm.recover()

    # --- worker -----------------------------------------------------------------------
    def _work(self) -> None:
        errors_in_a_row = 0
        while True:
            with self._lock:
                self._slot.wait(0.01)
                if not self._running:
                    return
                home, self._home_job = self._home_job, None
                chunk = None if home else self._slot.take()
                epoch = self._machine.epoch
                self._watchdog()
                if home or chunk is not None:
                    self._still_since_ns = _NEVER
            try:
                if home:
                    self._run_home(home)
                elif chunk is not None:
                    self._run_chunk(chunk, epoch)
                else:
                    self._supervise()
                    continue
                errors_in_a_row = 0  # a job went through
            except _Interrupted:
                pass
            except _Contact as contact:
                self.contact_count += 1
                self._retreat(str(contact))
            except self._arm.motion_errors as err:  # reflex, or franky's planner failing
                self.reflex_count += 1
                errors_in_a_row += 1
                log.warning("motion error (%d in a row): %s", errors_in_a_row, err)
                if errors_in_a_row > self.max_recoveries:
                    self._fault("error recovery failed")
                elif self._arm.is_robot_error(err):
                    self._retreat(f"robot error: {err}")
                else:
                    self._hold_after_planner_error(err)
            with self._lock:
                self._still_since_ns = self.clock()

    def _watchdog(self) -> None:
        """No fresh chunk for hold_timeout: let the motion end at its (at rest) last target and hold."""
        if self._machine.state == ControllerState.RUNNING and \
                self.clock() - self._last_chunk_ns > self.limits.hold_timeout * 1e9:
            self._machine.set(ControllerState.HOLDING, f"no chunk for {self.limits.hold_timeout} s")

    def _supervise(self) -> None:
        """Between jobs: react to contact and to errors of the running motion."""
        if self._machine.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
            return
        self._check_contact()
        if self._machine.state in (ControllerState.RUNNING, ControllerState.HOLDING):
            self._arm.poll()

    def _check_contact(self) -> None:
        if self._retreating:
            return
        fz = float(self._arm.external_force()[2])
        if abs(fz) > self.contact.force_limit:
            raise _Contact(f"contact: |F_z| = {abs(fz):.1f} N > {self.contact.force_limit} N")

    def _hold_after_planner_error(self, err: Exception) -> None:
        """franky's trajectory planner failed (not the robot): recover and hold where the arm is;
        the next chunk runs as usual."""
        with self._lock:
            if self._machine.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
                return
            self._machine.interrupt(ControllerState.HOLDING, f"motion planner failed ({err})")
            self._slot.clear()
        try:
            self._arm.recover()
        except self._arm.motion_errors as again:
            self._fault(f"recovery failed: {again}")

    def _fault(self, why: str) -> None:
        with self._lock:
            self._machine.interrupt(ControllerState.FAULT, why)
            self._slot.clear()

    def _retreat(self, why: str) -> None:
        """Official contact/error reaction: recover, lift `contact.lift` m (small xy jitter), IDLE."""
        with self._lock:
            if self._machine.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
                return
            epoch = self._machine.interrupt(ControllerState.HOLDING, f"{why}: lifting {self.contact.lift * 100:.0f} cm")
            self._slot.clear()
            self._retreating = True
        try:
            for attempt in range(self.max_recoveries + 1):
                try:
                    self._arm.recover()
                    here = self.read_state().ee
                    jitter = self._rng.uniform(-self.contact.jitter, self.contact.jitter, 2)
                    up = Pose(self.limits.clamp_position(here.position + [*jitter, self.contact.lift]), here.rotation)
                    self._issue(epoch, self._arm.move_to, up)
                    self._wait_motion(epoch, 5.0)
                    break
                except self._arm.motion_errors as err:
                    self.reflex_count += 1
                    log.warning("retreat attempt %d failed: %s", attempt + 1, err)
            else:
                self._fault("retreat failed")
                return
            with self._lock:
                if self._machine.current(epoch):
                    self._last_stamp_ns = None
                    self._machine.set(ControllerState.IDLE, "retreated: start a new history")
        except _Interrupted:
            pass
        finally:
            self._retreating = False

    def _run_home(self, job: HomeJob) -> None:
        epoch = job.epoch
        try:
            self._arm.recover()
            self._run_gripper(epoch, GRIPPER_OPEN, force=True)
            for attempt in range(2):  # franky's planner can fail to take over a motion just ending (-111)
                try:
                    if job.joints is None:
                        self._issue(epoch, self._arm.move_to, Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY))
                    else:
                        self._issue(epoch, self._arm.move_joints, job.joints)
                    if not self._wait_motion(epoch, 20.0):
                        job.error = "home motion did not finish in 20 s"
                        return
                    break
                except self._arm.motion_errors as err:
                    if attempt:
                        raise
                    log.warning("home: %s; recovering and trying again", err)
                    self._arm.recover()
            with self._lock:
                self._check(epoch)
                self._last_stamp_ns = self._last_commanded = None
                self._machine.set(ControllerState.IDLE, "homed" if job.joints is None else "at the joint configuration")
        except _Interrupted:
            job.error = "home interrupted (e-stop, hold or another home)"
        except Exception as err:  # contact or a motion error: the worker reacts to it
            job.error = str(err)
            raise
        finally:
            job.done.set()

    def _run_gripper(self, epoch: int, command: float, force: bool = False) -> None:
        """Make a gripper change with the arm held; announce the new commanded state."""
        self._check(epoch)
        if command == self._fingers.commanded and not force:
            return
        if not self._fingers.run(command, self.gripper_settings):
            log.warning("gripper %+.0f did not finish within %.1f s", command, self.gripper_settings.timeout)
        self._machine.notify(self.on_gripper_command, command)

    # --- chunks -----------------------------------------------------------------------
    def _run_chunk(self, chunk: ActionChunk, epoch: int) -> None:
        now = self.clock()
        # Latency compensation is for streaming only: in the official modes the arm waits for
        # the model, so no step has been overtaken by time.
        due = planner.latency_compensate(chunk.targets, now) if self.strategy == Strategy.STREAMING else list(chunk.targets)
        if not due:
            rejection = ChunkRejected("all_steps_passed", "every step of the chunk is already due")
            if self.rejections.record(rejection.reason):
                log.warning("chunk dropped: %s", rejection)
            return
        here = self.read_state().ee
        start = here
        last = self._last_commanded
        if self.strategy == Strategy.OFFICIAL_BLOCKING and last is not None and planner.reached(
                here, last, self.limits.max_step_translation, self.limits.max_step_rotation):
            start = last  # chain from the last commanded target, unless the arm was moved away since
        waypoints = self.limits.clip(start, due)
        segments = planner.split_at_gripper(waypoints, self._fingers.commanded)
        for k, segment in enumerate(segments):
            path = segment.waypoints
            if k > 0:  # the rest of the chunk, after a gripper change: due from now on
                path = planner.retime(path, self.clock(), chunk.dt)
            with self._lock:
                self._check(epoch)
                self._machine.set(ControllerState.GRIPPER if segment.gripper is not None else ControllerState.RUNNING,
                                  "gripper change under way" if segment.gripper is not None else "chunk accepted")
            if path:
                self._move(epoch, path, last=k == len(segments) - 1, gripper=segment.gripper is not None)
            if segment.gripper is not None:
                self._run_gripper(epoch, segment.gripper)
                with self._lock:
                    self._check(epoch)
                    self._last_chunk_ns = self.clock()  # the gripper time does not count toward hold_timeout
                    self._machine.set(ControllerState.RUNNING, "gripper change done")

    def _move(self, epoch: int, path: tuple[Waypoint, ...], last: bool, gripper: bool) -> None:
        """Move along `path` by the strategy; when `gripper`, come to rest at its end first."""
        t = self.timing
        here = self.read_state().ee
        if all(planner.reached(here, w.pose, 1e-4, 1e-3) for w in path):
            return  # already there: franky's planner fails on zero-length motions (-111)
        if self.strategy == Strategy.STREAMING:
            setpoints = planner.streaming_setpoints(here, path, self.clock(), self.tcp_offset)
            self._issue(epoch, self._arm.move_through, setpoints)
            if gripper:
                self._arrive(epoch, path[-1].pose, max(0.0, (path[-1].stamp_ns - self.clock()) * 1e-9) + t.reach_timeout)
        elif self.strategy == Strategy.OFFICIAL_NONBLOCKING:
            self._issue(epoch, self._arm.move_to, path[-1].pose)
            if gripper:
                self._arrive(epoch, path[-1].pose, 2.0)
        else:
            # Paced as the official client: it checks arrival, then again one poll period
            # (= step_timeout) later, and goes on either way: ~0.1 s per waypoint.
            for w in path:
                self._issue(epoch, self._arm.move_to, w.pose)
                self._last_commanded = w.pose
                self._wait(epoch, lambda: planner.reached(self.read_state().ee, w.pose, *t.step_tolerance),
                           t.step_timeout, poll=t.step_timeout)
            goal = path[-1].pose
            if gripper:
                self._arrive(epoch, goal, t.reach_timeout)
            elif last:
                self._wait(epoch, lambda: planner.reached(self.read_state().ee, goal, *t.settle_tolerance),
                           t.settle_timeout, poll=t.step_timeout)

"""The franky executor: turns action chunks into safe, smooth motion of a Franka arm.

One worker thread owns all motion commands, so callers (ROS callbacks) never block on the
robot. Strategies:

- ``streaming`` (default): waypoints whose time has passed are dropped (latency
  compensation); the rest become ONE waypoint motion that passes through each target at its
  due time with a non-zero velocity, replaced asynchronously by the next chunk, so the arm
  does not stop between waypoints or chunks.
- ``target``: track only the chunk's last waypoint (the official client's non-blocking mode).
- ``blocking``: step through the waypoints, each to convergence (the official blocking mode).

All targets are ABSOLUTE base-frame poses: franky's ``ReferenceType.Relative`` is in the
end-effector frame, while GraspVLA's deltas are in the base frame.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_OPEN, ActionChunk, Pose, Waypoint
from graspvla_ros.safety import ChunkRejected, ControllerState, RejectionLog, SafetyLimits

log = logging.getLogger(__name__)

# GraspVLA's reset pose (official real-robot client), for the TCP described in docs/interfaces.md.
HOME_POSITION = (0.36307, -0.00142, 0.48912)
HOME_RPY = (-np.pi, 0.0, np.pi / 4)


class Strategy(str, enum.Enum):
    STREAMING = "streaming"
    TARGET = "target"
    BLOCKING = "blocking"


class FrankaProtocolMismatch(RuntimeError):
    """The robot speaks another libfranka protocol than the installed franky."""


def explain_connection_error(host: str, err: Exception) -> Exception:
    """Turn libfranka's protocol/version errors into one line a Panda user can act on."""
    text = f"{type(err).__name__}: {err}"
    if "incorrect object size" in text or "IncompatibleVersion" in text:
        return FrankaProtocolMismatch(
            f"robot at {host} speaks another libfranka protocol ({err}); the franky wheels on PyPI "
            "carry libfranka 0.21 (FR3, robot server v10): a Franka Panda (FER) needs franky built "
            "against the libfranka of its system version")
    return err


@dataclass(frozen=True)
class GripperSettings:
    force: float = 35.0          # N, grasp force
    speed: float = 0.1           # m/s
    grasp_width: float = 0.0     # m, commanded width of a grasp (squeeze until the object stops the fingers)
    epsilon_inner: float = 0.005
    epsilon_outer: float = 0.08  # accept any object narrower than the open hand
    open_width: float = 0.08


@dataclass
class RobotState:
    stamp_ns: int
    ee: Pose                      # TCP pose in the base frame
    ee_speed: float               # m/s, linear
    joints: np.ndarray            # (7,) rad
    joint_velocities: np.ndarray  # (7,)
    gripper_width: float          # m
    robot_time: float = 0.0       # s, the robot's own clock (franky-sim's runs slower than wall time)


def _monotonic_ns() -> int:
    return time.monotonic_ns()


class FrankaExecutor:
    """Executes chunks on a franky robot; a context manager that connects and disconnects.

    `clock` gives the time chunks are stamped in (ROS time in the node); it must be the same
    clock as the chunks' observation stamps.
    """

    def __init__(self, host: str, *, strategy: Strategy | str = Strategy.STREAMING,
                 limits: SafetyLimits = SafetyLimits(), gripper: GripperSettings = GripperSettings(),
                 realtime: bool = False, dynamics_factor: float = 0.3, tcp_offset: float = 0.0,
                 max_recoveries: int = 3, clock: Callable[[], int] = _monotonic_ns):
        self.host = host
        self.strategy = Strategy(strategy)
        self.limits = limits
        self.gripper_settings = gripper
        self.realtime = realtime
        self.dynamics_factor = dynamics_factor
        self.tcp_offset = np.array([0.0, 0.0, tcp_offset])
        self.max_recoveries = max_recoveries
        self.clock = clock
        self.rejections = RejectionLog()
        self.reflex_count = 0
        self.state = ControllerState.IDLE
        self.on_state_change: Callable[[ControllerState, str], None] = lambda s, why: None
        self._robot = None
        self._gripper = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: ActionChunk | None = None
        self._last_stamp_ns: int | None = None
        self._last_chunk_ns = 0
        self._gripper_command = GRIPPER_OPEN
        self._gripper_width = 0.0
        self._gripper_jobs: list[tuple[int, float]] = []
        self._running = False
        self._threads: list[threading.Thread] = []

    # --- connection -------------------------------------------------------------------
    def connect(self, timeout: float = 0.0) -> FrankaExecutor:
        """Connect, retrying refused or timed-out connections for up to `timeout` s (a robot or
        simulator still starting); protocol mismatches fail at once."""
        import franky  # imported here so the pure core loads without the robot library

        self._franky = franky
        # franky raises reflexes as ControlException, but a failing trajectory planner (ruckig,
        # e.g. "Motion planner failed with error code -111", seen in franky-sim at the end of a
        # waypoint motion) as a plain RuntimeError: both must be recovered from, never kill a worker.
        self._motion_errors = (franky.ControlException, RuntimeError)
        config = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._robot = franky.Robot(self.host, realtime_config=config)
                self._gripper = franky.Gripper(self.host)
                break
            except franky.NetworkException as err:
                if time.monotonic() >= deadline:
                    raise explain_connection_error(self.host, err) from err
                log.info("robot at %s not reachable yet (%s); retrying", self.host, err)
                time.sleep(0.5)
            except Exception as err:  # libfranka raises several exception types here
                raise explain_connection_error(self.host, err) from err
        self._robot.relative_dynamics_factor = self.dynamics_factor
        self._gripper_width = float(self._gripper.width)
        if self._robot.has_errors:
            self._robot.recover_from_errors()
        self._running = True
        self._threads = [threading.Thread(target=loop, name=name, daemon=True)
                         for name, loop in (("franka-motion", self._motion_loop), ("franka-gripper", self._gripper_loop))]
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        with self._lock:
            self._running = False
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=5.0)
        if self._robot is not None:
            try:
                self._robot.stop()
            except Exception:  # already stopped or disconnected: nothing left to stop
                pass
        self._robot = self._gripper = None

    def __enter__(self) -> FrankaExecutor:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------
    def read_state(self) -> RobotState:
        """The latest robot state: one libfranka state snapshot (~1 ms) and the gripper width
        cached by the gripper thread (reading the gripper directly would wait on its server)."""
        s = self._robot.state
        ee = s.O_T_EE
        flange = Pose.from_xyz_quat(ee.translation, ee.quaternion)
        return RobotState(
            stamp_ns=self.clock(),
            ee=Pose(flange.position + flange.rotation @ self.tcp_offset, flange.rotation),
            ee_speed=float(np.linalg.norm(s.O_dP_EE_c.linear)),
            joints=np.asarray(s.q, float),
            joint_velocities=np.asarray(s.dq, float),
            gripper_width=self._gripper_width,
            robot_time=s.time.to_sec(),
        )

    def _set_state(self, state: ControllerState, why: str) -> None:
        if state != self.state:
            log.info("controller %s -> %s (%s)", self.state.value, state.value, why)
            self.state = state
            self.on_state_change(state, why)

    # --- commands ---------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> None:
        """Accept a chunk for execution or raise ChunkRejected with the reason."""
        now = self.clock()
        try:
            with self._lock:
                if self.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
                    raise ChunkRejected(self.state.value.lower(), f"controller is {self.state.value}")
                self.limits.check(chunk, now, self._last_stamp_ns)
                self._last_stamp_ns = chunk.stamp_ns
                self._last_chunk_ns = now
                self._pending = chunk
                self._wake.notify_all()
        except ChunkRejected as rejection:
            if self.rejections.record(rejection.reason):
                log.warning("chunk rejected: %s", rejection)
            raise
        self.rejections.accepted()

    def estop(self) -> None:
        """Latched stop: halt now and refuse every chunk until `release`."""
        with self._lock:
            self._pending = None
            self._gripper_jobs.clear()
            self._set_state(ControllerState.ESTOPPED, "e-stop requested")
        self._stop_motion()

    def release(self) -> None:
        with self._lock:
            if self.state == ControllerState.ESTOPPED:
                self._last_stamp_ns = None
                self._set_state(ControllerState.IDLE, "e-stop released")

    def recover(self) -> None:
        """Clear robot errors after a FAULT (operator action)."""
        self._robot.recover_from_errors()
        with self._lock:
            if self.state == ControllerState.FAULT:
                self._last_stamp_ns = None
                self._set_state(ControllerState.IDLE, "recovered by operator")

    def home(self) -> None:
        """Move to GraspVLA's reset pose and open the gripper (blocking)."""
        with self._lock:
            if self.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
                raise RuntimeError(f"cannot home while {self.state.value}")
            self._pending = None
        self._stop_motion()
        self.move_to(Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY))
        with self._lock:
            self._gripper_jobs = [(0, GRIPPER_OPEN)]
        self._gripper_command = None  # forces the open command; set again once it has run
        deadline = time.monotonic() + 5.0
        while self._gripper_command is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self._set_state(ControllerState.IDLE, "homed")

    def move_to(self, pose: Pose) -> None:
        """Blocking move of the TCP to an absolute base-frame pose (inside the workspace box)."""
        clamped = Pose(self.limits.clamp_position(pose.position), pose.rotation)
        self._robot.move(self._franky.CartesianMotion(self._affine(clamped), self._franky.ReferenceType.Absolute))

    # --- motion worker ----------------------------------------------------------------
    def _motion_loop(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._pending is not None or not self._running, timeout=0.05)
                if not self._running:
                    return
                chunk, self._pending = self._pending, None
                self._watchdog()
            if chunk is not None:
                self._execute_guarded(chunk)
            else:
                self._poll_errors()

    def _watchdog(self) -> None:
        """No fresh chunk for hold_timeout: let the motion finish at its (zero-velocity) last
        target and hold there."""
        if self.state == ControllerState.RUNNING and \
                self.clock() - self._last_chunk_ns > self.limits.hold_timeout * 1e9:
            self._set_state(ControllerState.HOLDING, f"no chunk for {self.limits.hold_timeout} s")

    def _execute_guarded(self, chunk: ActionChunk) -> None:
        for attempt in range(self.max_recoveries + 1):
            try:
                self._execute(chunk)
                return
            except self._motion_errors as err:  # reflex, or franky's planner failing
                self.reflex_count += 1
                log.warning("motion error (attempt %d): %s", attempt + 1, err)
                if not self._recover_once():
                    break
        with self._lock:
            self._set_state(ControllerState.FAULT, "error recovery failed")

    def _recover_once(self) -> bool:
        try:
            self._robot.recover_from_errors()
            return True
        except Exception as err:
            log.error("recover_from_errors failed: %s", err)
            return False

    def _poll_errors(self) -> None:
        if self._robot is None or self.state not in (ControllerState.RUNNING, ControllerState.HOLDING):
            return
        try:
            self._robot.poll_motion()
        except self._motion_errors as err:
            self.reflex_count += 1
            log.warning("motion error: %s", err)
            ok = any(self._recover_once() for _ in range(self.max_recoveries))
            with self._lock:
                self._set_state(ControllerState.HOLDING if ok else ControllerState.FAULT,
                                "recovered from motion error" if ok else "error recovery failed")

    def _execute(self, chunk: ActionChunk) -> None:
        now = self.clock()
        # Latency compensation is for streaming only: in the official blocking and target
        # modes the arm waits for the model, so no step has been overtaken by time.
        due = chunk.due_after(now) if self.strategy == Strategy.STREAMING else list(chunk.targets)
        if not due:
            raise_reason = ChunkRejected("all_steps_passed", "every step of the chunk is already due")
            if self.rejections.record(raise_reason.reason):
                log.warning("chunk dropped: %s", raise_reason)
            return
        start = self.read_state().ee
        waypoints = self.limits.clip(start, due)
        with self._lock:
            if self.state in (ControllerState.ESTOPPED, ControllerState.FAULT):
                return
            self._set_state(ControllerState.RUNNING, "chunk accepted")
            self._gripper_jobs = [(w.stamp_ns, w.gripper) for w in waypoints if w.gripper != 0.0]
        if self.strategy == Strategy.STREAMING:
            self._robot.move(self._streaming_motion(start, waypoints, now, chunk.dt), asynchronous=True)
        elif self.strategy == Strategy.TARGET:
            self._robot.move(self._franky.CartesianMotion(self._affine(waypoints[-1].pose),
                                                          self._franky.ReferenceType.Absolute), asynchronous=True)
        else:
            for w in waypoints:
                if self.state != ControllerState.RUNNING:
                    return
                self._robot.move(self._franky.CartesianMotion(self._affine(w.pose), self._franky.ReferenceType.Absolute))

    def _streaming_motion(self, start: Pose, waypoints: list[Waypoint], now_ns: int, dt: float):
        """One waypoint motion through all targets, each reached at its due time with the
        velocity of the path there (central differences), coming to rest at the last."""
        f = self._franky
        poses = [start] + [w.pose for w in waypoints]
        times = [now_ns * 1e-9] + [w.stamp_ns * 1e-9 for w in waypoints]
        out = []
        for k in range(1, len(poses)):
            if k < len(poses) - 1:
                span = max(times[k + 1] - times[k - 1], 1e-3)
                lin = (poses[k + 1].position - poses[k - 1].position) / span
                ang = Rotation.from_matrix(poses[k + 1].rotation @ poses[k - 1].rotation.T).as_rotvec() / span
            else:
                lin = ang = np.zeros(3)
            state = f.CartesianState(f.RobotPose(self._affine(poses[k])), f.RobotVelocity(f.Twist(lin, ang)))
            min_ms = max(1, int(round((times[k] - times[k - 1]) * 1e3)))
            out.append(f.CartesianWaypoint(state, f.ReferenceType.Absolute, f.RelativeDynamicsFactor(1.0, 1.0, 1.0),
                                           f.Duration(min_ms)))
        return f.CartesianWaypointMotion(out)

    def _stop_motion(self) -> None:
        """Bring the arm to rest where it is now (a zero-length motion replaces the current one)."""
        try:
            here = self.read_state().ee
            self._robot.move(self._franky.CartesianMotion(self._affine(here), self._franky.ReferenceType.Absolute),
                             asynchronous=True)
            self._robot.join_motion(timeout=2.0)
        except self._motion_errors as err:
            log.warning("stop: %s; recovering", err)
            self._recover_once()

    def _affine(self, tcp: Pose):
        """TCP pose → franky end-effector Affine (undo the extra TCP offset)."""
        flange = tcp.position - tcp.rotation @ self.tcp_offset
        return self._franky.Affine(flange, Rotation.from_matrix(tcp.rotation).as_quat())

    # --- gripper worker ---------------------------------------------------------------
    def _gripper_loop(self) -> None:
        """Issues gripper commands at their due time, on their own thread: a grasp takes
        ~1 s and must never block the motion loop."""
        while True:
            with self._lock:
                if not self._running:
                    return
                now = self.clock()
                ready = [job for job in self._gripper_jobs if job[0] <= now]
                self._gripper_jobs = [job for job in self._gripper_jobs if job[0] > now]
                command = ready[-1][1] if ready else None
            if command is not None and command != self._gripper_command:
                self._run_gripper(command)
            self._gripper_width = float(self._gripper.width)
            time.sleep(0.01)

    def _run_gripper(self, command: float) -> None:
        g = self.gripper_settings
        try:
            if command == GRIPPER_CLOSE:
                self._gripper.grasp(g.grasp_width, g.speed, g.force, g.epsilon_inner, g.epsilon_outer)
            elif command == GRIPPER_OPEN:
                self._gripper.move(g.open_width, g.speed)
        except Exception as err:  # GripperException/CommandException: report, keep the arm loop alive
            log.warning("gripper command %+.0f failed: %s", command, err)
        finally:
            self._gripper_command = command

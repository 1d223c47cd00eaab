"""The thin franky adapter: the only module that talks to franky.

Invariants: it converts between the TCP (what the rest of the controller plans in) and franky's
configured end-effector (`tcp_offset` m before the TCP along its z) in one place; it issues
exactly the commands it is asked for, never on its own (the controller gates every one); and it
names every exception franky can raise (`classify`), so the controller can end each in a state.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import Pose
from graspvla_ros.control.planner import Setpoint, flange_to_tcp, tcp_to_flange
from graspvla_ros.control.settings import Compliance, ContactSettings

log = logging.getLogger(__name__)
WAIT_REPORT_S = 30.0  # while the robot does not answer at start, say so again this often
TWIST_MARGIN = 0.9    # of franky's Cartesian velocity limits, for the waypoint velocities of streaming
# Connections given up because the robot stopped answering. They are never destroyed: libfranka's
# destructor sends a stop and waits for its answer forever, holding the GIL (it froze the whole
# process when the last reference to such a connection went). One entry per lost connection.
_ABANDONED: list = []


class FrankaProtocolMismatch(RuntimeError):
    """The robot speaks another libfranka protocol than the installed franky."""


class MotionTypeBusy(RuntimeError):
    """A motion of another control type still runs: franky cannot swap a running motion's type
    (joint ↔ Cartesian); stop it and wait for it to end first."""


class RobotFault(RuntimeError):
    """A robot error the controller turns into a state: `kind` is one of FAULT_KINDS."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


NETWORK_WORDS = ("net exception", "timeout", "connection", "socket")
# What `classify` names franky's exceptions: the controller's reaction to each is in control.recovery.
FAULT_KINDS = ("reflex", "user_stop", "network", "busy", "planner", "motion_type", "rejected", "fatal")


def explain_connection_error(host: str, err: Exception) -> Exception:
    """Turn libfranka's protocol/version errors into one line a Panda user can act on."""
    text = f"{type(err).__name__}: {err}"
    if "incorrect object size" in text or "IncompatibleVersion" in text:
        return FrankaProtocolMismatch(
            f"robot at {host} speaks another libfranka protocol ({err}); the franky wheels on PyPI "
            "carry libfranka 0.21 (FR3, robot server v10): a Franka Panda (FER) needs franky built "
            "against the libfranka of its system version")
    return err


@dataclass
class RobotState:
    stamp_ns: int
    ee: Pose                      # TCP pose in the base frame
    ee_speed: float               # m/s, commanded linear TCP speed
    joints: np.ndarray            # (7,) rad
    joint_velocities: np.ndarray  # (7,)
    gripper_width: float          # m
    force: np.ndarray             # (6,) estimated external wrench on the robot, base frame (O_F_ext_hat_K)
    robot_time: float = 0.0       # s, the robot's own clock (franky-sim's runs slower than wall time)


@dataclass
class ContactLatch:
    """Set by the contact reaction inside franky's 1 kHz loop (so it only records): the force
    and the TCP pose when it fired."""

    event: threading.Event
    force_z: float = 0.0
    where: Pose | None = None


class FrankyArm:
    """One connection to the robot and its gripper (`connect` retries while it does not answer)."""

    def __init__(self, host: str, *, realtime: bool, dynamics_factor: float, tcp_offset: float,
                 compliance: Compliance, contact: ContactSettings, limit_rate: bool, timeout: float = 0.0,
                 dry_run: bool = False, on_planned: Callable[[list[Pose]], None] = lambda poses: None):
        import franky  # here, so the pure core loads without the robot library

        self.f = franky
        self.host = host
        self.tcp_offset = tcp_offset
        self.contact_settings = contact
        self.limit_rate = limit_rate
        self.dry_run = dry_run
        self.on_planned = on_planned  # the TCP poses of every motion commanded (or, dry, not commanded)
        self.contact = ContactLatch(threading.Event())
        self._last_setpoints: list[Setpoint] = []  # what move_through last commanded
        self._rng = np.random.default_rng()
        config = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
        start = time.monotonic()
        reported = None
        while True:
            try:
                self.robot = franky.Robot(host, realtime_config=config,
                                          controller_mode=franky.ControllerMode.CartesianImpedance)
                self.gripper = franky.Gripper(host)
                break
            except franky.NetworkException as err:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise explain_connection_error(host, err) from err
                if reported is None or waited - reported >= WAIT_REPORT_S:
                    log.warning("waiting for the robot at %s (%s)%s", host, str(err),
                                f", {waited:.0f} s so far" if reported is not None else "")
                    reported = waited
                time.sleep(0.5)
            except Exception as err:  # libfranka raises several exception types here
                raise explain_connection_error(host, err) from err
        self.set_dynamics_factor(dynamics_factor)
        self.robot.set_cartesian_impedance(list(compliance.cartesian_impedance))
        self.robot.set_collision_behavior([compliance.torque_threshold] * 7, [compliance.force_threshold] * 6)

    def abandon(self) -> None:
        """Give up this connection to a robot that does not answer, without destroying it."""
        _ABANDONED.append((self.robot, self.gripper))

    # --- reading ---------------------------------------------------------------------------
    def state(self, stamp_ns: int, gripper_width: float) -> RobotState:
        """One libfranka state snapshot (~1 ms)."""
        s = self.robot.state
        ee = s.O_T_EE
        return RobotState(
            stamp_ns=stamp_ns,
            ee=flange_to_tcp(Pose.from_xyz_quat(ee.translation, ee.quaternion), self.tcp_offset),
            ee_speed=float(np.linalg.norm(s.O_dP_EE_c.linear)),
            joints=np.asarray(s.q, float),
            joint_velocities=np.asarray(s.dq, float),
            gripper_width=gripper_width,
            force=np.asarray(s.O_F_ext_hat_K, float),
            robot_time=s.time.to_sec(),
        )

    def end_effector_offset(self) -> np.ndarray:
        """(3,) m, flange → franky's end effector as the robot reports it (F_T_EE: Desk's end
        effector setting; the Franka Hand's is (0, 0, 0.1034))."""
        return np.asarray(self.robot.state.F_T_EE.translation, float)

    def robot_mode(self) -> str:
        """libfranka's robot mode: Other, Idle, Move, Guiding, Reflex, UserStopped, AutomaticErrorRecovery."""
        return self.robot.state.robot_mode.name

    def errors(self) -> list[str]:
        """The robot's current error flags, by name."""
        return _flag_names(self.robot.state.current_errors)

    def last_motion_errors(self) -> list[str]:
        return _flag_names(self.robot.state.last_motion_errors)

    # --- motions ---------------------------------------------------------------------------
    def _affine(self, flange: Pose):
        return self.f.Affine(flange.position, Rotation.from_matrix(flange.rotation).as_quat())

    def _replace(self, motion, signal, planned: list[Pose]) -> None:
        """Start `motion` (control signal type `signal`), replacing a running motion of that type;
        its TCP poses `planned` go to `on_planned`. In a dry run nothing is sent to the robot."""
        self.on_planned(planned)
        if self.dry_run:
            return
        running = self.robot.current_control_signal_type
        if running is not None and running != signal:
            raise MotionTypeBusy(f"a {running.name} motion still runs")
        self.robot.move(motion, asynchronous=True, limit_rate=self.limit_rate)

    def _with_contact_reaction(self, motion):
        """The official contact reaction inside franky's 1 kHz loop: |F_z| above the limit
        replaces the motion with a retreat of `contact.lift` m back along the tool axis (up, for
        the hand pointing down), with up to `contact.jitter` m sideways."""
        f, c = self.f, self.contact_settings
        jitter = self._rng.uniform(-c.jitter, c.jitter, 2)
        retreat = f.CartesianMotion(f.Affine([jitter[0], jitter[1], -c.lift]), f.ReferenceType.Relative)
        reaction = f.Reaction((f.Measure.FORCE_Z > c.force_limit) | (f.Measure.FORCE_Z < -c.force_limit), retreat)
        # The callback must not hold this object: franky keeps the motion, so a reference back to
        # the arm would be a cycle through C++ that keeps the connection open after it is dropped.
        reaction.register_callback(_contact_recorder(self.contact, self.tcp_offset))
        motion.add_reaction(reaction)
        return motion

    def move_through(self, setpoints: list[Setpoint]) -> None:
        """Start (asynchronously) one motion through the set-points, replacing the running one."""
        f = self.f
        waypoints = [f.CartesianWaypoint(
            f.CartesianState(f.RobotPose(self._affine(s.flange)), f.RobotVelocity(f.Twist(s.linear, s.angular))),
            f.ReferenceType.Absolute, f.RelativeDynamicsFactor(1.0, 1.0, 1.0),
            f.Duration(max(1, int(round(s.duration * 1e3))))) for s in setpoints]
        self._replace(self._with_contact_reaction(f.CartesianWaypointMotion(waypoints)), f.ControlSignalType.CartesianPose,
                      [flange_to_tcp(s.flange, self.tcp_offset) for s in setpoints])
        self._last_setpoints = setpoints

    def move_to(self, tcp: Pose, contact: bool = True) -> None:
        """Start (asynchronously) a motion that ends at rest at the TCP pose `tcp` (with the
        contact reaction unless `contact` is False: the retreat itself)."""
        motion = self.f.CartesianMotion(self._affine(tcp_to_flange(tcp, self.tcp_offset)), self.f.ReferenceType.Absolute)
        self._replace(self._with_contact_reaction(motion) if contact else motion, self.f.ControlSignalType.CartesianPose,
                      [tcp])

    def move_joints(self, joints) -> None:
        """Start (asynchronously) a joint motion that ends at rest at `joints` (7, rad)."""
        self._replace(self.f.JointMotion(list(joints)), self.f.ControlSignalType.JointPositions, [])

    def stop(self) -> None:
        """Start (asynchronously) the stop motion of the running motion's own type (a Cartesian
        stop cannot end a joint motion: franky refuses to swap a running motion's type):
        decelerate to rest where the arm is. With no motion running the arm is at rest already
        and nothing is sent."""
        f, t = self.f, self.f.ControlSignalType
        stops = {t.CartesianPose: f.CartesianStopMotion, t.JointPositions: f.JointStopMotion,
                 t.CartesianVelocities: f.CartesianVelocityStopMotion, t.JointVelocities: f.JointVelocityStopMotion,
                 t.Torques: f.TorqueStopMotion}
        running = self.robot.current_control_signal_type
        if running is not None and not self.dry_run:
            self.robot.move(stops[running](), asynchronous=True)

    def moving(self) -> bool:
        """A motion runs (franky's control loop is active)."""
        return self.robot.current_control_signal_type is not None

    def join(self, timeout: float) -> bool:
        """Wait for the running motion to end; raises its error if it ended in one."""
        return bool(self.robot.join_motion(timeout=timeout))

    def poll(self) -> None:
        """Raise the running (or last) motion's error, if any."""
        self.robot.poll_motion()

    def set_dynamics_factor(self, factor: float) -> None:
        """franky's global velocity/acceleration/jerk scale, for the motions started after this.
        `twist_limits` follows it: the fastest flange twist (m/s, rad/s) a Cartesian waypoint may
        pass with, franky's velocity limits × the factor less a margin (ruckig refuses a waypoint
        velocity above them as invalid input: "Motion planner failed with error code -100")."""
        self.robot.relative_dynamics_factor = factor
        scale = TWIST_MARGIN * factor
        self.twist_limits = (scale * self.robot.translation_velocity_limit.get(),
                             scale * self.robot.rotation_velocity_limit.get())

    def last_motion(self) -> str:
        """The streaming motion last commanded, in a line (said when the planner refuses it)."""
        points = self._last_setpoints
        if not points:
            return "not a chunk's"
        return (f"{len(points)} set-points, flange ≤ {max(np.linalg.norm(p.linear) for p in points):.3f} m/s and "
                f"≤ {max(np.linalg.norm(p.angular) for p in points):.3f} rad/s (limits {self.twist_limits[0]:.3f}, "
                f"{self.twist_limits[1]:.3f}), the first {points[0].duration * 1e3:.0f} ms ahead")

    # --- errors ----------------------------------------------------------------------------
    def recover(self) -> None:
        """libfranka's automatic error recovery, only when the robot has errors, and checked
        against a fresh state (franky's return value can come from a stale one). Call it only
        once no motion runs: the robot rejects it otherwise. Raises RobotFault if it failed."""
        if not self.robot.has_errors:
            return
        try:
            self.robot.recover_from_errors()
        except self.f.CommandException as err:
            raise RobotFault(self.classify(err), f"error recovery refused: {err}") from err
        left = self.errors()
        if left:
            raise RobotFault("rejected", f"error recovery left {', '.join(left)}")

    def classify(self, err: BaseException) -> str:
        """Which of FAULT_KINDS `err` is, from its type, its text and, where the robot still
        answers, its mode."""
        f = self.f
        text = str(err)
        if isinstance(err, RobotFault):
            return err.kind
        if isinstance(err, f.NetworkException):
            return "network"
        if isinstance(err, f.InvalidMotionTypeException):
            return "motion_type"
        if isinstance(err, (f.ControlException, f.CommandException)):
            if "User Stop" in text:
                return "user_stop"
            if "reflex" in text:
                return "reflex"
            try:
                mode = self.robot_mode()
            except f.NetworkException:
                return "network"
            if mode == "UserStopped":
                return "user_stop"
            if mode == "Reflex":
                return "reflex"
            if "not possible in the current mode" in text and self.moving():
                return "busy"
            return "rejected"
        if isinstance(err, RuntimeError) and "Motion planner failed" in text:
            return "planner"  # franky's own trajectory planner (ruckig), not the robot
        if isinstance(err, (RuntimeError, OSError)) and any(w in text.lower() for w in NETWORK_WORDS):
            return "network"  # Poco's socket errors reach Python as "Net Exception", "Timeout", ...
        return "fatal"  # RealtimeException, InvalidOperationException, ProtocolException, anything else


def _contact_recorder(latch: ContactLatch, tcp_offset: float):
    """The contact reaction's callback; it runs inside franky's control loop: record, never block."""
    def record(state, *_times) -> None:
        if not latch.event.is_set():
            ee = state.O_T_EE
            latch.force_z = float(state.O_F_ext_hat_K[2])
            latch.where = flange_to_tcp(Pose.from_xyz_quat(ee.translation, ee.quaternion), tcp_offset)
            latch.event.set()
    return record


def _flag_names(errors) -> list[str]:
    return [name for name in dir(errors) if not name.startswith("_") and getattr(errors, name) is True]

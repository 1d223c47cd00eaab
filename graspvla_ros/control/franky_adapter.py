"""The thin franky adapter: the only module that talks to franky.

Invariants: it converts between the TCP (what the rest of the controller plans in) and franky's
configured end-effector (`tcp_offset` m before the TCP along its z) in one place, and it issues
exactly the commands it is asked for, never on its own (the executor gates every one).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from graspvla_ros.chunk import Pose
from graspvla_ros.control.planner import Setpoint, flange_to_tcp, tcp_to_flange

log = logging.getLogger(__name__)


class FrankaProtocolMismatch(RuntimeError):
    """The robot speaks another libfranka protocol than the installed franky."""


class MotionTypeBusy(RuntimeError):
    """A motion of another control type still runs: franky cannot swap a running motion's type
    (joint ↔ Cartesian); stop it and wait for it to end first."""


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
class Compliance:
    """How the arm yields on contact. Defaults: the official client's Cartesian impedance
    (2000 N/m, 150 Nm/rad) in the Franka's own Cartesian impedance controller, and reflex
    thresholds above the 15 N contact reaction, so the controller retreats before a reflex."""

    cartesian_impedance: tuple[float, ...] = (2000.0, 2000.0, 2000.0, 150.0, 150.0, 150.0)
    torque_threshold: float = 40.0   # Nm, collision reflex per joint
    force_threshold: float = 60.0    # N, collision reflex at the end effector


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


class FrankyArm:
    def __init__(self, host: str, *, realtime: bool, dynamics_factor: float, tcp_offset: float,
                 compliance: Compliance, timeout: float = 0.0):
        import franky  # here, so the pure core loads without the robot library

        self.f = franky
        self.host = host
        self.tcp_offset = tcp_offset
        # franky raises reflexes as ControlException, and a failing trajectory planner (ruckig,
        # "Motion planner failed with error code -111", seen in franky-sim) as a plain RuntimeError.
        self.motion_errors = (franky.ControlException, RuntimeError)
        config = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.robot = franky.Robot(host, realtime_config=config,
                                          controller_mode=franky.ControllerMode.CartesianImpedance)
                self.gripper = franky.Gripper(host)
                break
            except franky.NetworkException as err:
                if time.monotonic() >= deadline:
                    raise explain_connection_error(host, err) from err
                log.info("robot at %s not reachable yet (%s); retrying", host, err)
                time.sleep(0.5)
            except Exception as err:  # libfranka raises several exception types here
                raise explain_connection_error(host, err) from err
        self.robot.relative_dynamics_factor = dynamics_factor
        if self.robot.has_errors:
            self.robot.recover_from_errors()
        self.robot.set_cartesian_impedance(list(compliance.cartesian_impedance))
        self.robot.set_collision_behavior([compliance.torque_threshold] * 7, [compliance.force_threshold] * 6)

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

    def external_force(self) -> np.ndarray:
        """(6,) estimated external wrench on the robot in the base frame (O_F_ext_hat_K)."""
        return np.asarray(self.robot.state.O_F_ext_hat_K, float)

    def _affine(self, flange: Pose):
        return self.f.Affine(flange.position, Rotation.from_matrix(flange.rotation).as_quat())

    def _replace(self, motion, signal) -> None:
        """Start `motion` (control signal type `signal`), replacing a running motion of that type."""
        running = self.robot.current_control_signal_type
        if running is not None and running != signal:
            raise MotionTypeBusy(f"a {running.name} motion still runs")
        self.robot.move(motion, asynchronous=True)

    def move_through(self, setpoints: list[Setpoint]) -> None:
        """Start (asynchronously) one motion through the set-points, replacing the running one."""
        f = self.f
        waypoints = [f.CartesianWaypoint(
            f.CartesianState(f.RobotPose(self._affine(s.flange)), f.RobotVelocity(f.Twist(s.linear, s.angular))),
            f.ReferenceType.Absolute, f.RelativeDynamicsFactor(1.0, 1.0, 1.0),
            f.Duration(max(1, int(round(s.duration * 1e3))))) for s in setpoints]
        self._replace(f.CartesianWaypointMotion(waypoints), f.ControlSignalType.CartesianPose)

    def move_to(self, tcp: Pose) -> None:
        """Start (asynchronously) a motion that ends at rest at the TCP pose `tcp`."""
        motion = self.f.CartesianMotion(self._affine(tcp_to_flange(tcp, self.tcp_offset)), self.f.ReferenceType.Absolute)
        self._replace(motion, self.f.ControlSignalType.CartesianPose)

    def move_joints(self, joints) -> None:
        """Start (asynchronously) a joint motion that ends at rest at `joints` (7, rad)."""
        self._replace(self.f.JointMotion(list(joints)), self.f.ControlSignalType.JointPositions)

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
        if running is not None:
            self.robot.move(stops[running](), asynchronous=True)

    def join(self, timeout: float) -> bool:
        """Wait for the running motion to end; raises a motion error if it ended in one."""
        return bool(self.robot.join_motion(timeout=timeout))

    def is_robot_error(self, err: Exception) -> bool:
        """A reflex or robot error (ControlException), as opposed to franky's own planner failing."""
        return isinstance(err, self.f.ControlException)

    def poll(self) -> None:
        """Raise the running (or last) motion's error, if any."""
        self.robot.poll_motion()

    def recover(self) -> None:
        self.robot.recover_from_errors()

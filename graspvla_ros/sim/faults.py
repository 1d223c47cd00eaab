"""libfranka's fault model on franky-sim's robot, so franky raises what it raises on hardware.

franky-sim acknowledges every recovery and never reports a robot error. `FaultyRobotServer`
keeps its protocol and adds the robot's side of each fault, following libfranka 0.21's client
(`src/robot_impl.{h,cpp}`: `throwOnMotionError`, `handleCommandResponse`) and franky 2.0:

- `user_stop`: the running motion ends with Move status kEmergencyAborted (franky raises
  ControlException "Move command aborted: User Stop pressed!"); `robot_mode` is UserStopped;
  every Move is rejected (kCommandNotPossibleRejected: ControlException "command not possible
  in the current mode") and every error recovery answered kEmergencyAborted (CommandException
  "User Stop pressed!") until `user_stop_release`.
- `reflex[:flag]`: the running motion ends with kReflexAborted (ControlException "motion aborted
  by reflex! [flag]"); `robot_mode` Reflex, the flag (default `cartesian_reflex`) set in
  `current_errors` and `last_motion_errors`; Moves are rejected until an error recovery, which
  then succeeds and clears the errors.
- `network_drop:<s>`: for s seconds no state is sent and no command answered (franky raises
  NetworkException "UDP receive: Timeout" in its control loop or on reading the state); the
  robot aborts the motion as a real one does when its commands stop
  (`communication_constraints_violation`) and holds; the Move's answer is sent when the link is
  back, if the client is still connected. `network_restore` ends a drop early.
- `gripper_fail`: the next grasp or move answers kFail without moving (franky: the future's
  `get()` raises).
- `force_bias:<N>`: N newtons added to the force estimate's z while the TCP accelerates
  (scaled by |a| / 0.5 m/s², at most N), the way model errors bias the real estimate.
- Always, as the real controller does: an error recovery while a motion runs is rejected
  (kCommandNotPossibleRejected: CommandException "command not possible in the current mode").

franky itself refuses to swap a running motion's type on the client side, in the sim as on the
arm; nothing is needed here for that.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from franky_sim.franka_gripper_protocol import GripperCommand, GripperCommandStatus
from franky_sim.franka_robot_protocol import (AutomaticErrorRecoveryCommand, AutomaticErrorRecoveryStatus, MoveCommand,
                                              MoveStatus, RobotCommand, RobotMode)
from franky_sim.franka_robot_server import FrankaRobotServer
from franky_sim.franka_server import BaseCommand

# The 41 error flags in the order of the state's error arrays (libfranka 0.21's research
# interface, as franky 2.0 reads them; tests/test_sim_faults.py checks the ones used).
ERROR_FLAGS = (
    "joint_position_limits_violation", "cartesian_position_limits_violation", "self_collision_avoidance_violation",
    "joint_velocity_violation", "cartesian_velocity_violation", "force_control_safety_violation", "joint_reflex",
    "cartesian_reflex", "max_goal_pose_deviation_violation", "max_path_pose_deviation_violation",
    "cartesian_velocity_profile_safety_violation", "joint_position_motion_generator_start_pose_invalid",
    "joint_motion_generator_position_limits_violation", "joint_motion_generator_velocity_limits_violation",
    "joint_motion_generator_velocity_discontinuity", "joint_motion_generator_acceleration_discontinuity",
    "cartesian_position_motion_generator_start_pose_invalid", "cartesian_motion_generator_elbow_limit_violation",
    "cartesian_motion_generator_velocity_limits_violation", "cartesian_motion_generator_velocity_discontinuity",
    "cartesian_motion_generator_acceleration_discontinuity", "cartesian_motion_generator_elbow_sign_inconsistent",
    "cartesian_motion_generator_start_elbow_invalid", "force_controller_desired_force_tolerance_violation",
    "start_elbow_sign_inconsistent", "communication_constraints_violation", "power_limit_violation",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame", "controller_torque_discontinuity",
    "joint_p2p_insufficient_torque_for_planning", "tau_j_range_violation", "instability_detected",
    "joint_move_in_wrong_direction", "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation", "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)
FAULTS = ("user_stop", "user_stop_release", "reflex[:<error flag>]", "network_drop:<seconds>", "network_restore",
          "gripper_fail", "force_bias:<newtons>")
BIAS_ACCELERATION = 0.5  # m/s², the TCP acceleration at which force_bias reaches its full value


def _flags(names: set[str]) -> tuple[bool, ...]:
    return tuple(name in names for name in ERROR_FLAGS)


class _Move(MoveCommand):
    def handle(self, server: FaultyRobotServer) -> None:
        if server.user_stopped or server.errors:
            self.reply(MoveStatus.kCommandNotPossibleRejected)
        else:
            super().handle(server)


class _Recovery(AutomaticErrorRecoveryCommand):
    def handle(self, server: FaultyRobotServer) -> None:
        if server.current_motion_id:
            self.reply(AutomaticErrorRecoveryStatus.kCommandNotPossibleRejected)
        elif server.user_stopped:
            self.reply(AutomaticErrorRecoveryStatus.kEmergencyAborted)
        else:
            server.errors = set()
            self.reply(AutomaticErrorRecoveryStatus.kSuccess)


class FaultyRobotServer(FrankaRobotServer):
    """franky-sim's robot server with libfranka's faults (module docstring). `inject` and the
    properties are used under the simulation's lock, which the physics loop holds per tick."""

    def __init__(self, robot, hostname_candidates, external_force: Callable[[], tuple[float, ...]],
                 sim_time: Callable[[], float]):
        super().__init__(robot, hostname_candidates)
        # franky-sim builds its command table in the constructor: swap in the two commands
        # whose answers depend on the robot's mode (name-mangled attribute of FrankaServer).
        self._FrankaServer__command_class_map.update({RobotCommand.kMove: _Move,
                                                      RobotCommand.kAutomaticErrorRecovery: _Recovery})
        self._external_force, self._sim_time = external_force, sim_time
        self.user_stopped = False
        self.errors: set[str] = set()
        self.last_motion_errors: set[str] = set()
        self.force_bias = 0.0
        self.gripper_fail = False
        self._offline_until = 0.0
        self._late_answer: tuple[object, int] | None = None  # (socket, motion id) answered when back online
        self._velocity = np.zeros(3)
        self._acceleration = 0.0
        self._last_tcp: tuple[float, np.ndarray] | None = None

    # --- what the operator injects ------------------------------------------------------
    def inject(self, fault: str) -> None:
        """Apply one fault (see FAULTS); raises ValueError with the known ones otherwise."""
        kind, _, arg = fault.strip().partition(":")
        if kind == "user_stop" and not arg:
            self.user_stopped = True
            self._abort(MoveStatus.kEmergencyAborted)
        elif kind == "user_stop_release" and not arg:
            self.user_stopped = False
        elif kind == "reflex":
            flag = arg or "cartesian_reflex"
            if flag not in ERROR_FLAGS:
                raise ValueError(f"unknown error flag {flag!r}")
            self._reflex(flag)
            self._abort(MoveStatus.kReflexAborted)
        elif kind == "network_drop":
            seconds = _number(fault, arg)
            if self.current_motion_id:
                self._late_answer = (self._tcp_socket, self.current_motion_id)
                self.stop_motion(send_preemption_signal=False)
                self.reset_current_motion_id()
            self._reflex("communication_constraints_violation")
            self._offline_until = time.monotonic() + seconds
        elif kind == "network_restore" and not arg:
            self._offline_until = 0.0
        elif kind == "gripper_fail" and not arg:
            self.gripper_fail = True
        elif kind == "force_bias":
            self.force_bias = _number(fault, arg)
        else:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")

    def active(self) -> dict:
        """The faults in force, for the latched `sim/faults` topic."""
        return {"user_stop": self.user_stopped, "errors": sorted(self.errors), "offline": self.offline,
                "gripper_fail": self.gripper_fail, "force_bias": self.force_bias}

    @property
    def offline(self) -> bool:
        return time.monotonic() < self._offline_until

    def _reflex(self, flag: str) -> None:
        self.errors = {flag}
        self.last_motion_errors = {flag}

    def _abort(self, status: MoveStatus) -> None:
        """End the running motion as the robot does: hold where it is, answer its Move."""
        motion = self.current_motion_id
        if motion:
            self.stop_motion(send_preemption_signal=False)
            self.reset_current_motion_id()
            BaseCommand.send_response(self._tcp_socket, RobotCommand.kMove, motion, status)

    # --- the robot's side of the protocol -----------------------------------------------------
    def process_commands(self) -> None:
        if self.offline:
            self._post_process_commands()  # the robot holds; nothing is read or answered
            return
        if self._late_answer is not None:
            sock, motion = self._late_answer
            self._late_answer = None
            if sock is not None and sock is self._tcp_socket:
                BaseCommand.send_response(sock, RobotCommand.kMove, motion, MoveStatus.kReflexAborted)
        super().process_commands()

    def send_state(self) -> None:
        if not self.offline:
            super().send_state()

    def _get_state_bytes(self) -> bytes:
        """The state sent once per tick, with the contact force estimate (franky-sim has none):
        one copy of franky-sim's state per tick (its dataclass copies cost the physics time)."""
        state = super().robot_state
        force = list(self._external_force())
        force[2] += self._bias(state)
        return state.replace(O_F_ext_hat_K=tuple(force), **self._fault_fields(state)).pack_state()

    @property
    def robot_state(self):
        state = super().robot_state
        fields = self._fault_fields(state)
        return state.replace(**fields) if fields else state

    def _fault_fields(self, state) -> dict:
        """What the faults in force change in the robot's state (nothing without faults)."""
        if not (self.user_stopped or self.errors or self.last_motion_errors):
            return {}
        mode = RobotMode.kUserStopped if self.user_stopped else RobotMode.kReflex if self.errors else state.robot_mode
        return {"robot_mode": mode, "errors": _flags(self.errors), "reflex_reason": _flags(self.last_motion_errors)}

    def _bias(self, state) -> float:
        """force_bias × the TCP's acceleration (finite differences of the pose, smoothed)."""
        if not self.force_bias:
            return 0.0
        t = self._sim_time()
        position = np.asarray(state.O_T_EE[12:15], float)
        if self._last_tcp is not None and t > self._last_tcp[0]:
            dt = t - self._last_tcp[0]
            velocity = (position - self._last_tcp[1]) / dt
            accel = float(np.linalg.norm(velocity - self._velocity)) / dt
            self._acceleration += 0.05 * (accel - self._acceleration)
            self._velocity = velocity
        self._last_tcp = (t, position)
        return self.force_bias * min(1.0, self._acceleration / BIAS_ACCELERATION)

    def fail_next_gripper_command(self) -> None:
        """Wrap the gripper server so that, with `gripper_fail` set, its next grasp or move
        answers kFail at once (called once the gripper server exists)."""
        gripper = self.gripper_server
        if gripper is None:
            return
        for name, command in (("start_move", GripperCommand.kMove), ("start_grasp", GripperCommand.kGrasp)):
            real = getattr(gripper, name)

            def start(*args, _real=real, _command=command):
                if not self.gripper_fail:
                    return _real(*args)
                self.gripper_fail = False
                command_id, sock = args[-2], args[-1]
                BaseCommand.send_response(sock, _command, command_id, GripperCommandStatus.kFail,
                                          command_type_struct="H", status_type_struct="H")
            setattr(gripper, name, start)


def _number(fault: str, arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"fault {fault!r} needs a number after ':'") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"fault {fault!r}: the number must be finite and ≥ 0")
    return value

"""The controller's settings: every `controller` node parameter, with its default and meaning
(graspvla_ros.settings builds the node's parameter table, config/controller.yaml and the docs
from these fields)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from graspvla_ros.control.gripper import GripperSettings
from graspvla_ros.latency import WINDOW_S
from graspvla_ros.safety import SafetyLimits
from graspvla_ros.settings import setting

STRATEGIES = ("streaming", "official_blocking", "official_nonblocking")
FRANKA_HAND_EE = 0.1034  # m, flange → EE of Desk's "Franka Hand" end-effector setting


@dataclass(frozen=True)
class ContactSettings:
    """The official reaction to contact: |F_z| above `force_limit` → back off `lift` m along the
    tool axis (with up to `jitter` m sideways), then IDLE: a new history."""

    force_limit: float = setting(15.0, "N, |F_z| of the estimated external force that triggers the retreat, checked "
                                       "inside franky's 1 kHz loop (official 15)")
    lift: float = setting(0.05, "m the retreat backs off along the tool axis (up, for the hand pointing down)")
    jitter: float = setting(0.01, "m, random sideways offset of the retreat")


@dataclass(frozen=True)
class Compliance:
    """How the arm yields on contact: the official client's Cartesian impedance (2000 N/m,
    150 Nm/rad) in the Franka's own Cartesian impedance controller, and reflex thresholds above
    the 15 N contact reaction, so the controller retreats before a reflex."""

    cartesian_impedance: tuple[float, ...] = setting(
        (2000.0, 2000.0, 2000.0, 150.0, 150.0, 150.0),
        "N/m ×3, Nm/rad ×3: the Franka's Cartesian impedance controller (official 2000 / 150)")
    torque_threshold: float = setting(40.0, "Nm, collision reflex threshold per joint (above the contact reaction)")
    force_threshold: float = setting(60.0, "N, Cartesian collision reflex threshold (above `contact.force_limit`)")


@dataclass(frozen=True)
class Timing:
    """Waits of the official client (s, m, rad); not parameters: they define the strategies."""

    step_timeout: float = 0.1                 # official_blocking: per waypoint, toward step_tolerance
    step_tolerance: tuple[float, float] = (0.01, math.radians(10))
    settle_timeout: float = 2.0               # official_blocking: at the chunk's end
    settle_tolerance: tuple[float, float] = (0.005, math.radians(5))
    reach_timeout: float = 1.0                # to reach the waypoint carrying a gripper change (after its due time)


@dataclass(frozen=True)
class ControllerSettings:
    robot_ip: str = setting("172.16.0.2", "IP address of the Franka control box")
    connect_timeout: float = setting(
        0.0, "s to keep retrying the connection at start-up (a robot booting, FCI not activated yet in Desk; said "
             "once, then every 30 s with the time waited); 0 = until the robot answers; a protocol mismatch fails "
             "at once")
    realtime: bool = setting(False, "`true` = `RealtimeConfig.Enforce` (needs a real-time kernel; use it on the "
                                    "robot), else `Ignore`")
    relative_dynamics_factor: float = setting(
        0.3, "franky's global velocity/acceleration/jerk scale (0 < f ≤ 1); lower it for the first grasps on a new "
             "set-up; applies from the next motion", live=True)
    limit_rate: bool = setting(
        True, "libfranka's rate limiter on every command (smooths the commanded signal against acceleration/jerk "
              "discontinuity reflexes on the real arm)")
    strategy: str = setting("streaming", "`streaming`, `official_blocking` or `official_nonblocking` (above)")
    state_rate_hz: float = setting(200.0, "rate of `/joint_states`, `/graspvla/ee_pose`, `/graspvla/gripper_width` "
                                          "(≥ 100)")
    tcp_offset: float = setting(
        0.03, "m along the EE z added to franky's EE frame: 0.03 = GraspVLA's 3D-printed finger extensions "
              "(official set-up); the sim graph sets 0.0")
    ee_offset: float = setting(
        FRANKA_HAND_EE, "m, flange → end effector that Desk must be set to (the Franka Hand: 0.1034); at connect "
                        "the controller warns when the robot reports another (its TCP would be off by the difference)")
    base_frame: str = setting("base", "the frame chunks must be in and poses are published in")
    tcp_frame: str = setting("graspvla_tcp", "child frame of `/tf` base → TCP (not the URDF's `fr3_hand_tcp`: a "
                                             "robot_state_publisher may publish that one)")
    tf_rate_hz: float = setting(50.0, "rate of `/tf` base → `tcp_frame` (0: off; needs the tf2_msgs package)")
    latency_window: float = setting(WINDOW_S, "s of chunks (steady clock) up to the newest that the latency "
                                              "chain's p50/p99 on /diagnostics cover")
    arm_id: str = setting("fr3", "joint name prefix (`panda` for a Panda)")
    home_on_start: bool = setting(True, "home (open the gripper, then move to the reset pose) after connecting")
    dry_run: bool = setting(
        False, "the first day on a new set-up: compute every motion and publish it (`~/planned_path`, "
               "`~/planned_markers`) but never move the arm or the gripper")
    max_reflexes: int = setting(3, "reflexes within `reflex_window` s that end in FAULT (fewer: recover and hold)")
    reflex_window: float = setting(10.0, "s, the window `max_reflexes` counts in")
    gripper: GripperSettings = field(default_factory=GripperSettings)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    contact: ContactSettings = field(default_factory=ContactSettings)
    compliance: Compliance = field(default_factory=Compliance)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0.0 < self.relative_dynamics_factor <= 1.0:
            raise ValueError(f"relative_dynamics_factor must be in (0, 1], got {self.relative_dynamics_factor}")
        if self.max_reflexes < 1 or not self.reflex_window > 0:
            raise ValueError("max_reflexes must be ≥ 1 and reflex_window > 0")
        if not self.latency_window > 0:
            raise ValueError(f"latency_window must be > 0 s, got {self.latency_window}")
        if self.tf_rate_hz < 0:
            raise ValueError(f"tf_rate_hz must be ≥ 0 (0: off), got {self.tf_rate_hz}")
        if self.connect_timeout < 0:
            raise ValueError(f"connect_timeout must be ≥ 0 s (0: until the robot answers), "
                             f"got {self.connect_timeout}")

    @property
    def connect_wait(self) -> float:
        """s the start-up connection retries for: `connect_timeout`, where 0 means for ever."""
        return self.connect_timeout or math.inf

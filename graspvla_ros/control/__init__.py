"""Executing GraspVLA chunks on a Franka arm, in small parts:

- `planner`: chunk + pose + time → timed waypoints and franky set-points (pure);
- `state`: the state machine, its lock and the notifier thread;
- `slot`: the latest-wins chunk slot;
- `gripper`: gripper settings (official defaults) and the fingers' driver;
- `franky_adapter`: the only module that talks to franky;
- `executor`: the worker that ties them together (strategies, grasp gating, contact, e-stop).
"""
from graspvla_ros.control.executor import (HOME_POSITION, HOME_RPY, ContactSettings, FrankaExecutor, Strategy,
                                           Timing)
from graspvla_ros.control.franky_adapter import (Compliance, FrankaProtocolMismatch, RobotState,
                                                 explain_connection_error)
from graspvla_ros.control.gripper import GripperSettings
from graspvla_ros.control.state import ControllerState

__all__ = ["HOME_POSITION", "HOME_RPY", "Compliance", "ContactSettings", "ControllerState", "FrankaExecutor",
           "FrankaProtocolMismatch", "GripperSettings", "RobotState", "Strategy", "Timing", "explain_connection_error"]

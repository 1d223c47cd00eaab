"""Executing GraspVLA chunks on a Franka arm, in small parts:

- `settings`: every controller parameter (the node's table is built from it);
- `planner`: chunk + pose + time → timed waypoints and franky set-points (pure);
- `state`: the state machine, its lock and the notifier thread;
- `slot`: the latest-wins chunk slot;
- `gripper`: gripper settings (official defaults) and the fingers' driver;
- `franky_adapter`: the only module that talks to franky (and names its exceptions);
- `gate`: the epoch-checked motion gate every motion command goes through;
- `strategies`: one class per execution strategy, with the position-gated gripper change;
- `homing`: home as a job;
- `recovery`: the controller's reaction to each robot fault and to contact;
- `arm_controller`: the API and the worker loop that ties them together.
"""
from graspvla_ros.control.arm_controller import ArmController
from graspvla_ros.control.franky_adapter import FrankaProtocolMismatch, RobotState, explain_connection_error
from graspvla_ros.control.gripper import GripperSettings
from graspvla_ros.control.settings import Compliance, ContactSettings, ControllerSettings, Timing
from graspvla_ros.control.state import ControllerState
from graspvla_ros.control.strategies import Strategy

__all__ = ["ArmController", "Compliance", "ContactSettings", "ControllerSettings", "ControllerState",
           "FrankaProtocolMismatch", "GripperSettings", "RobotState", "Strategy", "Timing", "explain_connection_error"]

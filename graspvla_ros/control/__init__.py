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

The names below load their module on first use, so that `graspvla_ros.control.settings` (which
the launch file reads on the system Python) imports without franky.
"""
from importlib import import_module

_MODULES = {"ArmController": "arm_controller", "FrankaProtocolMismatch": "franky_adapter",
            "RobotState": "franky_adapter", "explain_connection_error": "franky_adapter",
            "GripperSettings": "gripper", "Compliance": "settings", "ContactSettings": "settings",
            "ControllerSettings": "settings", "Timing": "settings", "ControllerState": "state",
            "Strategy": "strategies"}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)

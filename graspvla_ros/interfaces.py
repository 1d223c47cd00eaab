"""Names shared across the graph: controller states (and later topics, services).

ROS-free and import-free, so any part of the stack (the controller's core, the policy's core,
tools) can use the same names without importing another part.
"""
from __future__ import annotations

import enum


class ControllerState(str, enum.Enum):
    """What the controller is doing, as it publishes it on `<controller>/state`."""

    IDLE = "IDLE"          # connected, at rest, no chunk yet (also after a contact retreat: start a new history)
    RUNNING = "RUNNING"    # executing chunks
    HOLDING = "HOLDING"    # no fresh chunk for hold_timeout, `hold` called, or retreating from contact: holds a pose
    HOMING = "HOMING"      # opening the gripper and moving to the reset pose: chunks refused
    GRIPPER = "GRIPPER"    # a gripper change is under way (arm going to its waypoint, held while the fingers move)
    ESTOPPED = "ESTOPPED"  # latched stop: every chunk refused until release
    USER_STOPPED = "USER_STOPPED"  # the robot's user stop is pressed: chunks refused until it is released
    DISCONNECTED = "DISCONNECTED"  # the robot does not answer: reconnecting, chunks refused
    FAULT = "FAULT"        # error recovery failed: needs an operator (~/recover)

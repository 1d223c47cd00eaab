"""The sim graph's controller settings as an object, for the code that runs the controller's core
without its node (tests, benchmarks): the same parameters as the sim graph, not a copy of them.
Apart from graph.py, which the launch file imports on apt's Python, where franky is missing."""
from __future__ import annotations

from typing import Any

from graspvla_ros.control.settings import ControllerSettings
from graspvla_ros.graph import SIM_CONTROLLER
from graspvla_ros.settings import build


def sim_controller_settings(host: str, **params: Any) -> ControllerSettings:
    """The controller's settings in the sim graph on `host` (`params` by parameter name, e.g.
    `**{"safety.hold_timeout": 0.6}`)."""
    return build(ControllerSettings, {**SIM_CONTROLLER, "robot_ip": host, **params})

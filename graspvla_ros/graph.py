"""The one description of the ROS graph: which nodes run, with which parameters and remaps.

Both `launch/*.launch.py` (apt ROS 2 on a robot) and `graspvla_ros.bringup` (the project's
own runner behind `make demo` and the tests) are generated from these specs, so they
cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "graspvla_ros"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    `executable` is the console script installed by setup.py (what launch_ros runs);
    `module` is the same program as a Python module (what the bringup runner runs).
    `params_files` are names inside config/; `params` override them.
    """

    name: str
    executable: str
    module: str
    params_files: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    namespace: str = ""

    def ros_args(self, config_dir: Path = CONFIG_DIR) -> list[str]:
        """Command-line arguments (`--ros-args ...`) that realise this spec."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for f in self.params_files:
            args += ["--params-file", str(config_dir / f)]
        for key, value in self.params.items():
            args += ["-p", f"{key}:={format_param(value)}"]
        for src, dst in self.remaps.items():
            args += ["-r", f"{src}:={dst}"]
        return args


def format_param(value: Any) -> str:
    """A parameter value as `-p key:=value` expects it (YAML syntax)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_param(v) for v in value) + "]"
    if isinstance(value, str):  # quote what YAML would read as another type ("123", "true", "")
        plain = value and all(c.isalnum() or c in "_./-" for c in value) and isinstance(yaml.safe_load(value), str)
        return value if plain else repr(value)
    return repr(value)


def controller(**params: Any) -> NodeSpec:
    return NodeSpec(
        name="controller",
        executable="controller_node",
        module="graspvla_ros.nodes.controller_node",
        params_files=("controller.yaml",),
        params=params,
    )


def scripted_chunks(**params: Any) -> NodeSpec:
    """The demo's stand-in policy: streams a scripted square + gripper close/open, then exits."""
    return NodeSpec(
        name="scripted_chunks",
        executable="scripted_chunks_node",
        module="graspvla_ros.nodes.scripted_chunks_node",
        params_files=("scripted_chunks.yaml",),
        params=params,
    )


def policy(**params: Any) -> NodeSpec:
    """The policy: GraspVLA (backend `graspvla`) or the simulation's expert on the two cameras."""
    return NodeSpec(
        name="policy",
        executable="policy_node",
        module="graspvla_ros.nodes.policy_node",
        params_files=("policy.yaml",),
        params=params,
    )


def camera(name: str, **params: Any) -> NodeSpec:
    """One RealSense colour camera ("front" or "side"); set `serial` per camera on the robot."""
    return NodeSpec(
        name=f"{name}_camera",
        executable="camera_node",
        module="graspvla_ros.nodes.camera_node",
        params_files=("camera.yaml",),
        params={"name": name, **params},
    )


def sim_world(**params: Any) -> NodeSpec:
    """franky-sim (FR3 on `host`) with the table world and the two simulated cameras."""
    return NodeSpec(
        name="sim_world",
        executable="sim_world_node",
        module="graspvla_ros.nodes.sim_world_node",
        params_files=("sim_world.yaml",),
        params=params,
    )


SIM_HOST = "127.0.0.1"


def sim_graph(**arguments: str) -> list[NodeSpec]:
    """The whole stack against the simulated world (no hardware); the controller retries
    its connection until sim_world's franky-sim is up."""
    rate = {"camera_rate_hz": float(arguments["sim_camera_rate_hz"])} if "sim_camera_rate_hz" in arguments else {}
    return [sim_world(host=SIM_HOST, **rate), controller(robot_ip=SIM_HOST)]


def robot_graph(**arguments: str) -> list[NodeSpec]:
    """The whole stack on a real Franka with two RealSense cameras (defaults from config/)."""
    def given(**params: str) -> dict[str, str]:
        return {k: v for k, v in params.items() if v is not None}

    return [controller(**given(robot_ip=arguments.get("robot_ip"))),
            camera("front", **given(serial=arguments.get("front_serial"))),
            camera("side", **given(serial=arguments.get("side_serial")))]


GRAPHS = {"sim": sim_graph, "robot": robot_graph}

# Arguments of the graphs, as `ros2 launch ... name:=value` and `bringup GRAPH name:=value` take them.
GRAPH_ARGUMENTS = {
    "robot_ip": "IP address of the Franka control box (robot graph)",
    "front_serial": "serial number of the front RealSense; empty: the only one connected (robot graph)",
    "side_serial": "serial number of the side RealSense (robot graph)",
    "sim_camera_rate_hz": "rate of the simulated cameras; rendering runs on the CPU beside the physics (sim graph)",
}


def build(graph: str, arguments: dict[str, str]) -> list[NodeSpec]:
    """The specs of `graph`, given the arguments that apply to it (others are ignored)."""
    return GRAPHS[graph](**{k: v for k, v in arguments.items() if k in GRAPH_ARGUMENTS and v != ""})

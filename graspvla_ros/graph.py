"""The one description of the ROS graph: which nodes run, with which parameters and remaps.

Both `launch/*.launch.py` (apt ROS 2 on a robot) and `graspvla_ros.bringup` (the project's
own runner behind `make demo` and the tests) are generated from these specs, so they
cannot drift apart. Each graph argument sets one node parameter and takes its meaning and
default from that parameter's settings field; `build` refuses, before any node starts, a graph
that cannot work as asked (`GraphError`: one line naming the argument to set).

Imports only what apt's Python has: `ros2 launch` runs the launch file on the system Python.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from graspvla_ros.bag.settings import PlaybackSettings, RecordingSettings
from graspvla_ros.camera.settings import CameraSettings
from graspvla_ros.control.settings import ControllerSettings
from graspvla_ros.graph_checks import GraphError, check, configured
from graspvla_ros.interfaces import (EE_POSE, GRIPPER_COMMAND, INSTRUCTION, SIM_INJECT_FAULT, SIM_SET_TARGET,
                                     camera_topics)
from graspvla_ros.policy.settings import PolicySettings
from graspvla_ros.settings import Param, format_param, params
from graspvla_ros.sim.settings import SimWorldSettings

PACKAGE = "graspvla_ros"


def share_dir() -> Path:
    """Where config/ and launch/ are: the source tree when this module runs from it (a checkout,
    `pip install -e`), else the package's installed share directory (`colcon build`, apt),
    found through the ament index, or under the Python prefix for a plain `pip install`.
    The source tree goes first so a checkout never reads an older installed copy's config."""
    source = Path(__file__).resolve().parent.parent
    if (source / "package.xml").is_file() and (source / "config").is_dir():
        return source
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        pass
    else:
        try:
            return Path(get_package_share_directory(PACKAGE))
        except PackageNotFoundError:
            pass
    prefix = Path(sys.prefix) / "share" / PACKAGE
    if (prefix / "config").is_dir():
        return prefix
    raise FileNotFoundError(f"{PACKAGE}: no config/ in the source tree ({source}), the ament index "
                            f"(AMENT_PREFIX_PATH; source install/setup.sh after colcon build) or {prefix}")


SHARE_DIR = share_dir()
CONFIG_DIR = SHARE_DIR / "config"
LAUNCH_DIR = SHARE_DIR / "launch"

# Set for every node of every graph, by the launch file and the bringup runner alike: Fast DDS's
# default transports drop most 640×480 images (docs/interfaces.md, "Graphs and their arguments").
ENVIRONMENT = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
# ... except on two hosts: LARGE_DATA carries data over TCP, and Fast DDS's TCP transport blocks
# every publish that has a reader on the other host while the link is down (measured with
# tests/test_two_hosts.py: the controller's pose stream, the sim's physics, stalled until the
# link came back), so the nodes of a split graph use UDP between hosts (shared memory within one).
SPLIT_ENVIRONMENT = {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    `executable` is the console script installed by setup.py (what launch_ros runs);
    `module` is the same program as a Python module (what the bringup runner runs).
    `params_files` are names inside config/; `params` override them. `prefix` goes before the
    command (launch_ros's `prefix`: a debugger, `nsenter` into a test host's network namespace);
    `env` is set for the process over the shell's and ENVIRONMENT.
    """

    name: str
    executable: str
    module: str
    params_files: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    namespace: str = ""
    prefix: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

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


def _node(program: str, name: str, params: dict[str, Any]) -> NodeSpec:
    """The node `graspvla_ros.nodes.<program>` (console script `<program>`) named `name`, with
    its defaults from config/<program without _node>.yaml."""
    return NodeSpec(name=name, executable=program, module=f"graspvla_ros.nodes.{program}",
                    params_files=(f"{program.removesuffix('_node')}.yaml",), params=params)


def controller(**params: Any) -> NodeSpec:
    """Streams action chunks to the Franka through franky, inside the safety limits."""
    return _node("controller_node", "controller", params)


def scripted_chunks(**params: Any) -> NodeSpec:
    """A scripted stand-in policy (square + gripper close/open) for the controller's tests and benchmark."""
    return _node("scripted_chunks_node", "scripted_chunks", params)


def policy(**params: Any) -> NodeSpec:
    """GraspVLA on the two camera views: instructions in, action chunks out (`backend` picks
    the model runtime, or `expert`, the simulation's ground-truth planner)."""
    return _node("policy_node", "policy", params)


def camera(name: str, **params: Any) -> NodeSpec:
    """One RealSense colour camera ("front" or "side"); set `serial` per camera on the robot."""
    return _node("camera_node", f"{name}_camera", {"name": name, **params})


def model_view(**params: Any) -> NodeSpec:
    """The official client's view of each camera (crop, 256², JPEG), for a policy on the other host."""
    return _node("model_view_node", "model_view", params)


def sim_world(**params: Any) -> NodeSpec:
    """franky-sim (FR3 on `host`) with the table world and the two simulated cameras."""
    return _node("sim_world_node", "sim_world", params)


def recorder(**params: Any) -> NodeSpec:
    """Records the stack's topics to rosbag2 MCAP, a bag per episode by default."""
    return _node("recorder_node", "recorder", params)


def player(**params: Any) -> NodeSpec:
    """Publishes a recorded bag's topics with their original timing."""
    return _node("player_node", "player", params)


SIM_HOST = "127.0.0.1"
# The controller's parameters in simulation: franky-sim's own hand (no finger extensions), and
# grasps that squeeze: franky-sim drives the fingers to exactly the commanded width, so the
# official grasp(0.04, ε ±0.04) would stop at 4 cm and never squeeze a 4 cm object.
# Without a GPU the simulated cameras render on the CPU (50–300 ms a pair on the loaded 2-core
# test machine), so their pairs reach the policy older than a real camera's: the controller takes
# chunks observed up to 1.2 s ago, the policy views up to 0.9 s old. libfranka's rate limiter
# starts from the commanded pose the robot echoes (O_T_EE_c), which franky-sim does not keep up:
# with it, motions end short there (a home 3 cm off), so the sim runs without it.
SIM_CONTROLLER = {"tcp_offset": 0.0, "limit_rate": False, "gripper.grasp_width": 0.0, "gripper.grasp_speed": 0.1, "gripper.force": 35.0,
                  "gripper.epsilon_inner": 0.005, "gripper.epsilon_outer": 0.08, "safety.max_chunk_age": 1.2}


# Simulated objects sag 1–3 cm in the fingers as the lift starts: an episode succeeds at a 15 cm
# TCP lift (the expert lifts 20 cm), for sim_world's own 10 cm object lift. A CPU-starved
# simulator can pause its pose stream for seconds (sim.pace warns): the link watch waits 5 s.
SIM_POLICY = {"max_image_age": 0.9, "lift_success": 0.15, "link_timeout": 5.0}

# Topics a graph takes from outside (a person, the CLI, a test): no node of the graph publishes them.
INPUTS = {
    INSTRUCTION: "what to grasp (`graspvla say ...`)",
    f"/{SIM_SET_TARGET}": "the object whose grasp sim_world scores",
    f"/{SIM_INJECT_FAULT}": "a fault for the simulated robot (tests, benchmarks: sim.faults)",
}

# What the policy reads from a recorded episode; its own outputs (chunks, status, debug) are not
# played: the live policy makes them again and the recorder writes them to the new bag.
REPLAY_INPUTS = [*camera_topics(), EE_POSE, GRIPPER_COMMAND, INSTRUCTION]


def _sim_nodes() -> list[NodeSpec]:
    """The whole stack against the simulated world (no hardware), on ONE clock: sim_world
    publishes `/clock` from MuJoCo's time and every node runs with `use_sim_time`, so a
    CPU-starved simulator slows the whole world instead of skewing stamps against due times.
    The controller retries its connection until sim_world's franky-sim is up."""
    sim_time = {"use_sim_time": True}
    return [sim_world(host=SIM_HOST, **sim_time), policy(backend="expert", **SIM_POLICY, **sim_time),
            controller(robot_ip=SIM_HOST, **SIM_CONTROLLER, **sim_time)]


def _robot_nodes() -> list[NodeSpec]:
    """The whole stack on a real Franka with two RealSense cameras (defaults from config/)."""
    return [camera("front"), camera("side"), policy(), controller()]


def _replay_nodes() -> list[NodeSpec]:
    """A recorded episode into the live policy, on the bag's clock: the player publishes the
    recorded inputs with their original timing and `/clock` from the bag time, the policy
    answers as it did on the robot and the recorder writes its answers to a bag of their own
    (`graspvla replay-test` compares chunk by chunk without ROS; this graph is the same episode
    through DDS, to look at in Foxglove). Not lock-step: released in one burst, the 200 Hz pose
    stream would overrun the policy's pose queue."""
    sim_time = {"use_sim_time": True}
    # each input waits for both readers (policy, recorder), so the new bag starts at the instruction
    # the bag's poses end with the bag: no link to watch
    return [player(topics=REPLAY_INPUTS, clock=100.0, wait_for_subscribers=2), policy(link_timeout=0.0, **sim_time),
            recorder(bag_prefix="replay", **sim_time)]


NODES = {"sim": _sim_nodes, "robot": _robot_nodes, "replay": _replay_nodes}
GRAPHS = tuple(NODES)

# Where the nodes of the sim and robot graphs run: one machine (`all`), or two, the GPU machine
# running the policy (`policy`) and the real-time PC the rest (`robot`: cameras, controller,
# sim_world), each started with the same arguments. They meet over DDS in one ROS domain.
HOSTS = {"all": lambda spec: True, "robot": lambda spec: spec.name != "policy",
         "policy": lambda spec: spec.name == "policy"}
SPLIT_GRAPHS = ("sim", "robot")


@dataclass(frozen=True)
class GraphArgument:
    """`name:=value` of `graphs`: sets parameter `param` of the node named `node`, a field of
    `settings` (the dataclass that node's parameter table takes it from), whose meaning, type
    and default are the argument's; `note` adds what the graph makes of it."""

    name: str
    node: str
    settings: type
    param: str
    graphs: tuple[str, ...] = GRAPHS
    note: str = ""

    @property
    def spec(self) -> Param:
        return next(p for p in params(self.settings) if p.name == self.param)

    def value(self, text: str) -> Any:
        """`text` (as `ros2 launch` and bringup take it) as the parameter's type."""
        default = self.spec.default
        if isinstance(default, str):
            return text  # kept as written: a serial "012345" keeps its zero
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # not YAML at all: refused below as text
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(default), "a list")
            raise GraphError(f"{self.name}:={text}: must be {kind} (the type of {self.node} `{self.param}`)")
        return value

    def default(self, graph: str) -> Any:
        """What the node gets in `graph` when the argument is not given."""
        spec = next(s for s in NODES[graph]() if s.name == self.node)
        return spec.params.get(self.param, self.spec.default)

    def defaults(self) -> str:
        """Its default in each of its graphs: "`graspvla`", or "`expert` (sim); `graspvla` (robot, replay)"."""
        graphs: dict[str, list[str]] = {}
        for graph in self.graphs:
            graphs.setdefault(format_param(self.default(graph)), []).append(graph)
        return "; ".join(f"`{value}`" + ("" if len(graphs) == 1 else f" ({', '.join(names)})")
                         for value, names in graphs.items())

    def description(self) -> str:
        """The parameter's meaning, the node parameter it sets and its defaults (launch, --help)."""
        return (f"{self.spec.meaning}{f'. {self.note}' if self.note else ''}. Sets `{self.node}` `{self.param}`; "
                f"default {self.defaults()}")


GRAPH_ARGUMENTS = {a.name: a for a in (
    GraphArgument("robot_ip", "controller", ControllerSettings, "robot_ip", ("robot",)),
    GraphArgument("front_serial", "front_camera", CameraSettings, "serial", ("robot",),
                  "Required on the robot graph (`rs-enumerate-devices -s` lists the serials); kept a string: "
                  "leading zeros survive"),
    GraphArgument("side_serial", "side_camera", CameraSettings, "serial", ("robot",), "Required; not `front_serial`"),
    GraphArgument("backend", "policy", PolicySettings, "backend",
                  note="`expert` only on the sim graph (the others refuse it)"),
    GraphArgument("checkpoint", "policy", PolicySettings, "checkpoint",
                  note="Required (an existing directory) for the `graspvla` backend unless `tiny:=true`"),
    GraphArgument("llm_dir", "policy", PolicySettings, "llm_dir"),
    GraphArgument("tiny", "policy", PolicySettings, "tiny"),
    GraphArgument("rate_hz", "policy", PolicySettings, "rate_hz"),
    GraphArgument("device", "policy", PolicySettings, "device"),
    GraphArgument("transport", "policy", PolicySettings, "transport", ("sim", "robot"),
                  "`model_view` adds `model_view` (model_view_node) to the robot host, with the policy's `jpeg_quality`"),
    GraphArgument("history", "policy", PolicySettings, "history", note="`commanded` goes with strategy:=official_blocking"),
    GraphArgument("strategy", "controller", ControllerSettings, "strategy", ("sim", "robot"),
                  "`official_blocking` goes with history:=commanded"),
    GraphArgument("dry_run", "controller", ControllerSettings, "dry_run", ("sim", "robot")),
    GraphArgument("sim_camera_rate_hz", "sim_world", SimWorldSettings, "camera_rate_hz", ("sim",)),
    GraphArgument("bag", "player", PlaybackSettings, "bag", ("replay",),
                  "Required on the replay graph; it must hold each topic of `graph.REPLAY_INPUTS`"),
    GraphArgument("play_rate", "player", PlaybackSettings, "rate", ("replay",)),
    GraphArgument("output_dir", "recorder", RecordingSettings, "output_dir", ("replay",)),
)}


def build(graph: str, arguments: dict[str, str], host: str = "all") -> list[NodeSpec]:
    """The specs of `graph` with the arguments that apply to it (others, and empty ones as
    `ros2 launch` passes for unset arguments, are ignored), the part of it that runs on `host`
    (HOSTS), with SPLIT_ENVIRONMENT on a split one; GraphError when it must not start. The
    whole graph is checked on either host."""
    if graph not in NODES:
        raise GraphError(f"no graph {graph!r}; graphs: {', '.join(GRAPHS)}")
    if host not in HOSTS:
        raise GraphError(f"host:={host}: must be one of {', '.join(HOSTS)}")
    if host != "all" and graph not in SPLIT_GRAPHS:
        raise GraphError(f"host:={host}: only the {' and '.join(SPLIT_GRAPHS)} graphs split across two hosts")
    given = [(a, a.value(arguments[a.name])) for a in GRAPH_ARGUMENTS.values()
             if graph in a.graphs and arguments.get(a.name, "") != ""]
    specs = [replace(s, params={**s.params, **{a.param: v for a, v in given if a.node == s.name}})
             for s in NODES[graph]()]
    specs += _model_view(specs)
    check(graph, specs, CONFIG_DIR)
    if host == "all":
        return specs
    return [replace(s, env={**s.env, **SPLIT_ENVIRONMENT}) for s in specs if HOSTS[host](s)]


def _model_view(specs: list[NodeSpec]) -> list[NodeSpec]:
    """model_view_node where the policy takes `transport: model_view`: it encodes at the policy's
    `jpeg_quality` (one source: the model sees what the policy would have made of the raw frames)."""
    policy_spec = next((s for s in specs if s.name == "policy"), None)
    if policy_spec is None or configured(policy_spec, "transport", CONFIG_DIR) != "model_view":
        return []
    quality = configured(policy_spec, "jpeg_quality", CONFIG_DIR)
    sim_time = {"use_sim_time": True} if policy_spec.params.get("use_sim_time") else {}
    return [model_view(jpeg_quality=quality, **sim_time)]


def sim_graph(**arguments: str) -> list[NodeSpec]:
    """The sim graph (`build("sim", arguments)`), what the demo, tests and benchmarks start from."""
    return build("sim", arguments)


def configure(specs: list[NodeSpec], **params: dict[str, Any]) -> list[NodeSpec]:
    """`specs` with more parameters for the nodes named by the keywords, e.g.
    `configure(sim_graph(), sim_world={"seed": 3})`: how the demo, tests and benchmarks run a
    graph of this module with their own settings instead of a copy of it."""
    unknown = set(params) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"no node named {sorted(unknown)} in the graph ({[s.name for s in specs]})")
    return [replace(s, params={**s.params, **params.get(s.name, {})}) for s in specs]

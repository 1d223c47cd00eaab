"""The graph description (graspvla_ros/graph.py): arguments reach the nodes with their types,
every file, executable and parameter it names exists and is declared (also after a real
`colcon build`), and the sim graph, running, is connected and on one clock.

Nodes whose module is not in this checkout yet (another branch's) are checked by their spec
and command line only; every other check covers them as soon as their module exists.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from graspvla_ros.graph import (CONFIG_DIR, ENVIRONMENT, GRAPH_ARGUMENTS, GRAPHS, INPUTS, SIM_HOST, SIM_POLICY,
                                GraphError, build, scripted_chunks)

ROOT = Path(__file__).resolve().parent.parent
# The least each graph needs to start (graph.check): the robot's two cameras, a bag to replay,
# and, where the model runs, a checkpoint (here the tiny one)
MINIMAL = {"sim": {}, "robot": {"front_serial": "012345", "side_serial": "678901", "tiny": "true"},
           "replay": {"bag": "/bags/ep1", "tiny": "true"}}
ALL_ARGUMENTS = {"robot_ip": "172.16.0.2", "front_serial": "012345", "side_serial": "678901",
                 "backend": "graspvla", "checkpoint": "/ckpt/graspvla", "llm_dir": "/ckpt/internlm2", "tiny": "true",
                 "rate_hz": "4", "sim_camera_rate_hz": "5"}
ROS_INFRASTRUCTURE = {"/rosout", "/parameter_events"}


def present(spec) -> bool:
    return importlib.util.find_spec(spec.module) is not None


def every_spec(arguments=None):
    """(graph, spec) for every node of every graph, with and without arguments."""
    for graph in GRAPHS:
        for args in (MINIMAL[graph], {**MINIMAL[graph], **ALL_ARGUMENTS}) if arguments is None else (arguments,):
            for spec in build(graph, args):
                yield graph, spec


def setup_py_nodes() -> dict[str, str]:
    """setup.py's NODES (console script → entry point), read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and [t.id for t in stmt.targets if isinstance(t, ast.Name)] == ["NODES"]:
            return ast.literal_eval(stmt.value)
    raise AssertionError("setup.py has no NODES table")


def flatten(params: dict, prefix: str = "") -> set[str]:
    names = set()
    for key, value in params.items():
        if isinstance(value, dict):
            names |= flatten(value, f"{prefix}{key}.")
        else:
            names.add(prefix + key)
    return names


# --- the specs and their command lines ---------------------------------------------------------

def test_robot_graph_runs_two_cameras_the_policy_and_the_controller_with_its_arguments():
    specs = {s.name: s for s in build("robot", ALL_ARGUMENTS)}
    assert list(specs) == ["front_camera", "side_camera", "policy", "controller"]
    policy = specs["policy"]
    assert (policy.executable, policy.module, policy.params_files) == (
        "policy_node", "graspvla_ros.nodes.policy_node", ("policy.yaml",))
    assert policy.params == {"backend": "graspvla", "checkpoint": "/ckpt/graspvla",
                             "llm_dir": "/ckpt/internlm2", "tiny": True, "rate_hz": 4.0}
    args = policy.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=policy"]
    assert ["--params-file", str(CONFIG_DIR / "policy.yaml")] == args[3:5]
    assert "rate_hz:=4.0" in args and "llm_dir:=/ckpt/internlm2" in args   # a float, not the string "4"
    assert specs["controller"].params == {"robot_ip": "172.16.0.2"}
    assert specs["front_camera"].params == {"name": "front", "serial": "012345"}
    assert specs["side_camera"].params == {"name": "side", "serial": "678901"}
    assert not any("use_sim_time" in s.params for s in specs.values())  # the robot is on wall time


def test_robot_graph_without_arguments_keeps_the_config_defaults():
    # `ros2 launch` passes "" for the arguments not given
    specs = {s.name: s for s in build("robot", {"robot_ip": "", "llm_dir": "", **MINIMAL["robot"]})}
    assert specs["policy"].params == {"tiny": True} and specs["controller"].params == {}


def test_sim_graph_runs_every_node_on_sim_time_with_the_expert_by_default(tmp_path):
    specs = {s.name: s for s in build("sim", {})}
    assert list(specs) == ["sim_world", "policy", "controller"]
    assert all(s.params["use_sim_time"] is True for s in specs.values())
    assert "-p" in specs["policy"].ros_args() and "use_sim_time:=true" in specs["policy"].ros_args()
    assert specs["policy"].params["backend"] == "expert"
    assert specs["controller"].params["robot_ip"] == specs["sim_world"].params["host"] == SIM_HOST
    specs = {s.name: s for s in build("sim", {"backend": "graspvla", "checkpoint": str(tmp_path), "rate_hz": "2.5",
                                              "sim_camera_rate_hz": "5", "robot_ip": "10.0.0.1"})}
    assert specs["policy"].params == {"backend": "graspvla", "checkpoint": str(tmp_path), "rate_hz": 2.5,
                                      "use_sim_time": True, **SIM_POLICY}
    assert specs["sim_world"].params["camera_rate_hz"] == 5.0
    assert specs["controller"].params["robot_ip"] == SIM_HOST          # robot_ip is the robot graph's


def test_two_hosts_split_the_graph_policy_apart_with_the_same_arguments():
    arguments = {**ALL_ARGUMENTS}
    whole = build("robot", arguments)
    robot, policy = build("robot", arguments, "robot"), build("robot", arguments, "policy")
    assert [s.name for s in robot] == ["front_camera", "side_camera", "controller"]
    assert [s.name for s in policy] == ["policy"]
    assert all(s.env == {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"} for s in robot + policy), "UDP between hosts"
    assert all(s.env == {} for s in whole)
    names = [s.name for s in whole]
    assert sorted((replace(s, env={}) for s in robot + policy), key=lambda s: names.index(s.name)) == whole, \
        "the two parts are the whole graph, unchanged"
    assert [s.name for s in build("sim", {}, "robot")] == ["sim_world", "controller"]
    with pytest.raises(GraphError, match="only the sim and robot graphs split"):
        build("replay", {"bag": "/bags/x"}, "policy")
    with pytest.raises(GraphError, match="host:=gpu: must be one of all, robot, policy"):
        build("sim", {}, "gpu")
    with pytest.raises(GraphError, match="front_serial"):   # each part checks the whole graph
        build("robot", {**arguments, "front_serial": ""}, "policy")
    out = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "sim", "--print", "host:=policy"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 1 and "graspvla_ros.nodes.policy_node" in out[0]


def test_transport_model_view_puts_the_encoder_on_the_robot_host_with_the_policys_jpeg_quality():
    arguments = {**ALL_ARGUMENTS, "transport": "model_view"}
    robot, policy = build("robot", arguments, "robot"), build("robot", arguments, "policy")
    assert [s.name for s in robot] == ["front_camera", "side_camera", "controller", "model_view"]
    assert [s.name for s in policy] == ["policy"] and policy[0].params["transport"] == "model_view"
    assert robot[-1].params == {"jpeg_quality": 75}
    sim = {s.name: s for s in build("sim", {"transport": "model_view"}, "robot")}
    assert sim["model_view"].params == {"jpeg_quality": 75, "use_sim_time": True}, "the sim graph's one clock"
    assert "model_view" not in {s.name for s in build("robot", ALL_ARGUMENTS)}, "raw frames by default"
    with pytest.raises(GraphError, match="transport:=jpeg: must be one of raw, model_view"):
        build("sim", {"transport": "jpeg"})


def test_bringup_prints_the_command_lines_of_the_graph():
    out = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "robot", "--print", "rate_hz:=3",
                          "backend:=graspvla", *(f"{k}:={v}" for k, v in MINIMAL["robot"].items())],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    policy_line = next(line for line in out if "graspvla_ros.nodes.policy_node" in line)
    assert "-p backend:=graspvla -p tiny:=true -p rate_hz:=3.0" in policy_line
    bad = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "robot", "rate:=3"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown graph argument" in bad.stderr and "rate_hz" in bad.stderr


def test_every_graph_argument_is_documented():
    doc = (ROOT / "docs" / "interfaces.md").read_text()
    section = doc.split("## Graphs and their arguments", 1)[1].split("\n## ", 1)[0]
    for name in GRAPH_ARGUMENTS:
        assert f"`{name}`" in section, name


# --- graph checks: files, executables, parameters ----------------------------------------------

def test_every_executable_is_a_console_script_of_its_module():
    nodes = setup_py_nodes()
    for graph, spec in every_spec():
        if present(spec):
            assert nodes.get(spec.executable) == f"{spec.module}:main", (graph, spec.name)


def test_every_parameter_set_in_config_or_the_graph_is_declared_by_its_node():
    for graph, spec in every_spec():
        if not present(spec):
            continue
        declared = {p.name for p in importlib.import_module(spec.module).PARAMS} | {"use_sim_time"}
        for name in spec.params_files:
            config = yaml.safe_load((CONFIG_DIR / name).read_text())
            assert set(config) == {"/**"}, name
            undeclared = flatten(config["/**"]["ros__parameters"]) - declared
            assert not undeclared, f"{name} sets {undeclared}, not declared by {spec.module}"
        undeclared = set(spec.params) - declared
        assert not undeclared, f"{graph} graph sets {undeclared} on {spec.name}, not declared by {spec.module}"


def test_a_float_parameter_given_as_an_integer_reads_as_a_float_and_text_there_is_refused():
    import rclpy
    from rclpy.parameter import Parameter

    from graspvla_ros.nodes.params import Param, declare

    table = (Param("episode_timeout", 60.0, "s"), Param("name", "front", "a string"))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("params_int", context=context,
                                 parameter_overrides=[Parameter("episode_timeout", value=90)])
        values = declare(node, table)
        assert values == {"episode_timeout": 90.0, "name": "front"} and isinstance(values["episode_timeout"], float)
        bad = rclpy.create_node("params_text", context=context,
                                parameter_overrides=[Parameter("episode_timeout", value="long")])
        with pytest.raises(ValueError, match="'episode_timeout' must be a number, got 'long'"):
            declare(bad, table)
    finally:
        rclpy.shutdown(context=context)


def test_launch_file_and_bringup_set_the_dds_transport_that_scripts_isolated_sets():
    source = (ROOT / "launch" / "graspvla.launch.py").read_text()
    tree = ast.parse(source)
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "SetEnvironmentVariable" in calls and "ENVIRONMENT.items()" in source
    assert "CONFIG_DIR / f" in source           # config from the share directory, like the runner
    isolated = (ROOT / "scripts" / "isolated").read_text()
    for name, value in ENVIRONMENT.items():
        assert f'export {name}="${{{name}:-{value}}}"' in isolated


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    """The package built with `colcon build` (no symlink install) in a fresh workspace, from
    the files git tracks: what a user's clone has, nothing built or cached here."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "graspvla_ros"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    colcon = Path(sys.executable).parent / "colcon"
    build = subprocess.run([str(colcon), "build", "--packages-select", "graspvla_ros"], cwd=ws,
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    return ws / "install"


INSTALLED_CHECK = r"""
import importlib.util, json, os, sys
from pathlib import Path
import graspvla_ros.graph as g
print(json.dumps({
    "module": g.__file__, "share": str(g.SHARE_DIR), "config": str(g.CONFIG_DIR), "launch": str(g.LAUNCH_DIR),
    "specs": [{"graph": graph, "name": s.name, "executable": s.executable, "present": importlib.util.find_spec(s.module) is not None,
               "files": [a for a in s.ros_args() if a.endswith(".yaml")]}
              for graph in g.GRAPHS for s in g.build(graph, json.loads(sys.argv[1])[graph])],
}))
"""


def test_colcon_install_resolves_every_file_the_graph_names(colcon_install, tmp_path):
    """Sourced like a robot user would (install/setup.sh), from another directory and without this
    checkout on PYTHONPATH: the graph reads config/ and launch/ from share/graspvla_ros and every
    executable it runs is installed in lib/graspvla_ros."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    run = subprocess.run(["sh", "-c", f'. "{colcon_install}/setup.sh" && exec "{sys.executable}" -c "$0" "$1"',
                          INSTALLED_CHECK, json.dumps(MINIMAL)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    share = colcon_install / "graspvla_ros" / "share" / "graspvla_ros"
    assert Path(found["module"]).is_relative_to(colcon_install), found["module"]
    assert Path(found["share"]) == share and Path(found["config"]) == share / "config"
    assert (Path(found["launch"]) / "graspvla.launch.py").is_file()
    lib = colcon_install / "graspvla_ros" / "lib" / "graspvla_ros"
    checked = 0
    for spec in found["specs"]:
        if not spec["present"]:
            continue
        assert os.access(lib / spec["executable"], os.X_OK), spec
        for f in spec["files"]:
            assert Path(f).is_relative_to(share) and Path(f).is_file(), (spec, f)
        checked += 1
    assert checked >= 4


# --- the sim graph, running --------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_graph_running():
    """The sim graph's nodes that exist in this checkout; the demo's scripted chunks stand in for
    the policy where its module is not here yet. Output goes to a log, shown on failure."""
    from graspvla_ros.bringup import Bringup

    specs = [s for s in build("sim", {"sim_camera_rate_hz": "5"}) if present(s)]
    if not any(s.name == "policy" for s in specs):
        # a slow square (~2 min of sim time): it exits when done, and must outlive these tests'
        # checks even on a loaded machine
        specs.append(scripted_chunks(use_sim_time=True, start_timeout=240.0, speed=0.003))
    log = open(os.environ.get("ROS_LOG_DIR", "/tmp") + f"/sim_graph_{os.getpid()}.log", "w+")
    with Bringup(specs, out=log) as graph:
        yield graph, [s.name for s in specs]
    log.close()


def _ns_names(node):
    return {name for name, _ns in node.get_node_names_and_namespaces()}


def _died(graph) -> list[tuple[str, int]]:
    """Nodes that exited, except the scripted chunks, which end by themselves."""
    return [(name, rc) for name, rc in graph.failed() if name != "scripted_chunks"]


@pytest.mark.sim
@pytest.mark.ros
def test_every_subscription_in_the_sim_graph_has_a_publisher(sim_graph_running, ros_node):
    from conftest import wait_for

    graph, names = sim_graph_running
    expected = set(names) | {"sim_world_cameras"}
    wait_for(lambda: expected <= _ns_names(ros_node) or _died(graph), 180, f"nodes {expected}")
    assert expected <= _ns_names(ros_node), f"nodes missing: {expected - _ns_names(ros_node)}, exited: {graph.failed()}"
    assert not _died(graph)
    required = {"/clock", "/front/color/image_raw", "/side/color/image_raw", "/graspvla/ee_pose",
                "/graspvla/action_chunk"}

    def survey():
        publishers, subscriptions = set(), {}
        for name in expected:
            publishers |= {t for t, _ in ros_node.get_publisher_names_and_types_by_node(name, "/")}
            subscriptions[name] = frozenset(
                t for t, _ in ros_node.get_subscriber_names_and_types_by_node(name, "/")) - ROS_INFRASTRUCTURE
        return frozenset(publishers), subscriptions

    # endpoints show up one by one after a node appears: wait for the ones every node must have,
    # then until the whole picture has stopped changing for 2 s
    def basics_seen() -> bool:
        publishers, subscriptions = survey()
        return required <= publishers and all("/clock" in subscriptions[n] for n in names)

    wait_for(basics_seen, 120, f"every node on /clock and the publishers {required}")
    seen, deadline = survey(), time.monotonic() + 2.0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = survey()
        if now != seen:
            seen, deadline = now, time.monotonic() + 2.0
    publishers, subscriptions = seen
    unpublished = {name: sorted(topics - publishers - set(INPUTS)) for name, topics in subscriptions.items()}
    assert not any(unpublished.values()), f"subscriptions nobody in the sim graph publishes: {unpublished}"


@pytest.mark.sim
@pytest.mark.ros
def test_sim_graph_runs_on_the_simulated_clock(sim_graph_running, ros_node):
    """/clock advances with the physics (never faster than real time: the physics is paced to it),
    and the controller's TCP pose and both cameras are stamped in sim time."""
    from geometry_msgs.msg import PoseStamped
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from conftest import wait_for
    from graspvla_ros.nodes.camera_node import image_qos

    graph, _ = sim_graph_running
    clock, poses, front, side = [], [], [], []
    wall = []
    ros_node.create_subscription(Clock, "/clock", lambda m: (clock.append(m.clock.sec + m.clock.nanosec * 1e-9),
                                                              wall.append(time.monotonic())), 10)
    ros_node.create_subscription(PoseStamped, "/graspvla/ee_pose", poses.append, 10)
    ros_node.create_subscription(Image, "/front/color/image_raw", front.append, image_qos("sensor_data"))
    ros_node.create_subscription(Image, "/side/color/image_raw", side.append, image_qos("sensor_data"))
    wait_for(lambda: (clock and len(poses) > 50 and len(front) > 2 and len(side) > 2) or _died(graph), 180,
             "/clock, TCP poses and images from the sim graph")
    assert not _died(graph)
    first = len(clock)
    wait_for(lambda: clock[-1] - clock[first - 1] > 3.0 or _died(graph), 120, "3 s of simulated time")
    sim, real = clock[-1] - clock[first - 1], wall[-1] - wall[first - 1]
    assert all(b >= a for a, b in zip(clock, clock[1:])), "/clock went backwards"
    # (slack for delivery delays of the first and last message under load)
    assert 0 < sim <= real * 1.05 + 0.5, f"{sim:.2f} s simulated in {real:.2f} s"
    lo, hi = min(clock) - 0.5, max(clock) + 0.5

    def stamp(msg):
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    late = [stamp(m) for m in poses if stamp(m) >= clock[0]]
    assert late and all(lo <= s <= hi for s in late), "TCP poses not stamped in sim time"
    assert all(stamp(m) < 1e6 for m in poses + front + side)          # not wall time (~1.8e9)
    for images in (front, side):   # the sim time of their snapshot: never ahead of /clock
        assert all(stamp(m) <= hi for m in images) and any(stamp(m) >= lo for m in images)
    # both views of one snapshot carry its sim time: the pair has one exposure stamp
    assert {stamp(m) for m in front} & {stamp(m) for m in side}

"""Graph arguments come from the node parameters they set, and a graph that would start but
not work is refused before any node starts, with one line naming the argument to set."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest
import yaml

from graspvla_ros.graph import CONFIG_DIR, GRAPH_ARGUMENTS, NODES, GraphError, build, policy
from graspvla_ros.graph_checks import configured

CAMERAS = {"front_serial": "012345", "side_serial": "678901"}


def test_each_graph_argument_is_the_parameter_of_the_node_it_sets():
    """Its meaning, default and type are those of the node's own table (the node module's PARAMS)."""
    for argument in GRAPH_ARGUMENTS.values():
        for graph in argument.graphs:
            spec = next(s for s in NODES[graph]() if s.name == argument.node)
            table = {p.name: p for p in importlib.import_module(spec.module).PARAMS}
            assert table[argument.param] == argument.spec, (argument.name, graph)
        assert argument.spec.meaning in argument.description()


def test_defaults_shown_are_what_each_graph_starts_the_node_with():
    assert GRAPH_ARGUMENTS["backend"].defaults() == "`expert` (sim); `graspvla` (robot, replay)"
    assert GRAPH_ARGUMENTS["robot_ip"].defaults() == "`172.16.0.2`"
    assert GRAPH_ARGUMENTS["rate_hz"].defaults() == "`5.0`"
    policy_yaml = yaml.safe_load((CONFIG_DIR / "policy.yaml").read_text())
    assert policy_yaml["/**"]["ros__parameters"]["backend"] == "graspvla"   # the model by default, on the robot


def test_bringup_help_describes_every_argument_from_its_parameter():
    out = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "robot", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name, argument in GRAPH_ARGUMENTS.items():
        assert f"{name}:=  ({', '.join(argument.graphs)}) {argument.description()}" in out


def test_values_take_the_type_of_the_parameter_and_another_type_is_refused():
    specs = {s.name: s for s in build("robot", {**CAMERAS, "tiny": "true", "rate_hz": "4"})}
    assert specs["policy"].params == {"tiny": True, "rate_hz": 4.0}
    assert specs["front_camera"].params["serial"] == "012345"
    for text, kind in (("rate_hz:=fast", "a number"), ("rate_hz:=[", "a number"), ("tiny:=3", "true or false")):
        name, value = text.split(":=")
        with pytest.raises(GraphError, match=f"^{re.escape(text)}: must be {kind}"):
            build("robot", {**CAMERAS, "tiny": "true", name: value})


@pytest.mark.parametrize("graph, arguments, line", [
    ("robot", {**CAMERAS}, "robot graph: no GraspVLA checkpoint: set checkpoint:=<dir>"),
    ("robot", {**CAMERAS, "checkpoint": "/no/such/dir"}, "robot graph: checkpoint:=/no/such/dir is not a directory"),
    ("robot", {"side_serial": "678901", "tiny": "true"}, "robot graph: no serial number for the front camera: "
                                                          "set front_serial:=<serial>"),
    ("robot", {"front_serial": "012345", "tiny": "true"}, "robot graph: no serial number for the side camera: "
                                                           "set side_serial:=<serial>"),
    ("robot", {"front_serial": "111", "side_serial": "111", "tiny": "true"},
     "robot graph: front_serial and side_serial are both 111"),
    ("robot", {**CAMERAS, "backend": "expert"}, "robot graph: the expert backend plans from the simulator's ground "
                                                "truth, which only the sim graph has: set backend:=graspvla"),
    ("replay", {"bag": "/bags/ep1", "backend": "expert"}, "replay graph: the expert backend"),
    ("replay", {"tiny": "true"}, "replay graph: no bag to replay: set bag:=<"),
    ("sim", {"backend": "graspvla"}, "sim graph: no GraspVLA checkpoint: set checkpoint:=<dir>"),
])
def test_a_graph_that_would_not_work_is_refused_with_one_line(graph, arguments, line):
    with pytest.raises(GraphError) as refused:
        build(graph, arguments)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)


def test_what_may_start_is_accepted(tmp_path):
    assert build("robot", {**CAMERAS, "checkpoint": str(tmp_path)})
    assert build("robot", {**CAMERAS, "tiny": "true", "checkpoint": ""})   # `ros2 launch` passes "" when unset
    assert build("sim", {}) and build("replay", {"bag": "/bags/ep1", "checkpoint": str(tmp_path)})


def test_the_check_reads_the_value_the_node_starts_with_from_its_config(tmp_path):
    """A checkpoint written into the installed config/policy.yaml counts as given."""
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": {"checkpoint": "/ckpt"}}}))
    assert configured(policy(), "checkpoint", tmp_path) == "/ckpt"
    assert configured(policy(checkpoint="/given"), "checkpoint", tmp_path) == "/given"
    assert configured(policy(), "backend", tmp_path) is None


def test_bringup_refuses_a_robot_graph_without_a_checkpoint_before_any_node_starts():
    """The new user's first try: robot and cameras named, no checkpoint."""
    run = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "robot", "robot_ip:=127.0.0.1",
                          "front_serial:=111", "side_serial:=222"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == "", run.stdout   # no node said anything: none started
    assert run.stderr.splitlines() == [run.stderr.strip()] and run.stderr.startswith(
        "bringup: robot graph: no GraspVLA checkpoint: set checkpoint:=<dir>"), run.stderr


def test_the_launch_file_side_imports_nothing_apt_lacks():
    """What the launch file runs (build every graph, describe every argument) loads neither the
    device libraries nor the model's: the system Python of `ros2 launch` has none of them."""
    arguments = {"sim": {}, "robot": {**CAMERAS, "tiny": "true"}, "replay": {"bag": "b", "tiny": "true"}}
    code = (f"import json, sys; import graspvla_ros.graph as g; "
            f"[g.build(k, v) for k, v in {json.dumps(arguments)}.items()]; "
            "[a.description() for a in g.GRAPH_ARGUMENTS.values()]; "
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    heavy = {"torch", "franky", "franky_sim", "pyrealsense2", "mujoco", "rosbags", "ruamel", "PIL", "cv2", "rclpy",
             "zmq", "onnxruntime"}
    assert not loaded & heavy

"""Graph arguments come from the node parameters they set."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from graspvla_ros.graph import GRAPH_ARGUMENTS, NODES, GraphError, build

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
    assert GRAPH_ARGUMENTS["backend"].defaults() == "`expert`"
    assert GRAPH_ARGUMENTS["robot_ip"].defaults() == "`172.16.0.2`"
    assert GRAPH_ARGUMENTS["rate_hz"].defaults() == "`5.0`"


def test_bringup_help_describes_every_argument_from_its_parameter():
    out = subprocess.run([sys.executable, "-m", "graspvla_ros.bringup", "robot", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name, argument in GRAPH_ARGUMENTS.items():
        assert f"{name}:=  ({', '.join(argument.graphs)}) {argument.description()}" in out


def test_values_take_the_type_of_the_parameter_and_another_type_is_refused():
    specs = {s.name: s for s in build("robot", {**CAMERAS, "tiny": "true", "rate_hz": "4"})}
    assert specs["policy"].params == {"tiny": True, "rate_hz": 4.0}
    assert specs["front_camera"].params["serial"] == "012345"
    for text, kind in (("rate_hz:=fast", "a number"), ("tiny:=3", "true or false")):
        name, value = text.split(":=")
        with pytest.raises(GraphError, match=f"^{text}: must be {kind}"):
            build("robot", {**CAMERAS, "tiny": "true", name: value})


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

"""The docs stay true: every parameter in config/*.yaml is documented in docs/interfaces.md."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _param_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys += _param_keys(value, name + ".") if isinstance(value, dict) else [name]
    return keys


def test_every_config_parameter_is_documented():
    doc = (ROOT / "docs" / "interfaces.md").read_text()
    missing = []
    for path in sorted((ROOT / "config").glob("*.yaml")):
        for node in yaml.safe_load(path.read_text()).values():
            missing += [f"{path.name}: {k}" for k in _param_keys(node["ros__parameters"])
                        if f"`{k}`" not in doc]
    assert not missing, "parameters missing from docs/interfaces.md:\n" + "\n".join(missing)


def test_launch_file_is_built_from_the_graph_description():
    """launch_ros is not installable here, so check the launch file uses graph.py's specs."""
    source = (ROOT / "launch" / "graspvla.launch.py").read_text()
    compile(source, "graspvla.launch.py", "exec")
    assert "from graspvla_ros.graph import GRAPH_ARGUMENTS, GRAPHS, PACKAGE, build" in source


def test_graph_arguments_reach_the_nodes_with_their_types():
    from graspvla_ros.graph import build, format_param

    specs = {s.name: s for s in build("robot", {"robot_ip": "10.1.1.2", "front_serial": "012345"})}
    assert specs["controller"].params == {"robot_ip": "10.1.1.2"}
    assert "serial:='012345'" in specs["front_camera"].ros_args()   # stays a string, keeps its zero
    assert "serial" not in specs["side_camera"].params               # config/camera.yaml default
    assert [format_param(v) for v in (True, 0.5, [1, 2], "true", "base")] == ["true", "0.5", "[1, 2]", "'true'", "base"]

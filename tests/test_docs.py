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

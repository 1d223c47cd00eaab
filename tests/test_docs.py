"""The docs stay true: config/*.yaml and docs/interfaces.md match the nodes' parameter tables."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_config_files_and_docs_are_generated_from_the_parameter_tables():
    """config/*.yaml and the parameter tables in docs/interfaces.md come from each node's PARAMS."""
    from graspvla_ros.paramdocs import stale

    assert not stale(), "run `python -m graspvla_ros.paramdocs --write`: out of date: " + ", ".join(map(str, stale()))


def test_every_declared_parameter_has_a_meaning():
    import importlib

    from graspvla_ros.paramdocs import TABLES

    for name in TABLES:
        params = importlib.import_module(name).PARAMS
        assert len({p.name for p in params}) == len(params), name
        assert all(p.meaning.strip() for p in params), name


def test_launch_file_is_built_from_the_graph_description():
    """launch_ros is not installable here, so check the launch file uses graph.py's specs."""
    source = (ROOT / "launch" / "graspvla.launch.py").read_text()
    compile(source, "graspvla.launch.py", "exec")
    assert "from graspvla_ros.graph import CONFIG_DIR, ENVIRONMENT, GRAPH_ARGUMENTS, GRAPHS, HOSTS, PACKAGE, build" in source
    assert "build(graph, arguments, LaunchConfiguration(\"host\").perform(context))" in source
    assert "prefix=\" \".join(spec.prefix) or None" in source and "additional_env=spec.env or None" in source


def test_graph_arguments_reach_the_nodes_with_their_types():
    from graspvla_ros.graph import build
    from graspvla_ros.settings import format_param

    specs = {s.name: s for s in build("robot", {"robot_ip": "10.1.1.2", "front_serial": "012345",
                                                "side_serial": "678901", "tiny": "true"})}
    assert specs["controller"].params == {"robot_ip": "10.1.1.2"}
    assert "serial:='012345'" in specs["front_camera"].ros_args()   # stays a string, keeps its zero
    assert specs["policy"].params == {"tiny": True}                   # a bool, not the string "true"
    assert [format_param(v) for v in (True, 0.5, [1, 2], "true", "base")] == ["true", "0.5", "[1, 2]", "'true'", "base"]

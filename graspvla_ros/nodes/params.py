"""Each node's parameters in one table (name, default, meaning, live).

The tables come from the settings dataclasses (`graspvla_ros.settings`): a node's `PARAMS` is
`params(<its settings>)`. The table feeds the node's declarations (with the meaning as the
parameter's description, so `ros2 param describe` shows it, and read-only unless the parameter
is applied live), its `config/<node>.yaml`, its section of docs/interfaces.md and the graph
arguments that set it (`graph.GRAPH_ARGUMENTS`, also a section of docs/interfaces.md).
`python -m graspvla_ros.nodes.params --write` regenerates these files from the tables;
tests/test_docs.py fails when they differ.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graspvla_ros.settings import Param

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "interfaces.md"

# Modules that define PARAMS (a tuple of Param) and CONFIG (the config/ file name).
TABLES = (
    "graspvla_ros.nodes.controller_node",
    "graspvla_ros.nodes.camera_node",
    "graspvla_ros.nodes.sim_world_node",
    "graspvla_ros.nodes.scripted_chunks_node",
    "graspvla_ros.nodes.calibration_node",
    "graspvla_ros.nodes.recorder_node",
    "graspvla_ros.nodes.player_node",
    "graspvla_ros.nodes.policy_node",
)

__all__ = ["Param", "declare", "defaults"]


def defaults(table: Sequence[Param]) -> dict[str, Any]:
    return {p.name: p.default for p in table}


def declare(node, table: Sequence[Param],
            on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Declare every parameter of `table` on `node`; returns {name: value} as set at start.

    A parameter that is not `live` is declared read-only: `ros2 param set` is refused, instead
    of succeeding and changing nothing. A change to live parameters is checked (types) and
    handed to `on_change({name: value})`, which applies it or raises ValueError with the
    reason (the set is then refused with it).

    A float parameter also takes an integer (`-p episode_timeout:=90`, which rclpy would
    refuse as the wrong type) and reads as a float; anything else there is a clear error."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

    by_name = {p.name: p for p in table}
    values = {}
    for p in table:
        descriptor = ParameterDescriptor(description=p.meaning + ("" if p.live else " (read-only: set at start)"),
                                         dynamic_typing=isinstance(p.default, float), read_only=not p.live)
        values[p.name] = _typed(p, node.declare_parameter(p.name, p.default, descriptor).value)
    if any(p.live for p in table):
        if on_change is None:
            raise ValueError(f"{node.get_name()}: live parameters need an on_change handler")

        def check(parameters) -> SetParametersResult:
            changes = {}
            try:
                for parameter in parameters:
                    if parameter.name in by_name:
                        changes[parameter.name] = _typed(by_name[parameter.name], parameter.value)
                if changes:
                    on_change(changes)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
            return SetParametersResult(successful=True)
        node.add_on_set_parameters_callback(check)
    return values


def _typed(p: Param, value: Any) -> Any:
    """`value` of parameter `p` as its default's type (an integer for a float reads as a float)."""
    if isinstance(p.default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter {p.name!r} must be a number, got {value!r}")
        return float(value)
    return value


def yaml_value(value: Any) -> str:
    """A value in YAML flow syntax that reads back as the same type (strings quoted where needed)."""
    from graspvla_ros.graph import format_param

    return format_param(value)


def config_yaml(table: Sequence[Param], title: str) -> str:
    """The config/*.yaml text for a table: `/**:` + ros__parameters, dotted names nested."""
    groups = {p.name.rsplit(".", k)[0] for p in table for k in range(1, p.name.count(".") + 1)}
    clash = sorted(groups & {p.name for p in table})
    if clash:  # rcl's YAML parser rejects a key that is both a value and a mapping
        raise ValueError(f"{title}: {clash} is both a parameter and a group of parameters")
    lines = [f"# {title} defaults: generated from its PARAMS table (python -m graspvla_ros.nodes.params --write);",
             "# meanings in docs/interfaces.md.", "/**:", "  ros__parameters:"]
    opened: list[str] = []
    for p in table:
        *groups, leaf = p.name.split(".")
        common = 0
        while common < min(len(groups), len(opened)) and groups[common] == opened[common]:
            common += 1
        opened = opened[:common]
        for g in groups[common:]:
            lines.append("    " + "  " * len(opened) + f"{g}:")
            opened.append(g)
        lines.append("    " + "  " * len(opened) + f"{leaf}: {yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


def markdown(table: Sequence[Param]) -> str:
    rows = ["| parameter | default | live | meaning |", "| --- | --- | --- | --- |"]
    rows += [f"| `{p.name}` | `{yaml_value(p.default)}` | {'yes' if p.live else 'no'} | {p.meaning} |" for p in table]
    return "\n".join(rows)


def arguments_markdown() -> str:
    """The graph arguments: the node parameter each sets, its default per graph, its meaning."""
    from graspvla_ros.graph import GRAPH_ARGUMENTS

    rows = ["| argument | graphs | node parameter it sets | default | meaning |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{a.name}` | {', '.join(a.graphs)} | `{a.node}` `{a.param}` | {a.defaults()} | "
             f"{a.spec.meaning}{f'. {a.note}' if a.note else ''} |" for a in GRAPH_ARGUMENTS.values()]
    return "\n".join(rows)


def _section(doc: str, start: str, end: str, text: str) -> str:
    """`doc` with the text between the markers `start` and `end` replaced by `text`."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"docs/interfaces.md has no '{start} ... {end}' section")
    return pattern.sub(lambda _m: f"{start}\n{text}\n{end}", doc)


def rendered() -> dict[Path, str]:
    """{file: expected text} for every config file and docs/interfaces.md."""
    doc = DOC.read_text()
    out: dict[Path, str] = {}
    for name in TABLES:
        module = importlib.import_module(name)
        short = name.rsplit(".", 1)[-1]
        out[ROOT / "config" / module.CONFIG] = config_yaml(module.PARAMS, short)
        doc = _section(doc, f"<!-- params: {short} -->", "<!-- /params -->", markdown(module.PARAMS))
    out[DOC] = _section(doc, "<!-- graph-arguments -->", "<!-- /graph-arguments -->", arguments_markdown())
    return out


def stale() -> list[Path]:
    return [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate config/*.yaml and the parameter tables of "
                                             "docs/interfaces.md from the nodes' PARAMS tables.")
    ap.add_argument("--write", action="store_true", help="write the files (default: list the stale ones)")
    args = ap.parse_args(argv)
    files = rendered()
    out_of_date = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    for path in out_of_date:
        if args.write:
            path.write_text(files[path])
        print(f"{'wrote' if args.write else 'stale'}: {path.relative_to(ROOT)}")
    return 0 if args.write or not out_of_date else 1


if __name__ == "__main__":
    sys.exit(main())

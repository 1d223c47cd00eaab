"""config/*.yaml and the parameter and graph-argument tables of docs/interfaces.md, generated from
the nodes' parameter tables (their settings dataclasses) and graph.py's arguments.

    python -m graspvla_ros.paramdocs           # list the files that are out of date
    python -m graspvla_ros.paramdocs --write   # write them

tests/test_docs.py fails when one is out of date.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graspvla_ros.settings import Param

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "interfaces.md"

# Modules that define PARAMS (a tuple of Param) and CONFIG (the config/ file name).
TABLES = (
    "graspvla_ros.nodes.controller_node",
    "graspvla_ros.nodes.camera_node",
    "graspvla_ros.nodes.model_view_node",
    "graspvla_ros.nodes.sim_world_node",
    "graspvla_ros.nodes.scripted_chunks_node",
    "graspvla_ros.nodes.calibration_node",
    "graspvla_ros.nodes.recorder_node",
    "graspvla_ros.nodes.player_node",
    "graspvla_ros.nodes.policy_node",
)


def yaml_value(value: Any) -> str:
    """A value in YAML flow syntax that reads back as the same type (strings quoted where needed)."""
    from graspvla_ros.settings import format_param

    return format_param(value)


def config_yaml(table: Sequence[Param], title: str) -> str:
    """The config/*.yaml text for a table: `/**:` + ros__parameters, dotted names nested."""
    groups = {p.name.rsplit(".", k)[0] for p in table for k in range(1, p.name.count(".") + 1)}
    clash = sorted(groups & {p.name for p in table})
    if clash:  # rcl's YAML parser rejects a key that is both a value and a mapping
        raise ValueError(f"{title}: {clash} is both a parameter and a group of parameters")
    lines = [f"# {title} defaults: generated from its PARAMS table (python -m graspvla_ros.paramdocs --write);",
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

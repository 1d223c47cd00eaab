"""Each node's parameters in one table (name, default, meaning, live), declared on the node.

The tables come from the settings dataclasses (`graspvla_ros.settings`): a node's `PARAMS` is
`params(<its settings>)`. The table feeds the node's declarations (with the meaning as the
parameter's description, so `ros2 param describe` shows it, and read-only unless the parameter
is applied live), its `config/<node>.yaml`, its section of docs/interfaces.md and the graph
arguments that set it (`graph.GRAPH_ARGUMENTS`, also a section of docs/interfaces.md).
`python -m graspvla_ros.paramdocs --write` regenerates these files from the tables;
tests/test_docs.py fails when they differ.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graspvla_ros.settings import Param

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

"""Settings dataclasses are the one source of every node parameter.

A settings dataclass declares each parameter once, as a field made with `setting(default,
meaning, live=...)`. Its parameter table (`params(cls)`: name, default, meaning, live), the
node's declarations, `config/<node>.yaml`, the launch and bringup arguments and the tables in
docs/interfaces.md are all built from those fields, so a default or a meaning is written in
exactly one place. A field whose type is itself a settings dataclass becomes a group of
parameters named `<field>.<name>` (`safety.hold_timeout`); one made with `inline(cls)` adds
the parameters of `cls` under their own names (how a node's settings take in a core dataclass,
the camera node's `width` from `camera.settings.StreamSettings`).

A parameter is either applied while the node runs (`live=True`: `ros2 param set` changes the
running behaviour, and the node has a test for it) or read once at start (`live=False`: the
node declares it read-only, so `ros2 param set` refuses it instead of silently changing
nothing).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

_MEANING, _LIVE, _INLINE = "meaning", "live", "inline"


def setting(default: Any, meaning: str, *, live: bool = False) -> Any:
    """A dataclass field that is also a node parameter: its default, one-line meaning, and
    whether the running node applies a change (`live`) or reads it once at start."""
    return field(default=default, metadata={_MEANING: meaning, _LIVE: live})


def inline(cls) -> Any:
    """A field holding the settings dataclass `cls` whose parameters keep their own names (no
    `<field>.` prefix)."""
    return field(default_factory=cls, metadata={_INLINE: True})


@dataclass(frozen=True)
class Param:
    """One parameter: dotted `name` ("safety.max_chunk_age"), typed `default`, one-line
    `meaning`, and whether it is applied live."""

    name: str
    default: Any
    meaning: str
    live: bool = False


def _groups(cls) -> dict[str, tuple[type, str]]:
    """{field name: (settings dataclass, its parameters' prefix)} for the fields that are
    groups of parameters."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], "" if f.metadata.get(_INLINE) else f"{f.name}.") for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(hints.get(f.name)) and isinstance(hints[f.name], type)}


def params(cls, prefix: str = "") -> tuple[Param, ...]:
    """The parameter table of the settings dataclass `cls`, in field order."""
    groups = _groups(cls)
    table: list[Param] = []
    for f in dataclasses.fields(cls):
        if f.name in groups:
            group, more = groups[f.name]
            table += params(group, prefix + more)
        elif _MEANING in f.metadata:
            table.append(Param(prefix + f.name, _plain(f.default), f.metadata[_MEANING], f.metadata[_LIVE]))
    return tuple(table)


def _plain(value: Any) -> Any:
    """A default as a ROS parameter holds it: tuples become lists."""
    return list(value) if isinstance(value, tuple) else value


def build(cls, values: dict[str, Any], prefix: str = ""):
    """The settings dataclass `cls` from {parameter name: value} (names not given keep their
    defaults; list values become tuples where the default is one). The dataclass's own checks
    (`__post_init__`) run, so a bad value fails here with its reason."""
    groups = _groups(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in groups:
            group, more = groups[f.name]
            kwargs[f.name] = build(group, values, prefix + more)
        elif _MEANING in f.metadata and prefix + f.name in values:
            value = values[prefix + f.name]
            kwargs[f.name] = tuple(value) if isinstance(f.default, tuple) else value
    return cls(**kwargs)


def flatten(settings, prefix: str = "") -> dict[str, Any]:
    """{parameter name: value} of a settings object (the inverse of `build`)."""
    out: dict[str, Any] = {}
    groups = _groups(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name in groups:
            out.update(flatten(value, prefix + groups[f.name][1]))
        elif _MEANING in f.metadata:
            out[prefix + f.name] = _plain(value)
    return out


def format_param(value: Any) -> str:
    """A parameter value as `-p key:=value` expects it (YAML syntax)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_param(v) for v in value) + "]"
    if isinstance(value, str):  # quote what YAML would read as another type ("123", "true", "")
        plain = value and all(c.isalnum() or c in "_./-" for c in value) and isinstance(yaml.safe_load(value), str)
        return value if plain else repr(value)
    return repr(value)

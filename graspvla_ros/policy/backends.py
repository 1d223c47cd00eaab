"""The policy's backends by name: `create(name, **options)`.

A module apart from the protocol (`backend.py`), so that a backend imports the protocol and
nothing imports a backend back, and so that a node loads only the backend it runs: the expert
(it brings MuJoCo for the simulated cameras) is imported when it is created.
"""
from __future__ import annotations

from graspvla_ros.policy.backend import Backend, GraspVLABackend
from graspvla_ros.policy.settings import BACKENDS


def create(name: str, **options) -> Backend:
    """The backend `name` with its options (GraspVLABackend's or ExpertBackend's arguments)."""
    if name == "graspvla":
        return GraspVLABackend(**options)
    if name == "expert":
        from graspvla_ros.policy.expert import ExpertBackend

        return ExpertBackend(**options)
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")

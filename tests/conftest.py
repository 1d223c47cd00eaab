"""Session-wide guards shared by every test module."""
from __future__ import annotations

import os

import pytest


def _network_interfaces() -> list[str]:
    # /proc/net/dev follows the caller's network namespace (unlike /sys/class/net).
    with open("/proc/net/dev") as f:
        return [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run where DDS discovery or franky-sim could reach a real network."""
    others = [i for i in _network_interfaces() if i != "lo"]
    if others:
        raise pytest.UsageError(
            "tests must run in a loopback-only network namespace (found interfaces "
            f"{others}); use `make test` or `scripts/isolated .venv/bin/python -m pytest`"
        )
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("MUJOCO_GL", "egl")

"""Faults injected into the whole sim graph (tests/graph_faults_cases.py), in a pytest process of
its own: the graph runs on UDP and shared memory there, not LARGE_DATA's TCP, because a
participant that talked over TCP to a node SIGKILLed mid-stream can deadlock in its teardown
(commands/robot.py, _Session.run), and this suite's process is on LARGE_DATA."""
from __future__ import annotations

import pytest

from helpers import run_cases

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.timeout(1500)]


def test_faults_injected_into_the_graph_leave_the_arm_held_and_lose_nothing(ros_domain):
    out = run_cases("graph_faults_cases.py", ros_domain)
    assert "4 passed" in out, out[-3000:]

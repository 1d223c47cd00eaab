"""The sim graph split across two hosts (tests/two_hosts_cases.py), in a pytest process of its own.

A split graph's nodes talk over Fast DDS's UDP transport (graph.SPLIT_ENVIRONMENT), and so must
this test's own node, which reads the policy's status across the link. Fast DDS reads
FASTDDS_BUILTIN_TRANSPORTS once per process, and this suite's process has long been on
LARGE_DATA by the time this module runs: the cases run in a fresh one with the split transport."""
from __future__ import annotations

import pytest

from helpers import run_cases

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.timeout(1500)]


def test_the_split_graph_grasps_and_survives_a_cut_link(ros_domain):
    out = run_cases("two_hosts_cases.py", ros_domain)
    assert "3 passed" in out, out[-3000:]   # and the netem case: run, or skipped with its reason

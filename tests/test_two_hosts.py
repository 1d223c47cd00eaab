"""The sim graph split across two hosts (tests/two_hosts_cases.py), in a pytest process of its own.

A split graph's nodes talk over Fast DDS's UDP transport (graph.SPLIT_ENVIRONMENT), and so must
this test's own node, which reads the policy's status across the link. Fast DDS reads
FASTDDS_BUILTIN_TRANSPORTS once per process, and this suite's process has long been on
LARGE_DATA by the time this module runs: the cases run in a fresh one with the split transport."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graspvla_ros.graph import SPLIT_ENVIRONMENT

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.timeout(1500)]


def test_the_split_graph_grasps_and_survives_a_cut_link(ros_domain):
    cases = Path(__file__).with_name("two_hosts_cases.py")
    # the inner conftest gives its module the domain after ROS_DOMAIN_ID: this module's own
    env = {**os.environ, **SPLIT_ENVIRONMENT, "ROS_DOMAIN_ID": str(ros_domain - 1)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(cases)],
                         capture_output=True, text=True, timeout=1400, env=env)
    assert out.returncode == 0, out.stdout[-20000:] + out.stderr[-5000:]
    assert "3 passed" in out.stdout, out.stdout[-3000:]   # and the netem case: run, or skipped with its reason

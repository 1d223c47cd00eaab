"""`graspvla say/stop/home/estop/release/status` say clearly that no stack runs, within their
deadline, instead of hanging."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("args, expected", [
    (["say", "pick up the red cube"], "no policy is running"),
    (["status"], "no stack is running"),
    (["estop"], "no controller is running: /controller/estop"),
    (["release"], "no controller is running: /controller/release"),
    (["stop"], "no controller is running: /controller/hold"),
    (["home"], "no controller is running: /controller/home"),
])
def test_commands_without_a_stack_say_so_and_fail(args, expected):
    env = {**os.environ, "ROS_DOMAIN_ID": "97"}  # a domain no stack of this test run uses
    out = subprocess.run([sys.executable, "-m", "graspvla_ros.cli", *args, "--timeout", "1"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert expected in out.stdout

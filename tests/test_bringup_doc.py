"""docs/bringup.md: every shell command in it is run by a test (RUN_BY_TESTS says which; the
operator's commands run here against the sim graph, with a simulated object for the banana) or
sits in a block marked `# hardware-only:` with its reason; its Fast DDS profile and Cyclone DDS
settings are the ones the doctor accepts; the slow mode's parameter is live on the controller."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter

from conftest import wait_for
from helpers import SIM_CAMERAS, doc_commands, run_command
from graspvla_ros import dds
from graspvla_ros.bringup import Bringup
from graspvla_ros.checks import OK
from graspvla_ros.control.checks import realtime_kernel
from graspvla_ros.graph import configure, sim_graph
from graspvla_ros.latency import STAGES

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bringup.md"
DOCTOR = ("graspvla doctor robot_ip:=172.16.0.2 front_serial:=<front serial> side_serial:=<side serial> "
          "backend:=graspvla checkpoint:=models/checkpoints/graspvla llm_dir:=models/llm/internlm2-1_8b")
DRY_RUN = ("python -m graspvla_ros.bringup robot robot_ip:=172.16.0.2 front_serial:=<front serial> "
           "side_serial:=<side serial> backend:=graspvla checkpoint:=models/checkpoints/graspvla "
           "llm_dir:=models/llm/internlm2-1_8b dry_run:=true")
HERE = "tests/test_bringup_doc.py::"
FIRST_GRASP = HERE + "test_the_first_grasp_commands_against_the_sim"
# Each command of docs/bringup.md outside the hardware-only blocks, and the test that runs it.
RUN_BY_TESTS = {
    "uname -v": HERE + "test_the_realtime_commands_say_what_the_doctor_finds",
    "cat /sys/kernel/realtime": HERE + "test_the_realtime_commands_say_what_the_doctor_finds",
    DOCTOR: "tests/test_doctor.py::test_the_doctor_command_of_docs_bringup_runs_against_the_sim",
    DRY_RUN: HERE + "test_the_dry_run_command_runs_the_controller_dry",
    "graspvla status": FIRST_GRASP,
    'graspvla say "pick up the banana"': FIRST_GRASP,
    "graspvla stop": FIRST_GRASP,
    "graspvla home": FIRST_GRASP,
}
SIM_OBJECT = "red cube"


def _sim(command: str) -> list[str]:
    """A documented command as it runs here: `graspvla` is the package's CLI module, `python` this
    Python, and the banana the simulated world's red cube."""
    words = shlex.split(command.replace("banana", SIM_OBJECT))
    head = {"graspvla": [sys.executable, "-m", "graspvla_ros.cli"], "python": [sys.executable]}
    return head.get(words[0], words[:1]) + words[1:]


def test_every_command_is_run_by_a_test_or_marked_hardware_only():
    commands = doc_commands(DOC)
    tested = {c for c, hardware in commands if not hardware}
    assert tested - set(RUN_BY_TESTS) == set(), "commands no test runs (add them here, or mark them hardware-only)"
    assert set(RUN_BY_TESTS) - tested == set(), "listed commands that docs/bringup.md no longer has"
    for test in set(RUN_BY_TESTS.values()):
        path, name = test.split("::")
        assert f"\ndef {name}(" in (ROOT / path).read_text(), f"{test} does not exist"
    reasons = re.findall(r"^```(?:sh|bash)\n# hardware-only:(.*)$", DOC.read_text(), re.M)
    assert len(reasons) >= 5 and all(len(r.strip()) > 20 for r in reasons), reasons


def test_the_realtime_commands_say_what_the_doctor_finds():
    uname = subprocess.run(_sim("uname -v"), capture_output=True, text=True, check=True)
    flag = subprocess.run(_sim("cat /sys/kernel/realtime"), capture_output=True, text=True)
    documented = "PREEMPT_RT" in uname.stdout or (flag.returncode == 0 and flag.stdout.strip() == "1")
    assert documented == realtime_kernel()


def test_the_dds_settings_of_the_doc_are_the_ones_the_doctor_accepts(tmp_path):
    text = DOC.read_text()
    (profile,) = re.findall(r"^```xml\n(.*?)^```", text, re.M | re.S)
    (tmp_path / "fastdds_large_data.xml").write_text(profile)
    humble = {"ROS_DISTRO": "humble", "FASTRTPS_DEFAULT_PROFILES_FILE": str(tmp_path / "fastdds_large_data.xml")}
    assert dds.transport_check(humble, (2, 6, 9), 212992).status == OK
    (uri,) = re.findall(r"^export CYCLONEDDS_URI='(.*)'$", text, re.M)
    assert uri == dds.CYCLONE_URI
    assert f"sudo sysctl -w net.core.rmem_max={dds.CYCLONE_RMEM_MAX}" in text
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "CYCLONEDDS_URI": uri}
    assert dds.transport_check(cyclone, None, dds.CYCLONE_RMEM_MAX).status == OK


def test_the_dry_run_command_runs_the_controller_dry(tmp_path):
    """Its graph, printed (the checkpoint: an existing directory, as the robot graph requires)."""
    command = (DRY_RUN.replace("172.16.0.2", "127.0.0.1").replace("models/checkpoints/graspvla", str(tmp_path))
               .replace("<front serial>", "1001").replace("<side serial>", "1002"))
    out = subprocess.run([*_sim(command), "--print"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (controller,) = [ln for ln in out.stdout.splitlines() if "graspvla_ros.nodes.controller_node" in ln]
    assert "dry_run:=true" in controller


@pytest.fixture(scope="module")
def stack(new_loopback_host):
    """The sim graph (expert backend) with the tests' light cameras, on an address of its own."""
    host = new_loopback_host()
    specs = configure(sim_graph(), sim_world={"host": host, "seed": 7, **SIM_CAMERAS}, controller={"robot_ip": host})
    with Bringup(specs) as graph:
        yield graph


def _run(command: str, timeout: float = 20.0, tries: int = 3) -> subprocess.CompletedProcess:
    return run_command([*_sim(command), "--timeout", str(timeout)], timeout + 120, tries)


def _status(command: str, out_of: list | None = None) -> tuple[dict, str]:
    """The policy's status and the controller's state (the whole output appended to `out_of`);
    asked again (a few times) while the latched status has not reached the command's fresh
    participant in its timeout (a loaded machine), which it then says instead of the status
    ("not seen within", "did not arrive")."""
    for _ in range(3):
        out = _run(command)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = dict(ln.split(": ", 1) for ln in out.stdout.splitlines() if ln.startswith(("policy: ", "controller: ")))
        policy, controller = lines.get("policy", ""), lines.get("controller", "")
        if out_of is not None:
            out_of.append(out.stdout)
        if policy.startswith("{") and controller.isupper():
            return json.loads(policy), controller
    raise AssertionError(f"the policy's status never reached `{command}`: {out.stdout}")


@pytest.mark.ros
def test_the_slow_mode_parameter_is_live_on_the_controller(stack, ros_node):
    """What `ros2 param set /controller relative_dynamics_factor 0.1` does: the controller's
    set_parameters service; a value outside (0, 1] is refused with the reason."""
    (command,) = [c for c, _ in doc_commands(DOC) if c.startswith("ros2 param set")]
    node, name, value = command.split()[3:]
    setter = ros_node.create_client(SetParameters, f"{node}/set_parameters")
    getter = ros_node.create_client(GetParameters, f"{node}/get_parameters")
    assert setter.wait_for_service(timeout_sec=120) and getter.wait_for_service(timeout_sec=30), stack.failed()

    def call(client, request):
        future = client.call_async(request)
        return wait_for(lambda: future.done() and future.result(), 30, f"{client.srv_name}")

    result = call(setter, SetParameters.Request(parameters=[Parameter(name, value=float(value)).to_parameter_msg()]))
    assert result.results[0].successful, result.results[0].reason
    reply = call(getter, GetParameters.Request(names=[name]))
    assert reply.values[0].double_value == pytest.approx(0.1)
    result = call(setter, SetParameters.Request(parameters=[Parameter(name, value=1.5).to_parameter_msg()]))
    assert not result.results[0].successful and "(0, 1]" in result.results[0].reason
    call(setter, SetParameters.Request(parameters=[Parameter(name, value=0.3).to_parameter_msg()]))


@pytest.mark.ros
def test_the_first_grasp_commands_against_the_sim(stack):
    commands = {c.split()[1]: c for c, hardware in doc_commands(DOC)
                if c.startswith("graspvla ") and not c.startswith("graspvla doctor")}
    assert set(commands) == {"status", "say", "stop", "home"}
    wait_for(lambda: _run(commands["status"], 5, tries=1).returncode == 0 or stack.failed(), 240, "the stack to answer")
    # the status can answer while the start-up home still runs (its first gripper command fails, as on a real arm)
    wait_for(lambda: _status(commands["status"])[1] in ("IDLE", "HOLDING") or stack.failed(), 120,
             "the start-up home to end")
    out = _run(commands["say"])
    assert out.returncode == 0, out.stdout + out.stderr
    started = json.loads(out.stdout.strip().splitlines()[-1])
    assert started["target"] == SIM_OBJECT and started["phase"] == "running", started
    ended = wait_for(lambda: (s := _status(commands["status"])[0])["phase"] != "running" and s or stack.failed(),
                     240, "the episode to end")
    assert ended["episode"] == started["episode"] and ended["phase"] == "succeeded", ended
    said: list[str] = []   # the latency chain of the cycles, on the robot's clock by the measured offset
    wait_for(lambda: _status(commands["status"], said) and "latency chain, ms after" in said[-1] or stack.failed(), 60,
             "the latency chain in `graspvla status`")
    table = said[-1]
    assert "robot clock − policy clock: " in table and "measured by ping-pong" in table, table
    for stage in STAGES:
        assert re.search(rf"^  {re.escape(stage.what)} +[\d.]+ +[\d.]+ +{stage.budget_ms:.0f}", table, re.M), table
    for command in ("stop", "home"):
        out = _run(commands[command])
        assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: _status(commands["status"])[1] == "IDLE" or stack.failed(), 120, "the arm to be home")
    assert not stack.failed(), stack.failed()

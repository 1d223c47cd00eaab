"""`graspvla doctor` against the simulated arm (franky-sim through sim.server.SimServer), software
RealSense cameras (pyrealsense2 software devices handed in as the device list), a tiny checkpoint
and calibration files: a correct set-up is all OK; each misconfiguration (another end effector, a
camera that is not plugged in, no frame metadata, no calibration file, a truncated checkpoint)
gives its FAIL or WARN line with a fix; the command line prints aligned lines, no stack trace,
and exits 1 on a FAIL."""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pyrealsense2 as rs
import pytest

from conftest import franky_sim_process
from helpers import doc_commands
from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.calibration.store import CameraCalibration, write_calibration
from graspvla_ros.camera.source import SoftwareCamera
from graspvla_ros.checks import FAIL, OK, WARN, guarded
from graspvla_ros.commands.doctor import ROBOT_ARGUMENTS, doctor_checks, line, parse_arguments
from graspvla_ros.control.checks import robot_checks
from graspvla_ros.graph import GRAPH_ARGUMENTS
from graspvla_ros.sim_settings import sim_controller_settings
from graspvla_ros.sim.server import SimServer

pytestmark = pytest.mark.sim
ROOT = Path(__file__).resolve().parents[1]
GOOD_CAMERA = {rs.camera_info.usb_type_descriptor: "3.2", rs.camera_info.firmware_version: "5.16.0.1",
               rs.camera_info.recommended_firmware_version: "5.16.0.1"}
FRONT, SIDE, NO_METADATA = "111111111111", "222222222222", "333333333333"


@pytest.fixture(scope="module")
def cameras():
    """{serial: SoftwareCamera} playing a test pattern: two with frame metadata (global time
    stamps), one without (stamps in the host's arrival time, as a camera without metadata)."""
    cams = {s: SoftwareCamera(s, info=GOOD_CAMERA) for s in (FRONT, SIDE, NO_METADATA)}
    stop = threading.Event()
    threads = [threading.Thread(target=cam.play_pattern, args=(stop,), daemon=True,
                                kwargs={"domain": rs.timestamp_domain.system_time} if s == NO_METADATA else {})
               for s, cam in cams.items()]
    for t in threads:
        t.start()
    yield cams
    stop.set()
    for t in threads:
        t.join(timeout=5)


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    """Both cameras measured exactly at their training viewpoints, beside the nominal viewpoints."""
    directory = tmp_path_factory.mktemp("calibration")
    shutil.copy(ROOT / "calibration" / "nominal.yaml", directory)
    nominal = load_nominal()
    for camera in ("front", "side"):
        write_calibration(CameraCalibration(camera, nominal.camera(camera).intrinsics, nominal.camera(camera).pose),
                          directory)
    return directory


def run(arguments: dict, cameras: dict, calibration_dir: Path) -> dict[str, object]:
    checks = list(doctor_checks(arguments, calibration_dir=calibration_dir,
                                devices=lambda: [c.device for c in cameras.values()]))
    print("\n".join(line(c) for c in checks))
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


def test_a_correct_set_up_is_all_ok(new_loopback_host, cameras, calibration_dir, tiny_checkpoint):
    with SimServer(new_loopback_host()) as sim:
        checks = run({"robot_ip": sim.host, "front_serial": FRONT, "side_serial": SIDE, "backend": "graspvla",
                      "checkpoint": str(tiny_checkpoint[0]), "llm_dir": str(tiny_checkpoint[1])},
                     cameras, calibration_dir)
    assert {name: c.status for name, c in checks.items() if c.status != OK} == {}
    assert set(checks) == {"robot", "end effector", "robot mode", "realtime", "checkpoint", "tokenizer", "runtime",
                           "DDS transport", "ROS domain", "clocks", "TF",
                           *(f"{cam} {part}" for cam in ("front", "side")
                             for part in ("camera", "USB", "firmware", "stream", "metadata", "calibration"))}
    assert "libfranka 0.21.2" in checks["robot"].what and "global_time" in checks["front metadata"].what


def test_each_misconfiguration_gives_its_line_with_a_fix(new_loopback_host, cameras, calibration_dir,
                                                        tiny_checkpoint, tmp_path):
    """Another end effector, a front camera that is not plugged in, a side camera without
    metadata and without its calibration file, a truncated checkpoint: all at once."""
    front_only = tmp_path / "calibration"
    front_only.mkdir()
    shutil.copy(calibration_dir / "front.yaml", front_only)
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint[0], checkpoint)
    weights = checkpoint / "checkpoint" / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with SimServer(new_loopback_host(), ee_offset=0.12) as sim:
        checks = run({"robot_ip": sim.host, "front_serial": "999999999999", "side_serial": NO_METADATA,
                      "backend": "graspvla", "checkpoint": str(checkpoint), "llm_dir": str(tiny_checkpoint[1])},
                     cameras, front_only)
    wrong = {name: c for name, c in checks.items() if c.status != OK}
    assert {name: c.status for name, c in wrong.items()} == {
        "end effector": FAIL, "front camera": FAIL, "side metadata": WARN, "side calibration": FAIL,
        "checkpoint": FAIL}
    assert "off by 17 mm" in wrong["end effector"].what and "Desk" in wrong["end effector"].fix
    assert "no RealSense camera with serial '999999999999'" in wrong["front camera"].what
    assert FRONT in wrong["front camera"].what and "front_serial:=" in wrong["front camera"].fix
    assert "system_time" in wrong["side metadata"].what and "librealsense2-dkms" in wrong["side metadata"].fix
    assert "side.yaml does not exist" in wrong["side calibration"].what
    assert "graspvla calibrate board" in wrong["side calibration"].fix
    assert "truncated" in wrong["checkpoint"].what and "copy the checkpoint again" in wrong["checkpoint"].fix
    assert "runtime" not in checks, "no runtime estimate for weights that cannot load"
    assert checks["tokenizer"].status == OK and checks["front calibration"].status == OK


def test_a_camera_that_sends_no_frame_fails_and_an_empty_serial_lists_the_connected_ones():
    from graspvla_ros.camera.checks import camera_checks

    silent = SoftwareCamera("444444444444", info={**GOOD_CAMERA, rs.camera_info.usb_type_descriptor: "2.1",
                                                  rs.camera_info.firmware_version: "5.12.7.100"})
    checks = {c.name: c for c in camera_checks("side", "444444444444", lambda: [silent.device], timeout=0.5)}
    assert checks["side camera"].status == OK
    assert checks["side USB"].status == WARN and "USB 2.1" in checks["side USB"].what
    assert checks["side firmware"].status == WARN and "5.16.0.1" in checks["side firmware"].what
    assert "rs-fw-update -s 444444444444" in checks["side firmware"].fix
    assert checks["side stream"].status == FAIL and "no frame came within 0.5 s" in checks["side stream"].what
    assert "side metadata" not in checks
    (empty,) = camera_checks("front", "", lambda: [silent.device])
    assert empty.status == FAIL and "444444444444" in empty.fix and "front_serial:=" in empty.fix


def test_a_displaced_camera_fails_with_the_adjustment(tmp_path):
    from graspvla_ros.calibration.checks import calibration_check

    nominal = load_nominal().camera("front")
    pose = nominal.pose.copy()
    heading = nominal.rotation[:, 2] * (1, 1, 0)  # the viewing direction on the table
    pose[:3, 3] -= 0.012 * heading / (heading @ heading) ** 0.5  # 12 mm back
    write_calibration(CameraCalibration("front", nominal.intrinsics, pose), tmp_path)
    check = calibration_check("front", tmp_path)
    assert check.status == FAIL and "12.0 mm" in check.what and "limit 10 mm" in check.what
    assert "move the camera 12 mm forward" in check.fix
    write_calibration(CameraCalibration("side", nominal.intrinsics, None), tmp_path)
    check = calibration_check("side", tmp_path)
    assert check.status == FAIL and "no measured pose" in check.what


def _old_robot(host: str, server_version: int) -> threading.Thread:
    """A robot server that answers libfranka's connect as a robot of another server version does
    (status kIncompatibleLibraryVersion), on `host`:1337, for one client."""
    server = socket.create_server((host, 1337))

    def answer():
        with server:
            conn, _ = server.accept()
            with conn:
                command, command_id, size = struct.unpack("<III", conn.recv(12))
                conn.recv(size - 12)
                conn.sendall(struct.pack("<III", command, command_id, 12 + 8) + struct.pack("<HH4x", 1, server_version))
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_another_protocol_is_named_first_with_the_franky_to_install(new_loopback_host):
    host = new_loopback_host()
    server = _old_robot(host, 5)
    (check,) = robot_checks(sim_controller_settings(host))
    server.join(timeout=5)
    assert check.status == FAIL and "speaks another libfranka protocol" in check.what, check
    assert "by-robot-server-version" in check.fix


def test_a_robot_that_does_not_answer_fails_at_once(new_loopback_host):
    (check,) = robot_checks(sim_controller_settings(new_loopback_host()))
    assert check.status == FAIL and "does not answer" in check.what and "FCI is activated" in check.fix


def test_a_pressed_user_stop_is_a_warning(new_loopback_host):
    with SimServer(new_loopback_host()) as sim:
        sim.inject("user_stop")
        checks = {c.name: c for c in robot_checks(sim_controller_settings(sim.host))}
    assert checks["robot"].status == OK and checks["robot mode"].status == WARN
    assert "user stop" in checks["robot mode"].what


def test_a_check_that_crashes_is_a_fail_line():
    def broken():
        raise KeyError("calibration_joints")
    (check,) = guarded("side calibration", broken)
    assert check.status == FAIL and check.name == "side calibration"
    assert check.what == "the check itself failed: KeyError: 'calibration_joints'" and check.fix


def test_arguments_as_the_robot_graph_takes_them_and_bad_ones_are_refused():
    assert parse_arguments(["robot_ip:=10.0.0.2", "rate_hz:=5"], {"front_serial": "0123"}) == {
        "robot_ip": "10.0.0.2", "rate_hz": 5.0, "front_serial": "0123"}
    with pytest.raises(ValueError, match="unknown argument 'bag:=x'"):
        parse_arguments(["bag:=x"], {})
    with pytest.raises(ValueError, match="robot_ip given twice"):
        parse_arguments(["robot_ip:=1.2.3.4"], {"robot_ip": "1.2.3.5"})
    with pytest.raises(ValueError, match="rate_hz:=fast: must be a number"):
        parse_arguments(["rate_hz:=fast"], {})
    # the doctor takes every argument of the robot graph
    assert set(ROBOT_ARGUMENTS) == {a.name for a in GRAPH_ARGUMENTS.values() if "robot" in a.graphs}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graspvla_ros.cli", *args], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_the_doctor_command_of_docs_bringup_runs_against_the_sim(tiny_checkpoint, calibration_dir):
    """The command of docs/bringup.md, with the simulated arm's address, two serials of cameras
    that are not connected (no RealSense here), the tiny checkpoint and calibration files at the
    training viewpoints ($GRASPVLA_CALIBRATION_DIR, which holds nominal.yaml too)."""
    (command,) = [c for c, _ in doc_commands(ROOT / "docs" / "bringup.md") if c.startswith("graspvla doctor")]
    with franky_sim_process() as host:
        for old, new in (("172.16.0.2", host), ("<front serial>", FRONT), ("<side serial>", SIDE),
                         ("models/checkpoints/graspvla", str(tiny_checkpoint[0])),
                         ("models/llm/internlm2-1_8b", str(tiny_checkpoint[1]))):
            command = command.replace(old, new)
        out = _cli(*shlex.split(command)[1:], "--camera-timeout", "1", GRASPVLA_CALIBRATION_DIR=str(calibration_dir))
    lines = out.stdout.splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    statuses = {ln[6:23].strip(): ln[:4].strip() for ln in lines if ln[:4].strip() in (OK, WARN, FAIL)}
    assert statuses["robot"] == OK and statuses["checkpoint"] == OK and statuses["runtime"] == OK, out.stdout
    assert statuses["front camera"] == FAIL and statuses["side camera"] == FAIL
    assert statuses["front calibration"] == OK and statuses["side calibration"] == OK
    fix = lines[lines.index(next(ln for ln in lines if ln.startswith("FAIL  front camera"))) + 1]
    assert fix.startswith(" " * 25 + "fix: ")
    assert lines[-1].startswith("2 FAIL, ") and "fix each FAIL" in lines[-1]


def test_the_command_line_refuses_bad_arguments_in_one_line():
    out = _cli("doctor", "robot_ip:=127.0.0.1", "camera:=front")
    assert out.returncode == 2 and out.stderr.strip() == (
        "graspvla doctor: unknown argument 'camera:=front': the doctor takes the robot graph's arguments "
        + ", ".join(f"{a}:=..." for a in ROBOT_ARGUMENTS)), out.stderr


def test_cpu_estimate_of_the_full_model_follows_benchmarks_md():
    """The full model (tests/fixtures/full_manifest.json) on a CPU: ~45 s per inference, scaled
    from BENCHMARKS.md's mid-size measurement, whose numbers the constants must be."""
    import json
    import re

    import torch

    from graspvla_ros.model.checks import CPU_BENCH_GFLOP, CPU_BENCH_MS, cpu_seconds, runtime_check

    text = (ROOT / "BENCHMARKS.md").read_text()
    mid = text[text.index("### mid:"):]
    assert f"{CPU_BENCH_GFLOP} GFLOP per inference" in mid.splitlines()[0]
    row = re.search(r"\| total predict \(end to end\) \| ([\d.]+) \([\d.]+\) \| ([\d.]+) ", mid)
    assert (float(row.group(1)), float(row.group(2))) == (CPU_BENCH_MS["torch"], CPU_BENCH_MS["onnxruntime"])
    entries = json.loads((ROOT / "tests" / "fixtures" / "full_manifest.json").read_text())["entries"]
    shapes = {key: tuple(shape) for key, shape, _ in entries}
    secs, gflop = cpu_seconds(shapes, "torch")
    assert 2500 < gflop < 2600 and 40 < secs < 50
    if not torch.cuda.is_available():
        check = runtime_check("torch", "unused", "", shapes, rate_hz=5.0, max_chunk_age=1.0)
        assert check.status == FAIL and f"~{secs:.2g} s per inference" in check.what
        assert "max_chunk_age (1 s)" in check.what and "CUDA GPU" in check.fix


def test_runtimes_and_tokenizers_without_what_they_need_say_so(tiny_checkpoint, tmp_path):
    from graspvla_ros.model.checks import model_checks

    ckpt, llm = (str(p) for p in tiny_checkpoint)
    (policy,) = model_checks("expert", ckpt, llm, "torch", "", 5.0, 1.0)
    assert policy.status == FAIL and "backend:=graspvla" in policy.fix
    shutil.copy(tiny_checkpoint[1] / "config.json", tmp_path)  # the LLM's config without its tokenizer
    checks = {c.name: c for c in model_checks("graspvla", ckpt, str(tmp_path), "onnxruntime", "", 5.0, 1.0)}
    assert checks["checkpoint"].status == OK
    assert checks["tokenizer"].status == FAIL and "tokenizer.model not found" in checks["tokenizer"].what
    assert "llm_dir:=" in checks["tokenizer"].fix
    assert checks["runtime"].status == WARN and "graspvla export" in checks["runtime"].fix
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        checks = {c.name: c for c in model_checks("graspvla", ckpt, llm, "tensorrt", "", 5.0, 1.0)}
        assert checks["runtime"].status == FAIL and "TensorRT" in checks["runtime"].fix


def test_a_checkpoint_of_another_model_fails_strictly(tiny_checkpoint, tmp_path):
    import json

    from graspvla_ros.model.checks import model_checks

    checkpoint = tmp_path / "other"
    shutil.copytree(tiny_checkpoint[0], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["backbone_2d"]["timm_kwargs"]["dino"]["depth"] = 4
    (checkpoint / "config.json").write_text(json.dumps(config))
    checks = {c.name: c for c in model_checks("graspvla", str(checkpoint), str(tiny_checkpoint[1]), "torch", "",
                                              5.0, 1.0)}
    assert checks["checkpoint"].status == FAIL and "missing: backbone_2d.dino" in checks["checkpoint"].what
    assert all(c.status == OK for name, c in checks.items() if name != "checkpoint")

"""`graspvla calibrate …` end to end on simulated sessions: measure, report, write; bad input
gives a clear error and writes nothing."""
from __future__ import annotations

import cv2
import numpy as np
import yaml

from graspvla_ros.calibration import store
from graspvla_ros.calibration.charuco import Board
from graspvla_ros.calibration.geometry import invert, rotation_angle_deg, rotation_from_angles
from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.cli import main
from graspvla_ros.sim.robot_scene import RobotScene

NOMINAL = load_nominal()


def _simulate(out, *extra) -> None:
    assert main(["calibrate", "simulate", "--out", str(out), *extra]) == 0


def test_board_session_from_a_displaced_camera_measures_it_and_says_how_to_fix_it(tmp_path, capsys):
    data, cal_dir = tmp_path / "session", tmp_path / "calibration"
    _simulate(data, "--camera", "front", "--offset-mm", "12", "0", "0", "--turn-deg", "-1.5", "0", "0")
    rc = main(["calibrate", "board", "--images", str(data), "--poses", str(data / "poses.yaml"),
               "--camera", "front", "--out-dir", str(cal_dir)])
    out = capsys.readouterr().out
    assert rc == 1, out  # outside the 10 mm / 1° thresholds, still written
    assert "front: FAIL" in out and "move the camera 12 mm forward (towards the robot)" in out and "pan left 1.5°" in out
    cal = store.load_calibration("front", cal_dir)
    nominal = NOMINAL.camera("front")
    truth = nominal.pose.copy()
    truth[:3, 3] += (0.012, 0, 0)
    truth[:3, :3] = rotation_from_angles(178.5, -25.0, 0.0)
    d = invert(truth) @ cal.pose
    assert np.linalg.norm(d[:3, 3]) < 0.002 and rotation_angle_deg(d[:3, :3]) < 0.2
    assert cal.deviation["passed"] is False and cal.hand_eye["poses"] == 12
    assert cal.crop.width == 480 and cal.intrinsics == nominal.intrinsics


def test_a_camera_at_the_training_viewpoint_passes(tmp_path, capsys):
    _simulate(tmp_path, "--camera", "side", "--offset-mm", "2", "-1", "1", "--poses", "8", "--seed", "2")
    rc = main(["calibrate", "board", "--images", str(tmp_path), "--poses", str(tmp_path / "poses.yaml"),
               "--camera", "side", "--out-dir", str(tmp_path), "--max-translation-mm", "5"])
    out = capsys.readouterr().out
    assert rc == 0 and "side: PASS" in out, out
    assert store.load_calibration(tmp_path / "side.yaml").deviation["passed"] is True


def test_images_without_the_board_or_too_few_poses_write_nothing(tmp_path, capsys):
    cal_dir = tmp_path / "calibration"
    cal_dir.mkdir()
    (cal_dir / "front.yaml").write_text("previous calibration\n")
    _simulate(tmp_path / "s", "--camera", "front", "--poses", "8")
    session = yaml.safe_load((tmp_path / "s" / "poses.yaml").read_text())
    for entry in session["poses"]:  # the board fell out of view
        cv2.imwrite(str(tmp_path / "s" / entry["image"]), np.full((480, 640, 3), 90, np.uint8))
    args = ["calibrate", "board", "--images", str(tmp_path / "s"), "--poses", str(tmp_path / "s" / "poses.yaml"),
            "--camera", "front", "--out-dir", str(cal_dir)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "board not found: 0 markers" in captured.out
    assert "0 usable board views of 8" in captured.err and "nothing written" in captured.err
    _simulate(tmp_path / "few", "--camera", "front", "--poses", "4")
    assert main([*args[:2], "--images", str(tmp_path / "few"), "--poses", str(tmp_path / "few" / "poses.yaml"),
                 *args[6:]]) == 2
    assert "4 usable board views of 4" in capsys.readouterr().err
    assert (cal_dir / "front.yaml").read_text() == "previous calibration\n"
    assert sorted(p.name for p in cal_dir.iterdir()) == ["front.yaml"]


def test_overlay_writes_the_blend_and_records_the_score(tmp_path, capsys):
    with RobotScene() as scene:
        live = scene.rgb(NOMINAL.camera("side").pose)
        mask = scene.silhouette(NOMINAL.camera("side").pose)
    cv2.imwrite(str(tmp_path / "side.png"), live[..., ::-1])
    cv2.imwrite(str(tmp_path / "mask.png"), mask.astype(np.uint8) * 255)
    rc = main(["calibrate", "overlay", "--image", str(tmp_path / "side.png"), "--camera", "side", "--mask",
               str(tmp_path / "mask.png"), "--out", str(tmp_path / "overlay.png"), "--save", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "mask IoU 1.000" in out, out
    assert cv2.imread(str(tmp_path / "overlay.png")).shape == (512, 512, 3)
    score = store.load_calibration("side", tmp_path).score
    assert score["mask_iou"] == 1.0 and score["edge_score"] > 0.75
    info = tmp_path / "camera_info.yaml"  # a CameraInfo dump of another camera
    info.write_text(yaml.safe_dump({"width": 1280, "height": 720, "k": [910.0, 0, 640, 0, 910.0, 360, 0, 0, 1],
                                    "d": [0.0] * 5}))
    assert main(["calibrate", "overlay", "--image", str(tmp_path / "side.png"), "--camera", "side",
                 "--intrinsics", str(info)]) == 2
    assert "is 640×480, the intrinsics are for 1280×720" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "small.png"), live[:240, :320, ::-1])
    assert main(["calibrate", "overlay", "--image", str(tmp_path / "small.png"), "--camera", "side"]) == 2
    assert "is 320×240, the intrinsics are for 640×480" in capsys.readouterr().err


def test_printed_board_is_the_board_the_detector_looks_for(tmp_path):
    assert main(["calibrate", "print-board", "--out", str(tmp_path / "board.png")]) == 0
    image = cv2.imread(str(tmp_path / "board.png"), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (5 * 200 + 200, 7 * 200 + 200)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(Board().cv()).detectBoard(image)
    assert len(ids) == 24


def test_move_puts_the_arm_at_the_calibration_joints(sim_host, capsys):
    import franky
    assert main(["calibrate", "move", "--robot-ip", sim_host, "--speed", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "arm at the calibration joint configuration" in out, out
    robot = franky.Robot(sim_host, realtime_config=franky.RealtimeConfig.Ignore)
    np.testing.assert_allclose(robot.current_joint_state.position, NOMINAL.calibration_joints, atol=3e-3)
    assert main(["calibrate", "move", "--robot-ip", "127.0.0.254", "--speed", "0.3"]) == 2
    assert "graspvla calibrate move:" in capsys.readouterr().err

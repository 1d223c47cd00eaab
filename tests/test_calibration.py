"""Calibration core against scenes rendered in MuJoCo at known poses: ChArUco pose, eye-to-hand
solve, deviation report, calibration/<camera>.yaml, and the overlay score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from graspvla_ros import preprocess
from graspvla_ros.calibration import overlay, store, synthetic
from graspvla_ros.calibration.charuco import Board, BoardNotFound, detect_board
from graspvla_ros.calibration.deviation import Thresholds, deviation
from graspvla_ros.calibration.geometry import camera_angles, invert, rotation_angle_deg, rotation_from_angles, transform
from graspvla_ros.calibration.handeye import HandEyeError, solve_eye_to_hand
from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.camera.intrinsics import Intrinsics
from graspvla_ros.sim.robot_scene import RobotScene
from graspvla_ros.sim.scene import CAMERAS, CameraSpec

NOMINAL = load_nominal()
HOME_R = Rotation.from_euler("xyz", [-np.pi, 0.0, np.pi / 4]).as_matrix()  # the reset pose: tool down
# ../shared/graspvla next to the checkout (or next to the folder holding worktrees)
REF_DIR = next((p / "shared" / "graspvla" for p in Path(__file__).resolve().parents[1:4]
                if (p / "shared" / "graspvla").is_dir()), Path("shared/graspvla"))


def _error(T_true: np.ndarray, T_est: np.ndarray) -> tuple[float, float]:
    d = invert(T_true) @ T_est
    return float(np.linalg.norm(d[:3, 3])) * 1e3, rotation_angle_deg(d[:3, :3])


def _displaced(camera: str, offset_m=(0, 0, 0), turn_deg=(0, 0, 0)) -> np.ndarray:
    cam = NOMINAL.camera(camera)
    return transform(rotation_from_angles(*np.add(cam.angles(), turn_deg)), cam.position + np.asarray(offset_m))


def test_the_sim_cameras_are_the_nominal_viewpoints():
    front, side = (NOMINAL.camera(n) for n in ("front", "side"))
    assert [c.name for c in CAMERAS] == ["front", "side"]
    for spec, nom in zip(CAMERAS, (front, side)):
        right, up, back = spec.axes()
        np.testing.assert_allclose(spec.position, nom.position)
        np.testing.assert_allclose(np.column_stack([right, -up, -back]), nom.rotation, atol=1e-12)
        assert spec.fovy_deg == pytest.approx(43.0)
    assert front.angles() == pytest.approx((180.0, -25.0, 0.0), abs=1e-9)
    forward = side.rotation[:, 2]  # the side camera looks at (0.5, 0, 0.1), 30° down
    np.testing.assert_allclose(forward, np.subtract((0.5, 0, 0.1), side.position) / np.linalg.norm(
        np.subtract((0.5, 0, 0.1), side.position)), atol=1e-12)
    assert side.angles()[1] == pytest.approx(-30.0, abs=0.05)
    assert len(NOMINAL.calibration_joints) == 7


def test_measured_extrinsics_turn_into_a_sim_camera_with_the_same_axes():
    T = _displaced("side", (0.01, -0.02, 0.005), (2.0, -1.0, 1.5))
    right, up, back = CameraSpec.from_pose("side", T).axes()
    np.testing.assert_allclose(np.column_stack([right, -up, -back]), T[:3, :3], atol=1e-12)
    assert camera_angles(T[:3, :3]) == pytest.approx(np.add(NOMINAL.camera("side").angles(), (2.0, -1.0, 1.5)))


@pytest.mark.parametrize("camera", ["front", "side"])
def test_board_pose_from_rendered_noisy_images_is_within_2_mm_and_0_2_deg(camera):
    """Tilted views pin the orientation down; a near-frontal board leaves its tilt weakly
    observed (perspective barely changes), so those get 0.5° and the README asks for tilts."""
    cam = NOMINAL.camera(camera)
    pairs = synthetic.session(cam.pose, cam.intrinsics, poses=10, centre=synthetic.BOARD_CENTRES[camera],
                              tilt_deg=30.0, noise=3.0, seed=11)
    tilted = 0
    for image, T_base_gripper in pairs:
        view = detect_board(image, cam.intrinsics)
        T_cam_board = invert(cam.pose) @ T_base_gripper @ synthetic.T_GRIPPER_BOARD
        mm, deg = _error(T_cam_board, view.T_cam_board)
        tilt = np.degrees(np.arccos(T_cam_board[2, 2]))  # board normal vs optical axis
        tilted += tilt >= 15.0
        print(f"{camera}: board pose error {mm:.2f} mm {deg:.3f}° at {tilt:.0f}° tilt")
        assert mm < 2.0 and deg < (0.2 if tilt >= 15.0 else 0.5), (mm, deg, tilt)
        assert view.corners >= 12 and view.rms_px < 0.5
    assert tilted >= 5


def test_images_without_a_board_are_refused_with_the_reason():
    intrinsics = NOMINAL.camera("front").intrinsics
    with pytest.raises(BoardNotFound, match="board not found: 0 markers"):
        detect_board(np.full((480, 640, 3), 128, np.uint8), intrinsics)
    with pytest.raises(BoardNotFound, match="intrinsics are for 640×480"):
        detect_board(np.zeros((720, 1280, 3), np.uint8), intrinsics)
    other = synthetic.session(NOMINAL.camera("front").pose, intrinsics, Board(dictionary="DICT_5X5_100"), poses=1)
    with pytest.raises(BoardNotFound, match="DICT_4X4_50"):
        detect_board(other[0][0], intrinsics)  # a board of another dictionary is not this board


def _math_session(X: np.ndarray, Y: np.ndarray, n: int, rng, noise_m=0.0003, noise_rad=0.0005):
    """Gripper poses around the workspace and the board poses a camera at X would measure."""
    G, C = [], []
    for _ in range(n):
        g = transform(Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix() @ HOME_R,
                      (0.5, 0.0, 0.3) + rng.uniform(-0.1, 0.1, 3))
        c = invert(X) @ g @ Y
        c = transform(Rotation.from_rotvec(rng.normal(size=3) * noise_rad).as_matrix() @ c[:3, :3],
                      c[:3, 3] + rng.normal(size=3) * noise_m)
        G.append(g)
        C.append(c)
    return G, C


def test_eye_to_hand_recovers_a_known_camera_pose_from_simulated_arm_poses():
    rng = np.random.default_rng(3)
    X = _displaced("front", (0.02, -0.01, 0.015), (1.0, 2.0, -0.5))
    exact = solve_eye_to_hand(*_math_session(X, synthetic.T_GRIPPER_BOARD, 8, rng, 0.0, 0.0))
    assert _error(X, exact.T_base_camera) < (1e-4, 1e-5) and exact.residual_mm < 1e-4
    assert _error(synthetic.T_GRIPPER_BOARD, exact.T_gripper_board) < (1e-4, 1e-5)
    # board poses with the noise of single ChArUco views (0.3 mm, 0.03°)
    result = solve_eye_to_hand(*_math_session(X, synthetic.T_GRIPPER_BOARD, 15, rng))
    mm, deg = _error(X, result.T_base_camera)
    assert mm < 2.0 and deg < 0.2, (mm, deg)
    assert result.poses == 15 and 0.1 < result.residual_mm < 2.0


@pytest.mark.parametrize("camera", ["front", "side"])
def test_eye_to_hand_from_rendered_board_images_recovers_the_camera(camera):
    X = _displaced(camera, (0.015, 0.01, -0.02), (-1.5, 1.0, 0.5))
    cam = NOMINAL.camera(camera)
    pairs = synthetic.session(X, cam.intrinsics, poses=10, centre=synthetic.BOARD_CENTRES[camera], seed=5)
    views = [detect_board(image, cam.intrinsics) for image, _ in pairs]
    result = solve_eye_to_hand([g for _, g in pairs], [v.T_cam_board for v in views])
    mm, deg = _error(X, result.T_base_camera)
    assert mm < 2.0 and deg < 0.2, (mm, deg)


def test_too_few_or_degenerate_poses_are_refused_with_what_to_change():
    rng = np.random.default_rng(4)
    X = NOMINAL.camera("front").pose
    G, C = _math_session(X, synthetic.T_GRIPPER_BOARD, 5, rng)
    with pytest.raises(HandEyeError, match="too few poses: 5 given, at least 6"):
        solve_eye_to_hand(G, C)
    with pytest.raises(HandEyeError, match="5 arm poses but 4 board views"):
        solve_eye_to_hand(G, C[:4])
    base = G[0]
    translated = [transform(base[:3, :3], base[:3, 3] + rng.uniform(-0.1, 0.1, 3)) for _ in range(8)]
    with pytest.raises(HandEyeError, match="turns by at most 0.0°"):
        solve_eye_to_hand(translated, [invert(X) @ g @ synthetic.T_GRIPPER_BOARD for g in translated])
    one_axis = [transform(base[:3, :3] @ Rotation.from_rotvec((0, 0, a)).as_matrix(), base[:3, 3] + (0, 0.01 * i, 0))
                for i, a in enumerate(np.radians([-40, -25, -10, 5, 20, 35, 50]))]
    with pytest.raises(HandEyeError, match="same axis"):
        solve_eye_to_hand(one_axis, [invert(X) @ g @ synthetic.T_GRIPPER_BOARD for g in one_axis])


def test_deviation_says_how_far_and_which_way_to_move_the_camera():
    front = NOMINAL.camera("front")
    # 12 mm too far from the robot (+x), 4 mm too far left (−y seen from behind), 0.5 mm low; turned
    # 1.5° to its right, tilted 0.3° too far down.
    T = _displaced("front", (0.012, -0.004, -0.0005), (-1.5, -0.3, 0.0))
    dev = deviation(front, T, front.intrinsics)
    assert not dev.passed
    assert dev.translation_mm == pytest.approx(np.linalg.norm((12, 4, 0.5)), abs=1e-6)
    assert dev.rotation_deg == pytest.approx(1.53, abs=0.01)
    assert dev.advice() == ["move the camera 12 mm forward (towards the robot)", "move the camera 4 mm to the right",
                            "pan left 1.5°", "tilt up 0.3°"]
    assert "FAIL" in dev.text() and "position off by 12.7 mm (limit 10 mm)" in dev.text()
    side = NOMINAL.camera("side")
    T = _displaced("side", (0.003, 0.002, 0.0), (0.0, 0.0, 0.4))
    ok = deviation(side, T, side.intrinsics, Thresholds(translation_mm=5, rotation_deg=0.5))
    assert ok.passed and ok.advice() == ["move the camera 2 mm forward (towards the robot)",
                                         "move the camera 3 mm to the right", "roll anticlockwise 0.4°"]
    narrow = deviation(side, side.pose, Intrinsics.from_fovy(640, 480, 35.0))
    assert not narrow.passed and narrow.crop is None and "cannot contain" in narrow.problems[0]


def test_calibration_file_round_trips_for_preprocessing_and_the_sim(tmp_path):
    intrinsics = Intrinsics(1280, 720, 910.0, 911.0, 641.2, 359.1, coeffs=(0.01, -0.02, 0.0, 0.0, 0.0))
    T = _displaced("side", (0.004, 0.0, -0.003), (0.5, 0.2, -0.1))
    cal = store.CameraCalibration("side", intrinsics, T, deviation={"passed": True}, score={"edge_score": 0.8})
    path = store.write_calibration(cal, tmp_path)
    assert path == tmp_path / "side.yaml" and [p.name for p in tmp_path.iterdir()] == ["side.yaml"]
    back = store.load_calibration("side", tmp_path)
    assert store.load_calibration(path).to_dict() == back.to_dict() and back.intrinsics == intrinsics
    assert _error(T, back.pose)[0] < 1e-3 and _error(T, back.pose)[1] < 1e-5
    assert back.crop == preprocess.fov_crop(910.0, 911.0, 641.2, 359.1, 1280, 720)
    assert back.score == {"edge_score": 0.8} and back.date == cal.date
    spec = CameraSpec.from_pose("side", back.pose)
    np.testing.assert_allclose(spec.position, T[:3, 3], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no calibration"):
        store.load_calibration("front", tmp_path)


@pytest.fixture(scope="module")
def scene():
    with RobotScene() as s:
        yield s


def _live(scene, camera: str, T: np.ndarray):
    crop = NOMINAL.camera(camera).intrinsics.crop()
    return preprocess.client_view(scene.rgb(T), crop), overlay.policy_mask(scene.silhouette(T), crop)


@pytest.mark.parametrize("camera", ["front", "side"])
def test_overlay_score_ranks_the_nominal_camera_above_moved_or_turned_ones(scene, camera):
    expected = overlay.expected_silhouette(scene, camera)
    nominal = overlay.score(expected, *_live(scene, camera, NOMINAL.camera(camera).pose))
    assert nominal.mask_iou == 1.0 and nominal.edge_score > 0.75
    worse = []
    for axis in np.eye(3):
        for sign in (1, -1):
            worse.append(_displaced(camera, sign * 0.03 * axis))
            worse.append(_displaced(camera, turn_deg=sign * 3.0 * axis))
    for T in worse:
        s = overlay.score(expected, *_live(scene, camera, T))
        assert s.edge_score < nominal.edge_score - 0.05 and s.mask_iou < 0.95, (camera, T, s)
        assert s.chamfer_px > nominal.chamfer_px


@pytest.mark.skipif(not REF_DIR.exists(), reason="official reference masks not present (../shared/graspvla)")
@pytest.mark.parametrize("camera", ["front", "side"])
def test_expected_silhouette_matches_the_official_reference_mask(scene, camera):
    import cv2
    ref = cv2.imread(str(REF_DIR / f"{camera}_ref.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert overlay.mask_iou(overlay.expected_silhouette(scene, camera), ref) > 0.85

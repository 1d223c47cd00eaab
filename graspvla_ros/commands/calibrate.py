"""`graspvla calibrate …`: offline camera calibration against GraspVLA's training viewpoints.

    graspvla calibrate board --images DIR --poses poses.yaml --camera front   # measure, report, write
    graspvla calibrate overlay --image front.png --camera front --out overlay.png
    graspvla calibrate simulate --camera front --out DIR --offset-mm 10 0 0  # a data set to try
    graspvla calibrate print-board --out board.png
    graspvla calibrate move --robot-ip 172.16.0.2            # arm to the calibration joints

Exit codes: 0 pass, 1 measured but outside the thresholds (the file is still written), 2 bad
input (nothing written).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

CAMERAS = ("front", "side")


def add_commands(sub) -> None:
    p = sub.add_parser("calibrate", help="measure the cameras against GraspVLA's training viewpoints")
    cal = p.add_subparsers(dest="calibrate_command", required=True, metavar="STEP")

    b = cal.add_parser("board", help="camera → base from ChArUco images with the board held by the gripper")
    b.add_argument("--images", type=Path, required=True, help="folder with the images named in --poses")
    b.add_argument("--poses", type=Path, required=True,
                   help="YAML: poses: [{image, position [m], quaternion_xyzw | euler_sxyz}] of the TCP in the base "
                        "frame (/graspvla/ee_pose) per image; optional intrinsics: and board: sections")
    _common(b)
    b.add_argument("--max-translation-mm", type=float, default=10.0, help="pass threshold (default 10 mm)")
    b.add_argument("--max-rotation-deg", type=float, default=1.0, help="pass threshold (default 1°)")
    b.add_argument("--min-poses", type=int, default=6, help="fewest usable board views (default 6)")
    b.add_argument("--out-dir", type=Path, default=None, help="where <camera>.yaml goes (default calibration/)")
    b.set_defaults(run=run_board)

    o = cal.add_parser("overlay", help="score a live image against the expected arm silhouette "
                                       "(arm at the calibration joint configuration)")
    o.add_argument("--image", type=Path, required=True, help="the camera's image (PNG/JPEG, full resolution)")
    _common(o)
    o.add_argument("--out", type=Path, help="write the overlay PNG here")
    o.add_argument("--mask", type=Path, help="a mask of the arm in --image (white = arm), for the mask IoU")
    o.add_argument("--expected", type=Path, help="a 256² reference mask to use instead of the rendered silhouette "
                                                 "(e.g. the official front_ref.png)")
    o.add_argument("--save", action="store_true", help="record the score in calibration/<camera>.yaml")
    o.add_argument("--out-dir", type=Path, default=None, help="where <camera>.yaml is (default calibration/); its "
                                                              "intrinsics are used when --intrinsics is not given")
    o.set_defaults(run=run_overlay)

    s = cal.add_parser("simulate", help="render a board session (images + poses.yaml) from a displaced camera")
    s.add_argument("--camera", choices=CAMERAS, required=True)
    s.add_argument("--out", type=Path, required=True, help="folder to write into")
    s.add_argument("--offset-mm", type=float, nargs=3, default=(0, 0, 0), metavar=("X", "Y", "Z"),
                   help="camera displacement in the base frame")
    s.add_argument("--turn-deg", type=float, nargs=3, default=(0, 0, 0), metavar=("YAW", "PITCH", "ROLL"),
                   help="camera rotation added to its nominal yaw/pitch/roll")
    s.add_argument("--poses", type=int, default=12)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=run_simulate)

    m = cal.add_parser("move", help="move the arm to the calibration joint configuration (franky; "
                                    "stop the controller first: one client commands the robot)")
    m.add_argument("--robot-ip", required=True, help="Franka control box address (or a franky-sim host)")
    m.add_argument("--speed", type=float, default=0.1, help="relative dynamics factor, 0–1 (default 0.1)")
    m.add_argument("--realtime", action="store_true", help="enforce libfranka's real-time check (RT kernel)")
    m.set_defaults(run=run_move)

    pb = cal.add_parser("print-board", help="the board image to print (scale it so one square measures the board's square_m)")
    pb.add_argument("--out", type=Path, required=True)
    pb.add_argument("--board", type=Path, help="YAML with the board (squares_x, squares_y, square_m, marker_m, dictionary)")
    pb.set_defaults(run=run_print_board)


def _common(p) -> None:
    p.add_argument("--camera", choices=CAMERAS, required=True)
    p.add_argument("--intrinsics", type=Path, help="YAML: width, height, fx, fy, cx, cy[, distortion] or a "
                                                   "CameraInfo dump (k, d, width, height); default: the sim camera")
    p.add_argument("--board", type=Path, help="YAML with the board (default 7×5 × 50 mm, 37 mm markers, DICT_4X4_50)")


def _yaml(path: Path) -> dict:
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return doc


def _intrinsics(doc: dict | None, camera: str):
    from graspvla_ros.calibration.nominal import load_nominal
    from graspvla_ros.camera.intrinsics import Intrinsics
    if doc is None:
        return load_nominal().camera(camera).intrinsics
    if "k" in doc:
        return Intrinsics.from_camera_info(argparse.Namespace(**{"d": (), **doc}))
    return Intrinsics.from_dict(doc)


def _read_image(path: Path) -> np.ndarray:
    import cv2
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    return np.ascontiguousarray(image[..., ::-1])


def tcp_pose(entry: dict) -> np.ndarray:
    """T_base_gripper from a poses.yaml entry."""
    from scipy.spatial.transform import Rotation

    from graspvla_ros.calibration.geometry import transform
    if "quaternion_xyzw" in entry:
        R = Rotation.from_quat(entry["quaternion_xyzw"]).as_matrix()
    elif "euler_sxyz" in entry:
        R = Rotation.from_euler("xyz", entry["euler_sxyz"]).as_matrix()
    else:
        raise ValueError(f"pose of {entry.get('image')!r} needs quaternion_xyzw or euler_sxyz")
    return transform(R, entry["position"])


def _previous(camera: str, kwargs: dict):
    """The camera's current calibration file, or None (an unreadable one is reported, then replaced)."""
    from graspvla_ros.calibration import store
    try:
        return store.load_calibration(camera, **kwargs)
    except FileNotFoundError:
        return None
    except ValueError as e:
        print(f"replacing {e}")
        return None


def run_board(args) -> int:
    from graspvla_ros.calibration import store
    from graspvla_ros.calibration.charuco import Board, BoardNotFound, detect_board
    from graspvla_ros.calibration.deviation import Thresholds, deviation
    from graspvla_ros.calibration.handeye import HandEyeError, solve_eye_to_hand
    from graspvla_ros.calibration.nominal import load_nominal

    session = _yaml(args.poses)
    intrinsics = _intrinsics(_yaml(args.intrinsics) if args.intrinsics else session.get("intrinsics"), args.camera)
    board = Board.from_dict(_yaml(args.board) if args.board else session.get("board"))
    entries = session.get("poses") or []
    gripper, views, missed = [], [], []
    for entry in entries:
        try:
            view = detect_board(_read_image(args.images / entry["image"]), intrinsics, board)
        except BoardNotFound as e:
            missed.append(f"{entry['image']}: {e}")
            continue
        gripper.append(tcp_pose(entry))
        views.append(view)
    for line in missed:
        print(f"skipped {line}")
    if len(views) < args.min_poses:
        raise HandEyeError(f"{len(views)} usable board views of {len(entries)} listed in {args.poses}, "
                           f"{args.min_poses} needed; nothing written")
    w, h = board.size_m
    corners = np.array([[0, 0, 0], [w, 0, 0], [0, h, 0], [w, h, 0]])
    result = solve_eye_to_hand(gripper, [v.T_cam_board for v in views], corners, args.min_poses)
    nominal = load_nominal().camera(args.camera)
    dev = deviation(nominal, result.T_base_camera, intrinsics,
                    Thresholds(args.max_translation_mm, args.max_rotation_deg))
    kwargs = {} if args.out_dir is None else {"directory": args.out_dir}
    previous = _previous(args.camera, kwargs)
    cal = store.CameraCalibration(args.camera, intrinsics, result.T_base_camera, deviation=dev.to_dict(),
                                  hand_eye={**result.to_dict(), "board": board.to_dict(),
                                            "corner_rms_px": round(float(np.mean([v.rms_px for v in views])), 4)},
                                  score=previous.score if previous else None)
    path = store.write_calibration(cal, **kwargs)
    print(f"{len(views)} board views; hand-eye residual {result.residual_mm:.2f} mm / {result.residual_deg:.3f}° "
          f"(board as the arm places it vs as the camera sees it)")
    print(dev.text())
    print(f"wrote {path}")
    return 0 if dev.passed else 1


def run_overlay(args) -> int:
    import cv2

    from graspvla_ros import preprocess
    from graspvla_ros.calibration import overlay, store
    from graspvla_ros.calibration.nominal import load_nominal
    from graspvla_ros.sim.robot_scene import RobotScene

    kwargs = {} if args.out_dir is None else {"directory": args.out_dir}
    previous = _previous(args.camera, kwargs)
    if args.intrinsics:
        intrinsics = _intrinsics(_yaml(args.intrinsics), args.camera)
    elif previous is not None:  # what `calibrate board` measured with
        intrinsics = previous.intrinsics
    else:
        intrinsics = _intrinsics(None, args.camera)
    image = _read_image(args.image)
    if image.shape[:2] != (intrinsics.height, intrinsics.width):
        raise ValueError(f"{args.image} is {image.shape[1]}×{image.shape[0]}, the intrinsics are for "
                         f"{intrinsics.width}×{intrinsics.height} (pass --intrinsics)")
    crop = intrinsics.crop()
    view = preprocess.client_view(image, crop)
    if args.expected:
        expected = cv2.imread(str(args.expected), cv2.IMREAD_GRAYSCALE)
        if expected is None or expected.shape != view.shape[:2]:
            raise ValueError(f"{args.expected}: expected a {view.shape[1]}×{view.shape[0]} mask")
        expected = expected > 127
    else:
        nominal = load_nominal()
        with RobotScene(nominal=nominal) as scene:
            expected = overlay.expected_silhouette(scene, args.camera, nominal)
    live_mask = None
    if args.mask:
        mask = cv2.imread(str(args.mask), cv2.IMREAD_GRAYSCALE)
        if mask is None or mask.shape != image.shape[:2]:
            raise ValueError(f"{args.mask}: expected a {image.shape[1]}×{image.shape[0]} mask like --image")
        live_mask = overlay.policy_mask(mask > 127, crop)
    result = overlay.score(expected, view, live_mask)
    print(f"{args.camera}: {result.text()}")
    if args.out:
        cv2.imwrite(str(args.out), overlay.overlay_image(view, expected)[..., ::-1])
        print(f"wrote {args.out}")
    if args.save:
        cal = previous or store.CameraCalibration(args.camera, intrinsics)
        cal.intrinsics = intrinsics
        cal.score = {**result.to_dict(), "image": str(args.image), "expected": str(args.expected or "rendered"),
                     "date": store.utc_now()}
        print(f"wrote {store.write_calibration(cal, **kwargs)}")
    return 0


def run_simulate(args) -> int:
    import cv2
    import yaml
    from scipy.spatial.transform import Rotation

    from graspvla_ros.calibration import synthetic
    from graspvla_ros.calibration.geometry import rotation_from_angles, transform
    from graspvla_ros.calibration.nominal import load_nominal

    cam = load_nominal().camera(args.camera)
    angles = np.add(cam.angles(), args.turn_deg)
    T = transform(rotation_from_angles(*angles), cam.position + np.asarray(args.offset_mm) / 1e3)
    pairs = synthetic.session(T, cam.intrinsics, poses=args.poses, centre=synthetic.BOARD_CENTRES[args.camera],
                              seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    poses = []
    for i, (image, g) in enumerate(pairs):
        name = f"{args.camera}_{i:02d}.png"
        cv2.imwrite(str(args.out / name), image[..., ::-1])
        poses.append({"image": name, "position": [round(float(v), 6) for v in g[:3, 3]],
                      "quaternion_xyzw": [round(float(v), 8) for v in Rotation.from_matrix(g[:3, :3]).as_quat()]})
    with open(args.out / "poses.yaml", "w") as f:
        yaml.safe_dump({"intrinsics": cam.intrinsics.to_dict(), "poses": poses}, f, sort_keys=False)
    print(f"wrote {len(poses)} views of a {args.camera} camera moved by {list(args.offset_mm)} mm and turned "
          f"by {list(args.turn_deg)}° (yaw, pitch, roll) to {args.out}")
    return 0


def run_move(args) -> int:
    import franky

    from graspvla_ros.calibration.nominal import load_nominal
    from graspvla_ros.control import explain_connection_error

    if not 0 < args.speed <= 1:
        raise ValueError(f"--speed must be in (0, 1], got {args.speed}")
    joints = load_nominal().calibration_joints
    config = franky.RealtimeConfig.Enforce if args.realtime else franky.RealtimeConfig.Ignore
    try:
        robot = franky.Robot(args.robot_ip, realtime_config=config)
        robot.relative_dynamics_factor = args.speed
        if robot.has_errors:
            robot.recover_from_errors()
        robot.move(franky.JointMotion(list(joints)))
        settle_until = time.monotonic() + 5.0  # the motion ends on the reference; let the arm settle on it
        while np.abs(robot.current_joint_state.velocity).max() > 0.002 and time.monotonic() < settle_until:
            time.sleep(0.05)
    except Exception as e:  # libfranka raises several exception types
        print(f"graspvla calibrate move: {explain_connection_error(args.robot_ip, e)}", file=sys.stderr)
        return 2
    error = np.abs(np.subtract(robot.current_joint_state.position, joints)).max()
    print(f"arm at the calibration joint configuration (largest joint error {np.degrees(error):.3f}°)")
    return 0


def run_print_board(args) -> int:
    import cv2

    from graspvla_ros.calibration.charuco import Board
    board = Board.from_dict(_yaml(args.board) if args.board else None)
    image = board.image(200, 100)
    cv2.imwrite(str(args.out), image)
    print(f"wrote {args.out}: print it so that one square measures {board.square_m * 1e3:g} mm "
          f"({board.squares_x}×{board.squares_y} squares, {math.floor(board.size_m[0] * 1e3)}×"
          f"{math.floor(board.size_m[1] * 1e3)} mm plus margin); glue it flat onto a rigid plate")
    return 0

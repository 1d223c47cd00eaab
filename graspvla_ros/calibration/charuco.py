"""ChArUco board detection and the camera's pose relative to the board (OpenCV aruco).

A ChArUco board (chessboard with ArUco markers in the white squares) gives sub-pixel corners
that are identified even when the board is partly hidden, so one image gives a full 6-DoF pose.
Board frame (OpenCV): origin at the board's top-left chessboard corner, x along the squares to
the right, y down, z into the board.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from graspvla_ros.calibration.geometry import transform
from graspvla_ros.camera.intrinsics import Intrinsics


class BoardNotFound(ValueError):
    """An image in which the board cannot give a reliable pose, with the reason."""


@dataclass(frozen=True)
class Board:
    """The printed board. Default: 7×5 squares of 50 mm with 37 mm markers (DICT_4X4_50), an
    A3 sheet (350 × 250 mm) glued to a flat plate; measure the printed squares and set square_m
    to what the ruler says."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.05
    marker_m: float = 0.037
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self):
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
        if not 0 < self.marker_m < self.square_m:
            raise ValueError(f"marker size {self.marker_m} m must be positive and smaller than the square {self.square_m} m")
        if min(self.squares_x, self.squares_y) < 3:
            raise ValueError("a ChArUco board needs at least 3×3 squares")

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def cv(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def image(self, px_per_square: int = 200, margin_px: int = 0) -> np.ndarray:
        """The board as a grey image with a white margin of margin_px around the squares:
        print it at square_m per px_per_square pixels."""
        size = (self.squares_x * px_per_square + 2 * margin_px, self.squares_y * px_per_square + 2 * margin_px)
        return self.cv().generateImage(size, marginSize=margin_px, borderBits=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Board:
        return cls(**(d or {}))


@dataclass(frozen=True)
class BoardView:
    """The board seen in one image: its pose in the camera and how well the corners fit."""

    T_cam_board: np.ndarray
    corners: int
    rms_px: float


def detect_board(image: np.ndarray, intrinsics: Intrinsics, board: Board = Board(),
                 min_corners: int = 8) -> BoardView:
    """The board's pose in the camera (solvePnP over the identified ChArUco corners, refined by
    Levenberg–Marquardt). `image`: HxWx3 RGB or HxW grey. BoardNotFound says why not."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.shape[:2] != (intrinsics.height, intrinsics.width):
        raise BoardNotFound(f"image is {image.shape[1]}×{image.shape[0]}, the intrinsics are for "
                            f"{intrinsics.width}×{intrinsics.height}")
    params = cv2.aruco.CharucoParameters()
    params.cameraMatrix, params.distCoeffs = intrinsics.K, intrinsics.dist
    detector = cv2.aruco.CharucoDetector(board.cv(), params)
    corners, ids, _, marker_ids = detector.detectBoard(image)
    markers = 0 if marker_ids is None else len(marker_ids)
    found = 0 if ids is None else len(ids)
    if found < min_corners:
        raise BoardNotFound(f"board not found: {markers} markers and {found} chessboard corners identified, "
                            f"{min_corners} corners needed (is the whole board in view, lit evenly, "
                            f"and the dictionary {board.dictionary}?)")
    obj, img = board.cv().matchImagePoints(corners, ids)
    obj, img = obj.reshape(-1, 3), img.reshape(-1, 2)
    spread = np.linalg.svd(obj[:, :2] - obj[:, :2].mean(0), compute_uv=False)
    if spread[1] < board.square_m:
        raise BoardNotFound(f"the {found} identified corners lie (nearly) on one line: the pose is undefined")
    ok, rvec, tvec = cv2.solvePnP(obj, img, intrinsics.K, intrinsics.dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise BoardNotFound("solvePnP found no board pose")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, intrinsics.K, intrinsics.dist, rvec, tvec)
    projected, _ = cv2.projectPoints(obj, rvec, tvec, intrinsics.K, intrinsics.dist)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - img) ** 2, axis=1))))
    return BoardView(transform(cv2.Rodrigues(rvec)[0], tvec), found, rms)

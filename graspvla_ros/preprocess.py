"""GraspVLA image preprocessing, shared by the cameras (client side) and the model (server side).

The official pipeline is split in two: the robot client centre-crops 480×480 of a D435's
640×480 colour image and resizes it to 256×256 with cv2 INTER_CUBIC; the model server
letterboxes to 224×224 with PIL LANCZOS. A camera with another field of view is first cropped
to the window a D435 would see, computed from its intrinsics (`fov_crop`), so the model gets
the angular extent it was trained on.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

MODEL_SIZE = 224
CLIENT_SIZE = 256
OFFICIAL_WIDTH, OFFICIAL_HEIGHT = 640, 480
# A D435 colour stream at 640×480 sees ≈55°×42.5°; the official 480×480 centre crop keeps
# the full vertical extent, i.e. a square of 42.5° on both axes.
REFERENCE_VFOV_DEG = 42.5
REFERENCE_HFOV_DEG = math.degrees(
    2 * math.atan(math.tan(math.radians(REFERENCE_VFOV_DEG) / 2) * OFFICIAL_WIDTH / OFFICIAL_HEIGHT))
# Crop windows within this fraction of the official 480 px crop use the official crop exactly
# (D435 units differ by a few pixels of focal length; the official client ignores that).
SNAP_TOLERANCE = 0.02
ENCODINGS = ("rgb8", "bgr8")


class ImageError(ValueError):
    """An image the pipeline refuses, with the reason."""


class FovError(ValueError):
    """A camera whose field of view cannot cover what the model was trained on."""


@dataclass(frozen=True)
class CropWindow:
    """The pixel window (x0, y0, width, height) cut from a camera image before resizing."""

    x0: int
    y0: int
    width: int
    height: int
    image_width: int
    image_height: int

    def apply(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) != (self.image_width, self.image_height):
            raise ImageError(f"image is {w}×{h}, the crop was computed for "
                             f"{self.image_width}×{self.image_height}")
        return image[self.y0:self.y0 + self.height, self.x0:self.x0 + self.width]


def official_crop(width: int = OFFICIAL_WIDTH, height: int = OFFICIAL_HEIGHT) -> CropWindow:
    """The official client's crop: the centred min(w, h) square."""
    side = min(width, height)
    return CropWindow((width - side) // 2, (height - side) // 2, side, side, width, height)


def fov_crop(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> CropWindow:
    """The window of a pinhole camera (CameraInfo K, width, height) that sees the same square
    of REFERENCE_VFOV_DEG as the official D435 crop, centred on the principal point.

    Raises FovError when the camera's field of view is too small to contain it.
    """
    if min(fx, fy) <= 0 or width <= 0 or height <= 0:
        raise FovError(f"invalid intrinsics fx={fx} fy={fy} for a {width}×{height} image")
    half_tan = math.tan(math.radians(REFERENCE_VFOV_DEG) / 2)
    crop_w, crop_h = 2 * half_tan * fx, 2 * half_tan * fy
    official = official_crop(width, height)
    if all(abs(c - official.width) <= SNAP_TOLERANCE * official.width for c in (crop_w, crop_h)):
        return official
    x0, y0 = round(cx + 0.5 - crop_w / 2), round(cy + 0.5 - crop_h / 2)
    w, h = round(crop_w), round(crop_h)
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        hfov = math.degrees(2 * math.atan(width / (2 * fx)))
        vfov = math.degrees(2 * math.atan(height / (2 * fy)))
        raise FovError(
            f"camera field of view {hfov:.1f}°×{vfov:.1f}° (principal point {cx:.0f},{cy:.0f}) "
            f"cannot contain the {REFERENCE_VFOV_DEG}°×{REFERENCE_VFOV_DEG}° square GraspVLA was "
            f"trained on (it needs a {w}×{h} px window in a {width}×{height} image); use a wider "
            f"lens or a lower zoom, as the official README asks for a FOV above 43°")
    return CropWindow(x0, y0, w, h, width, height)


def crop_from_camera_info(info) -> CropWindow:
    """`fov_crop` from a sensor_msgs/CameraInfo (or anything with k, width, height)."""
    k = info.k
    return fov_crop(k[0], k[4], k[2], k[5], info.width, info.height)


class ViewCrops:
    """Each camera's crop window from its CameraInfo, recomputed only when its intrinsics change
    (CameraInfo arrives with every frame)."""

    def __init__(self) -> None:
        self._crops: dict[str, tuple[tuple, CropWindow]] = {}

    def update(self, view: str, info) -> None:
        """From a sensor_msgs/CameraInfo (k, width, height); FovError or ValueError keeps the old crop."""
        key = (tuple(info.k), info.width, info.height)
        if self._crops.get(view, (None,))[0] != key:
            self._crops[view] = (key, crop_from_camera_info(info))

    def get(self, view: str) -> CropWindow | None:
        """The view's crop, None before its first CameraInfo."""
        return self._crops[view][1] if view in self._crops else None


def image_from_fields(encoding: str, width: int, height: int, step: int, data,
                      expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """An HxWx3 uint8 RGB array from sensor_msgs/Image fields; ImageError says why not."""
    if encoding not in ENCODINGS:
        raise ImageError(f"encoding {encoding!r} is not supported (expected one of {ENCODINGS})")
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image ({width}×{height})")
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise ImageError(f"image is {width}×{height}, expected {expected_size[0]}×{expected_size[1]}")
    if step < width * 3:
        raise ImageError(f"row step {step} is shorter than {width} px × 3 bytes")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * height:
        raise ImageError(f"image data has {buf.size} bytes, {step}×{height} = {step * height} expected")
    image = buf[:step * height].reshape(height, step)[:, :width * 3].reshape(height, width, 3)
    return image[..., ::-1] if encoding == "bgr8" else image


def image_from_msg(msg, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """`image_from_fields` for a sensor_msgs/Image (duck-typed: the core never imports rclpy)."""
    return image_from_fields(msg.encoding, msg.width, msg.height, msg.step, msg.data, expected_size)


def client_view(image: np.ndarray, crop: CropWindow | None = None) -> np.ndarray:
    """What the official robot client sends: the crop (default: official centre square)
    resized to 256×256 with cv2 INTER_CUBIC, as a contiguous HxWx3 uint8 RGB array."""
    import cv2  # here, not at module level: the model's side (letterbox_to_model) runs without OpenCV

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if crop is None:
        crop = official_crop(image.shape[1], image.shape[0])
    window = np.ascontiguousarray(crop.apply(image))
    return cv2.resize(window, (CLIENT_SIZE, CLIENT_SIZE), interpolation=cv2.INTER_CUBIC)


def encode_view(image: np.ndarray, crop: CropWindow | None, quality: int) -> bytes:
    """The official client's bytes on the wire: `client_view` as a JPEG (PIL) at `quality` (1–100).
    What the robot host sends the policy with `transport: model_view` (a sensor_msgs/CompressedImage)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1 … 100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(client_view(image, crop)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_view(data: bytes) -> np.ndarray:
    """The 256×256 RGB view the model's server reads from `encode_view`'s bytes; ImageError says
    why not (not a JPEG, truncated, another size)."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as jpeg:
            if jpeg.format != "JPEG":
                raise ImageError(f"a model view must be a JPEG, got {jpeg.format}")
            image = np.asarray(jpeg.convert("RGB"))
    except UnidentifiedImageError:
        raise ImageError(f"not an image ({len(data)} bytes)") from None
    except (OSError, SyntaxError) as err:  # PIL: truncated or corrupt data
        raise ImageError(f"not a readable JPEG ({len(data)} bytes): {err}") from None
    if image.shape[:2] != (CLIENT_SIZE, CLIENT_SIZE):
        raise ImageError(f"a model view is {CLIENT_SIZE}×{CLIENT_SIZE}, got {image.shape[1]}×{image.shape[0]}")
    return image


def letterbox_to_model(image: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB image to size×size keeping its aspect ratio (PIL LANCZOS),
    pasted on a black canvas, as the official server does: the new size truncates
    (``int(side · min(size/w, size/h))``); the official server pastes a non-square image at a
    random offset (its training augmentation), here it goes to the top-left corner. Square inputs
    (what the official client sends) are identical either way."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    resized = Image.fromarray(image).resize((nw, nh), Image.LANCZOS)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, (0, 0))
    return np.asarray(canvas)


def model_input(image: np.ndarray, crop: CropWindow | None = None) -> np.ndarray:
    """The whole pipeline in one process: camera image → 224×224 model input."""
    return letterbox_to_model(client_view(image, crop))

"""GraspVLA preprocessing against an independent float64 numpy implementation of the same
resampling filters (cv2 INTER_CUBIC, PIL LANCZOS), within 1 grey level."""
from __future__ import annotations

import math

import numpy as np
import pytest

from graspvla_ros import preprocess as pp


def _cubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """Keys cubic (a = −0.75), half-pixel centres, replicated border, no antialiasing."""
    a = -0.75
    scale = in_size / out_size
    w = np.zeros((out_size, in_size))
    for o in range(out_size):
        src = (o + 0.5) * scale - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            d = abs(src - tap)
            k = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            w[o, min(max(tap, 0), in_size - 1)] += k
    return w


def _lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """Lanczos-3 widened by the reduction factor, normalised, clipped at the borders."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    w = np.zeros((out_size, in_size))
    for o in range(out_size):
        centre = (o + 0.5) * scale
        taps = np.arange(max(0, int(centre - 3 * stretch)), min(in_size, int(centre + 3 * stretch) + 1))
        x = (taps + 0.5 - centre) / stretch
        k = np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
        w[o, taps] = k / k.sum()
    return w


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _resample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, per_pass_uint8: bool = False) -> np.ndarray:
    """Separable resampling, horizontal pass first; PIL stores each pass as 8 bits, cv2 does not."""
    out = np.einsum("pw,hwc->hpc", cols, image.astype(np.float64))
    if per_pass_uint8:
        out = _to_uint8(out).astype(np.float64)
    return _to_uint8(np.einsum("oh,hpc->opc", rows, out))


def _scene(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A camera-like image: smooth gradients, a few hard edges and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([128 + 100 * np.sin(6 * xx + 3 * yy), 128 + 90 * np.cos(4 * yy), 60 + 150 * xx], -1)
    img[h // 3:h // 2, w // 4:w // 2] = (230, 20, 20)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_client_view_matches_reference_cubic():
    image = _scene()
    ref = _resample(image[:, 80:560], _cubic_weights(480, 256), _cubic_weights(480, 256))
    out = pp.client_view(image)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert _max_diff(out, ref) <= 1


def test_letterbox_matches_reference_lanczos():
    image = _scene(256, 256, seed=1)
    ref = _resample(image, _lanczos_weights(256, 224), _lanczos_weights(256, 224), per_pass_uint8=True)
    assert _max_diff(pp.letterbox_to_model(image), ref) <= 1


def test_full_pipeline_matches_reference():
    image = _scene(seed=2)
    cubic = _cubic_weights(480, 256)
    client = _resample(image[:, 80:560], cubic, cubic)
    lanczos = _lanczos_weights(256, 224)
    ref = _resample(client, lanczos, lanczos, per_pass_uint8=True)
    out = pp.model_input(image)
    assert out.shape == (224, 224, 3)
    assert _max_diff(out, ref) <= 1


def test_d435_intrinsics_give_the_official_crop():
    # A D435 at 640×480 has fx ≈ fy ≈ 605–625 px: the official 480×480 centre crop.
    for f, cx, cy in ((605.0, 321.3, 242.1), (615.9, 318.0, 239.5), (625.0, 320.0, 240.0)):
        crop = pp.fov_crop(f, f, cx, cy, 640, 480)
        assert (crop.x0, crop.y0, crop.width, crop.height) == (80, 0, 480, 480)


def test_wide_camera_is_cropped_to_the_same_field_of_view():
    # A 1280×720 stream with a 90° horizontal FOV: fx = 640.
    crop = pp.fov_crop(640.0, 640.0, 639.5, 359.5, 1280, 720)
    half_tan = math.tan(math.radians(pp.REFERENCE_VFOV_DEG) / 2)
    assert crop.width == crop.height == round(2 * half_tan * 640)
    assert crop.x0 + crop.width / 2 == pytest.approx(640, abs=1)
    assert crop.y0 + crop.height / 2 == pytest.approx(360, abs=1)
    seen = math.degrees(2 * math.atan(crop.width / 2 / 640))
    assert seen == pytest.approx(pp.REFERENCE_VFOV_DEG, abs=0.2)
    out = pp.client_view(_scene(720, 1280), crop)
    assert out.shape == (256, 256, 3)


def test_narrow_camera_is_refused():
    # fx = 800 at 640×480: 43.6°×33.4°, vertically narrower than the 42.5° square.
    with pytest.raises(pp.FovError, match="cannot contain"):
        pp.fov_crop(800.0, 800.0, 319.5, 239.5, 640, 480)


def test_crop_from_camera_info_reads_k():
    class Info:  # the fields of sensor_msgs/CameraInfo that matter
        k = [610.0, 0.0, 319.5, 0.0, 610.0, 239.5, 0.0, 0.0, 1.0]
        width, height = 640, 480
    assert pp.crop_from_camera_info(Info()) == pp.official_crop()


def test_crop_refuses_an_image_of_another_size():
    with pytest.raises(pp.ImageError, match="computed for 640×480"):
        pp.client_view(_scene(720, 1280), pp.official_crop())


@pytest.mark.parametrize("fields, reason", [
    (("mono8", 640, 480, 640, bytes(640 * 480)), "encoding 'mono8' is not supported"),
    (("rgb8", 0, 0, 0, b""), "empty image"),
    (("rgb8", 640, 480, 1920, bytes(100)), "100 bytes"),
    (("rgb8", 640, 480, 1000, bytes(1000 * 480)), "row step 1000"),
    (("rgb8", 320, 240, 960, bytes(960 * 240)), "expected 640×480"),
])
def test_bad_images_are_refused_with_a_reason(fields, reason):
    with pytest.raises(pp.ImageError, match=reason):
        pp.image_from_fields(*fields, expected_size=(640, 480))


def test_image_fields_padding_and_bgr():
    rgb = _scene(4, 5)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :15] = rgb[..., ::-1].reshape(4, 15)
    out = pp.image_from_fields("bgr8", 5, 4, 16, padded.tobytes())
    np.testing.assert_array_equal(out, rgb)


def test_view_crops_follow_each_cameras_intrinsics_and_keep_the_last_good_one():
    from types import SimpleNamespace

    crops = pp.ViewCrops()
    assert crops.get("front") is None
    d435 = SimpleNamespace(k=[615.0, 0, 320.0, 0, 615.0, 240.0, 0, 0, 1], width=640, height=480)
    crops.update("front", d435)
    assert crops.get("front") == pp.official_crop(640, 480) and crops.get("side") is None
    narrow = SimpleNamespace(k=[2000.0, 0, 320.0, 0, 2000.0, 240.0, 0, 0, 1], width=640, height=480)
    with pytest.raises(pp.FovError):
        crops.update("front", narrow)
    assert crops.get("front") == pp.official_crop(640, 480), "a refused camera_info keeps the crop it had"

"""Set-up checks of one RealSense camera by serial (`graspvla doctor`): present, on USB 3, its
firmware against what librealsense recommends, its colour stream (640×480 @ 30 Hz, rgb8, as the
camera node opens it: a frame must arrive), and frame metadata (timestamps in the camera's
hardware or global time domain, not the host's arrival time).

`devices` lists the candidate cameras, as `RealSenseDevice` takes it: every RealSense on USB by
default, software devices in the tests."""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

import pyrealsense2 as rs

from graspvla_ros.camera.source import (CameraFrames, DeviceNotFound, RealSenseDevice, RealSenseStream,
                                        StreamSettings, _connected)
from graspvla_ros.checks import Check, fail, ok, warn

METADATA_DOMAINS = (rs.timestamp_domain.hardware_clock, rs.timestamp_domain.global_time)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


def usb_check(camera: str, device: rs.device) -> Check:
    name = f"{camera} USB"
    plug = "plug it into a USB 3 port (blue) with a USB 3 cable, without a USB 2 hub or extension"
    if not device.supports(rs.camera_info.usb_type_descriptor):
        return warn(name, "the camera does not report its USB type", plug)
    usb = device.get_info(rs.camera_info.usb_type_descriptor)
    if usb.startswith("3"):
        return ok(name, f"USB {usb}")
    return warn(name, f"USB {usb}: the camera runs at USB 2 speed (fewer modes, dropped frames)", plug)


def firmware_check(camera: str, device: rs.device) -> Check:
    name = f"{camera} firmware"
    if not device.supports(rs.camera_info.firmware_version):
        return warn(name, "the camera does not report its firmware version", "look at the camera in realsense-viewer")
    firmware = device.get_info(rs.camera_info.firmware_version)
    if not device.supports(rs.camera_info.recommended_firmware_version):
        return ok(name, f"firmware {firmware}")
    recommended = device.get_info(rs.camera_info.recommended_firmware_version)
    if _version(firmware) < _version(recommended):
        serial = device.get_info(rs.camera_info.serial_number)
        return warn(name, f"firmware {firmware}, older than the {recommended} librealsense {rs.__version__} recommends",
                    f"update it: rs-fw-update -s {serial} -f <the {recommended} image from the RealSense firmware "
                    "releases>, or from realsense-viewer")
    return ok(name, f"firmware {firmware} (librealsense {rs.__version__} recommends {recommended})")


def _first_frame(stream: RealSenseStream, timeout: float) -> CameraFrames | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = stream.read(0.1)
        if frames is not None:
            return frames
    return None


def stream_checks(camera: str, device: rs.device, settings: StreamSettings, timeout: float) -> list[Check]:
    """The colour stream starts and delivers a frame within `timeout` s; its timestamps come from
    frame metadata."""
    name = f"{camera} stream"
    want = f"{settings.width}×{settings.height} @ {settings.fps} Hz colour"
    try:
        stream = RealSenseStream(device, settings, f"the {camera} camera")
    except DeviceNotFound as err:  # the mode is not offered
        return [fail(name, str(err), "use a RealSense D435/D415 on USB 3 (GraspVLA's cameras)")]
    except RuntimeError as err:  # librealsense refused to open or start it (busy)
        return [fail(name, f"{want} did not start: {err}", "stop whatever holds the camera (the robot graph's camera "
                     "nodes, realsense-viewer), then run the doctor again")]
    try:
        start = time.monotonic()
        frames = _first_frame(stream, timeout)
    finally:
        stream.close()
    if frames is None:
        return [fail(name, f"{want} started, but no frame came within {timeout:g} s",
                     "re-plug the camera (USB 3 port) and look at it in realsense-viewer")]
    checks = [ok(name, f"{want}: first frame after {time.monotonic() - start:.1f} s")]
    if frames.domain in METADATA_DOMAINS:
        checks.append(ok(f"{camera} metadata", f"frames stamped in the camera's {frames.domain.name} domain"))
    else:
        checks.append(warn(f"{camera} metadata", f"frames stamped {frames.domain.name} (host arrival time): no frame "
                           "metadata, so every stamp carries the USB transfer's latency and jitter",
                           "enable metadata: install librealsense2-dkms (patched uvcvideo kernel module), or use a "
                           "librealsense built with -DFORCE_RSUSB_BACKEND=ON"))
    return checks


def camera_checks(camera: str, serial: str, devices: Callable[[], Iterable[rs.device]] = _connected,
                  settings: StreamSettings = StreamSettings(), timeout: float = 5.0) -> list[Check]:
    """Every check of the camera `camera` ("front", "side") with serial number `serial`."""
    name = f"{camera} camera"
    if not serial:
        present = ", ".join(d.get_info(rs.camera_info.serial_number) for d in devices()) or "none"
        return [fail(name, "no serial number given", f"pass {camera}_serial:=<serial> (connected: {present})")]
    try:
        device = RealSenseDevice(serial, devices).open()
    except DeviceNotFound as err:
        return [fail(name, str(err), f"plug in the camera {serial}, or pass the serial of the {camera} camera as "
                     f"{camera}_serial:=<serial>")]
    model = device.get_info(rs.camera_info.name) if device.supports(rs.camera_info.name) else "RealSense"
    return [ok(name, f"{model} {serial}"), usb_check(camera, device), firmware_check(camera, device),
            *stream_checks(camera, device, settings, timeout)]

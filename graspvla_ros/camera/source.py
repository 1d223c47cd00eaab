"""Where a camera's frames come from, all through the real pyrealsense2 code paths.

- `RealSenseDevice`: a physical camera, selected by serial number.
- `SoftwareCamera`: an `rs.software_device` whose frames are injected by the caller (tests,
  benchmarks); it can be "unplugged" to exercise device-loss handling.
- `PlaybackFile`: a `.db3` recording made with `rs.recorder`.

Each source hands out an `rs.device`; `RealSenseStream` opens its colour (and optionally
depth, aligned to colour) sensors into a syncer and reads `CameraFrames` from it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyrealsense2 as rs

from graspvla_ros.camera.intrinsics import PLUMB_BOB, Intrinsics
from graspvla_ros.camera.settings import StreamSettings


class DeviceNotFound(RuntimeError):
    """The requested camera is not connected (the message lists those that are)."""


@dataclass
class CameraFrames:
    """One synchronised capture: colour (HxWx3 rgb8), optional depth (HxW uint16, aligned to
    colour, `depth_scale` metres per unit), and the camera time of the middle of exposure."""

    color: np.ndarray
    depth: np.ndarray | None
    depth_scale: float
    exposure_ms: float
    domain: rs.timestamp_domain
    frame_number: int
    intrinsics: Intrinsics


def _serials(devices) -> list[str]:
    return [f"{d.get_info(rs.camera_info.serial_number)} ({d.get_info(rs.camera_info.name)})"
            for d in devices]


def _connected() -> list[rs.device]:
    return list(rs.context().query_devices())


class RealSenseDevice:
    """A physical RealSense; `serial` empty means "the only one connected".

    `devices` lists the candidates (default: every RealSense librealsense sees on USB)."""

    def __init__(self, serial: str = "", devices: Callable[[], Iterable[rs.device]] = _connected):
        self.serial = serial
        self.devices = devices
        self.description = f"RealSense {serial or '(any)'}"

    def open(self) -> rs.device:
        devices = list(self.devices())
        for dev in devices:
            if not self.serial or dev.get_info(rs.camera_info.serial_number) == self.serial:
                if not self.serial and len(devices) > 1:
                    raise DeviceNotFound(f"{len(devices)} RealSense cameras connected, set `serial` "
                                         f"to one of: {', '.join(_serials(devices))}")
                return dev
        present = ", ".join(_serials(devices)) or "none"
        want = f"serial {self.serial!r}" if self.serial else "any serial"
        raise DeviceNotFound(f"no RealSense camera with {want}; connected: {present}")


class PlaybackFile:
    """A `.db3` recording, played as fast as it is read (`real_time=False`) or at its pace."""

    def __init__(self, path: str | Path, real_time: bool = True):
        self.path = Path(path)
        self.real_time = real_time
        self.description = f"playback {self.path}"

    def open(self) -> rs.device:
        if not self.path.is_file():
            raise DeviceNotFound(f"recording {self.path} does not exist")
        playback = rs.context().load_device(str(self.path))
        playback.set_real_time(self.real_time)
        return playback


class SoftwareCamera:
    """An `rs.software_device` with an rgb8 colour sensor (and a z16 depth sensor when asked);
    `inject` pushes frames through librealsense exactly as a USB camera's would arrive. `info`:
    more device information, as a USB camera reports it (e.g. `rs.camera_info.usb_type_descriptor`)."""

    def __init__(self, serial: str = "SW0001", settings: StreamSettings = StreamSettings(),
                 fx: float = 615.0, fy: float = 615.0, depth_scale: float = 0.001,
                 info: dict[rs.camera_info, str] | None = None):
        self.serial = serial
        self.settings = settings
        self.description = f"software camera {serial}"
        self.depth_scale = depth_scale
        self._plugged = threading.Event()
        self._plugged.set()
        self._lock = threading.Lock()
        self.device = rs.software_device()
        if settings.enable_depth:
            self.device.create_matcher(rs.matchers.default)  # pair by timestamp; before add_sensor
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        for key, value in (info or {}).items():
            self.device.register_info(key, value)
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy = settings.width, settings.height, fx, fy
        intr.ppx, intr.ppy = (settings.width - 1) / 2, (settings.height - 1) / 2
        intr.model, intr.coeffs = rs.distortion.brown_conrady, [0.0] * 5
        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._color_sensor.add_option(rs.option.enable_auto_exposure, rs.option_range(0, 1, 1, 1), True)
        self._color_profile = self._video_stream(self._color_sensor, rs.stream.color, rs.format.rgb8, 3, 1, intr)
        self._depth_sensor = self._depth_profile = None
        if settings.enable_depth:
            self._depth_sensor = self.device.add_sensor("Stereo Module")
            self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
            self._depth_profile = self._video_stream(self._depth_sensor, rs.stream.depth, rs.format.z16, 2, 2, intr)
            identity = rs.extrinsics()
            identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
            self._depth_profile.register_extrinsics_to(self._color_profile, identity)
        self._frame_number = 0

    def _video_stream(self, sensor, kind, fmt, bpp: int, uid: int, intr) -> rs.video_stream_profile:
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.fmt, vs.bpp = kind, 0, uid, fmt, bpp
        vs.width, vs.height, vs.fps, vs.intrinsics = intr.width, intr.height, self.settings.fps, intr
        return sensor.add_video_stream(vs).as_video_stream_profile()

    def open(self) -> rs.device:
        if not self._plugged.is_set():
            raise DeviceNotFound(f"no RealSense camera with serial {self.serial!r}; connected: none")
        return self.device

    def unplug(self) -> None:
        """Stop accepting frames and refuse to open, like a camera pulled from USB."""
        self._plugged.clear()

    def replug(self) -> None:
        self._plugged.set()

    @property
    def streaming(self) -> bool:
        """A reader has opened the colour stream (frames injected reach it once it also started
        it: CameraDriver.reading says when)."""
        return bool(self._color_sensor.get_active_streams())

    def inject(self, color: np.ndarray, timestamp_ms: float, depth: np.ndarray | None = None,
               domain: rs.timestamp_domain = rs.timestamp_domain.hardware_clock,
               exposure_ms: float = 0.0) -> bool:
        """Push one capture. `timestamp_ms` is when readout starts; the middle of exposure is
        `exposure_ms` earlier (sent as frame/sensor timestamp metadata, as a D4xx does).
        Returns False (frame lost) while unplugged or before a reader opened the stream;
        librealsense also drops, silently, a frame sent before the reader started the stream, as
        a camera that is not streaming sends none."""
        if not self._plugged.is_set() or not self.streaming:
            return False
        with self._lock:
            self._frame_number += 1
            frames = [(self._color_sensor, self._color_profile, np.ascontiguousarray(color, np.uint8), 3)]
            if self._depth_sensor is not None:
                if depth is None:
                    raise ValueError("this software camera has depth enabled: pass a depth image")
                frames.append((self._depth_sensor, self._depth_profile, np.ascontiguousarray(depth, np.uint16), 2))
            for sensor, profile, pixels, bpp in frames:
                sensor.set_metadata(rs.frame_metadata_value.frame_timestamp, round(timestamp_ms * 1000))
                sensor.set_metadata(rs.frame_metadata_value.sensor_timestamp,
                                    round((timestamp_ms - exposure_ms) * 1000))
                frame = rs.software_video_frame()
                frame.pixels, frame.bpp, frame.stride = pixels, bpp, pixels.shape[1] * bpp
                frame.timestamp, frame.domain, frame.frame_number = timestamp_ms, domain, self._frame_number
                frame.profile = profile
                if bpp == 2:
                    frame.depth_units = self.depth_scale
                sensor.on_video_frame(frame)
        return True


    def play_pattern(self, stop: threading.Event,
                     domain: rs.timestamp_domain = rs.timestamp_domain.global_time) -> None:
        """Inject a moving test pattern at the stream's fps until `stop` is set (a stand-in
        camera for running the node without hardware). Stamps are host ms, labelled `domain`
        (a camera without metadata stamps `system_time`)."""
        w, h = self.settings.width, self.settings.height
        ramp = np.linspace(0, 255, w, dtype=np.float32)
        base = np.stack([np.broadcast_to(ramp, (h, w)), np.broadcast_to(ramp[::-1], (h, w)),
                         np.full((h, w), 128, np.float32)], -1).astype(np.uint8)
        depth = np.full((h, w), 1000, np.uint16) if self.settings.enable_depth else None
        period = 1.0 / self.settings.fps
        next_t = time.monotonic()
        n = 0
        while not stop.is_set():
            self.inject(np.roll(base, 8 * n, axis=1), time.time() * 1000.0, depth, domain=domain)
            n += 1
            next_t += period
            stop.wait(max(0.0, next_t - time.monotonic()))


def _find_profile(sensors, stream, fmt, settings: StreamSettings, description: str):
    available = []
    for sensor in sensors:
        for p in sensor.get_stream_profiles():
            if p.stream_type() != stream:
                continue
            v = p.as_video_stream_profile()
            available.append(f"{v.width()}x{v.height()}@{p.fps()} {p.format()}")
            if p.format() == fmt and (v.width(), v.height(), p.fps()) == (settings.width, settings.height, settings.fps):
                return sensor, p
    raise DeviceNotFound(f"{description} has no {stream} {fmt} {settings.width}x{settings.height}@"
                         f"{settings.fps} stream; available: {', '.join(available) or 'none'}")


class RealSenseStream:
    """The colour (+ aligned depth) streams of one opened device, read through an rs.syncer."""

    def __init__(self, device: rs.device, settings: StreamSettings, description: str):
        self.settings = settings
        sensors = list(device.query_sensors())
        color_sensor, color_profile = _find_profile(sensors, rs.stream.color, rs.format.rgb8, settings, description)
        self._started = []
        # Half a second of frames: a reader held up by the GIL or a slow subscriber in its
        # callback catches up instead of losing frames at librealsense's queue.
        self._syncer = rs.syncer(max(2, settings.fps // 2))
        self._align = None
        self.depth_scale = 0.0
        opened = [(color_sensor, color_profile)]
        if settings.enable_depth:
            depth_sensor, depth_profile = _find_profile(sensors, rs.stream.depth, rs.format.z16, settings, description)
            opened.append((depth_sensor, depth_profile))
            self.depth_scale = depth_sensor.as_depth_sensor().get_depth_scale()
            self._align = rs.align(rs.stream.color)
        if color_sensor.supports(rs.option.enable_auto_exposure) and \
                not color_sensor.is_option_read_only(rs.option.enable_auto_exposure):
            color_sensor.set_option(rs.option.enable_auto_exposure, float(settings.auto_exposure))
        self.intrinsics = _intrinsics(color_profile.as_video_stream_profile().get_intrinsics())
        try:
            for sensor, profile in opened:
                sensor.open(profile)
                sensor.start(self._syncer)
                self._started.append(sensor)
        except RuntimeError:
            self.close()
            raise

    def read(self, timeout_s: float) -> CameraFrames | None:
        """The next capture, or None when none arrived within `timeout_s`."""
        ok, frames = self._syncer.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        if not ok:
            return None
        if self._align is not None:
            if not frames.get_depth_frame():
                return None  # colour without its depth partner: wait for a complete pair
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        depth = None
        if self._align is not None:
            depth = np.asanyarray(frames.get_depth_frame().get_data()).copy()
        return CameraFrames(
            color=np.asanyarray(color.get_data()).copy(), depth=depth, depth_scale=self.depth_scale,
            exposure_ms=_exposure_ms(color), domain=color.get_frame_timestamp_domain(),
            frame_number=color.get_frame_number(), intrinsics=self.intrinsics)

    def close(self) -> None:
        """Stop and close the sensors; errors from a device that is already gone are ignored."""
        for sensor in self._started:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass
        self._started.clear()


def _intrinsics(intr: rs.intrinsics) -> Intrinsics:
    """A stream's intrinsics as librealsense reports them."""
    model = "equidistant" if intr.model == rs.distortion.kannala_brandt4 else PLUMB_BOB
    return Intrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy, model,
                      tuple(float(c) for c in intr.coeffs))


def _exposure_ms(frame: rs.frame) -> float:
    """The frame's timestamp moved from readout start to the middle of exposure, when the
    device reports both times (D4xx metadata); otherwise the timestamp as is."""
    md = rs.frame_metadata_value
    ts = frame.get_timestamp()
    if frame.supports_frame_metadata(md.frame_timestamp) and frame.supports_frame_metadata(md.sensor_timestamp):
        ts -= (frame.get_frame_metadata(md.frame_timestamp) - frame.get_frame_metadata(md.sensor_timestamp)) / 1000.0
    return ts

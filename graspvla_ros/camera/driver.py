"""A camera driver thread: open the source, read captures, stamp them, survive device loss.

No frame for `stall_timeout` (a USB unplug, a firmware hang, the end of a recording) closes
the device and reopens it with exponential backoff, inside the same process. The state and
counters are exposed for diagnostics. A camera that is not streaming yet (not plugged in, still
starting) is said once, again every `report_period` s with the time waited and the last
error, and "streaming" once its first frame arrives: a log that neither claims frames that
never came nor repeats every retry.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyrealsense2 as rs

from graspvla_ros.camera.clock import ClockMapper
from graspvla_ros.camera.settings import StreamSettings
from graspvla_ros.camera.source import CameraFrames, RealSenseStream

log = logging.getLogger(__name__)
REPORT_PERIOD_S = 30.0  # while a camera does not stream, say so again this often


class Source(Protocol):
    description: str

    def open(self) -> rs.device: ...


@dataclass
class StampedFrames:
    frames: CameraFrames
    stamp_ns: int  # ROS time of the middle of exposure


@dataclass
class DriverStatus:
    state: str  # "connecting", "streaming", "stalled", "stopped"
    message: str
    frames: int
    dropped: int  # gaps in the camera's frame counter
    reconnects: int
    fps: float
    last_frame_age_s: float | None
    last_error: str  # the latest stall/open failure, kept after recovery ("" if none)

    @property
    def level(self) -> str:
        """OK while streaming; WARN while first connecting; ERROR once something went wrong."""
        if self.state == "streaming":
            return "OK"
        return "ERROR" if self.last_error or self.state == "stalled" else "WARN"


class CameraDriver:
    """Runs `source` on a thread and calls `on_frames(StampedFrames)` for each capture.

    `ros_now_ns` is the ROS clock (the node's); stamps are mapped onto it by `ClockMapper`.
    `report(line)` gets the waiting/streaming lines (default: this module's logger).
    """

    def __init__(self, source: Source, settings: StreamSettings,
                 on_frames: Callable[[StampedFrames], None],
                 ros_now_ns: Callable[[], int] = time.time_ns,
                 stall_timeout: float = 1.0, first_frame_timeout: float = 5.0,
                 backoff_initial: float = 0.25, backoff_max: float = 5.0,
                 report: Callable[[str], None] = log.info, report_period: float = REPORT_PERIOD_S):
        self.source = source
        self.settings = settings
        self.on_frames = on_frames
        self.ros_now_ns = ros_now_ns
        self.stall_timeout = stall_timeout
        self.first_frame_timeout = max(first_frame_timeout, stall_timeout)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = ClockMapper()
        self._stop = threading.Event()
        # set while the device's streams are started: a frame the camera sends now is read (a
        # software camera's frames injected before are lost, as a real one sends none)
        self.reading = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state, self._message = "connecting", f"opening {source.description}"
        self._frames = self._dropped = self._reconnects = 0
        self._last_frame: float | None = None
        self._last_number: int | None = None
        self._last_error = ""
        self._rate_window: list[float] = []
        self.report, self.report_period = report, report_period
        self._waiting_since: float | None = None  # not streaming since (monotonic); None while streaming
        self._reported = 0.0                      # when the last "waiting" line went out

    def start(self) -> CameraDriver:
        self._thread = threading.Thread(target=self._run, name=f"camera:{self.source.description}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._set_state("stopped", "stopped")

    def status(self) -> DriverStatus:
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._rate_window if t > now - 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            return DriverStatus(self._state, self._message, self._frames, self._dropped, self._reconnects,
                                fps, None if self._last_frame is None else now - self._last_frame,
                                self._last_error)

    def _set_state(self, state: str, message: str, error: bool = False) -> None:
        with self._lock:
            self._state, self._message = state, message
            if error:
                self._last_error = message

    def _waiting(self) -> None:
        """Not streaming: say so the first time, then every `report_period` s with the time
        waited and why."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = self._reported = now
            if self.status().frames:
                self.report(f"{self.source.description} stopped streaming ({self.status().message}); waiting for it")
            else:
                self.report(f"waiting for {self.source.description} "
                            f"({self.settings.width}x{self.settings.height}@{self.settings.fps})")
        elif now - self._reported >= self.report_period:
            self._reported = now
            self.report(f"still waiting for {self.source.description} after {now - self._waiting_since:.0f} s: "
                        f"{self.status().message}")

    def _streaming(self) -> None:
        if self._waiting_since is not None:
            self._waiting_since = None
            self.report(f"streaming from {self.source.description}, "
                        f"{self.settings.width}x{self.settings.height}@{self.settings.fps}")

    def _run(self) -> None:
        backoff = self.backoff_initial
        first = True
        self._waiting()
        while not self._stop.is_set():
            if not first:
                with self._lock:
                    self._reconnects += 1
            first = False
            try:
                stream = RealSenseStream(self.source.open(), self.settings, self.source.description)
            except RuntimeError as e:  # DeviceNotFound, or librealsense refusing to open
                self._set_state("connecting", f"{e}; retrying in {backoff:.2f} s", error=True)
                self._waiting()
                self._stop.wait(backoff)
                backoff = min(2 * backoff, self.backoff_max)
                continue
            try:
                self.reading.set()
                if self._stream(stream):
                    backoff = self.backoff_initial
            finally:
                self.reading.clear()
                stream.close()
            if not self._stop.is_set():
                self._waiting()
                self._stop.wait(backoff)
                backoff = min(2 * backoff, self.backoff_max)

    def _stream(self, stream: RealSenseStream) -> bool:
        """Read until stalled or stopped; True when at least one frame came through."""
        self.clock.reset()
        self._last_number = None
        self._set_state("connecting", f"waiting for the first frame from {self.source.description}")
        got_any = False
        last = time.monotonic()
        while not self._stop.is_set():
            limit = self.stall_timeout if got_any else self.first_frame_timeout
            try:
                frames = stream.read(min(0.1, limit))
            except RuntimeError as e:
                self._set_state("stalled", f"{self.source.description}: {e}; reconnecting", error=True)
                return got_any
            now = time.monotonic()
            if frames is None:
                if not got_any:
                    self._waiting()
                if now - last > limit:
                    what = "no frames" if got_any else "no first frame"
                    self._set_state("stalled", f"{what} from {self.source.description} for "
                                               f"{now - last:.1f} s; reconnecting", error=True)
                    return got_any
                continue
            stamp = self.clock.to_ros_ns(frames.exposure_ms, frames.domain, self.ros_now_ns(), time.time_ns())
            with self._lock:
                if self._last_number is not None and frames.frame_number > self._last_number + 1:
                    self._dropped += frames.frame_number - self._last_number - 1
                self._last_number = frames.frame_number
                self._frames += 1
                self._last_frame = now
                self._rate_window = [t for t in self._rate_window if t > now - 2.0] + [now]
                self._state, self._message = "streaming", f"streaming from {self.source.description}"
            if not got_any:
                self._streaming()
            got_any = True
            last = now
            self.on_frames(StampedFrames(frames, stamp))
        return got_any

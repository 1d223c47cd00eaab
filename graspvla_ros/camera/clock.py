"""Camera time → ROS time.

A RealSense stamps frames in one of three domains: `hardware_clock` (the camera's own
crystal, ms since power-up), `global_time` (librealsense's drift-tracked mapping of it to the
host's system clock) or `system_time` (host arrival time). realsense-ros once froze the
hardware→ROS offset at the first frame (realsense-ros #419), so stamps drifted away from
ROS time by the crystals' ppm difference. Here the offset is re-estimated on every frame.
"""
from __future__ import annotations

from collections import deque

from pyrealsense2 import timestamp_domain

NS_PER_MS = 1_000_000


class ClockMapper:
    """Maps one stream's camera timestamps to ROS time, following drift.

    hardware_clock: the offset is the minimum of (arrival ROS time − camera time) over the
    last `window_s` seconds. Transport latency only ever adds to that difference, so the
    minimum is the least-delayed recent frame; the window lets it follow the crystal's drift.
    Camera time running backwards (clock wrap, device reset, playback loop) restarts it.
    global_time/system_time: the camera time already is host system time; only the offset
    between the ROS clock and the system clock is added (zero unless ROS uses sim time).
    """

    def __init__(self, window_s: float = 2.0):
        self.window_ns = int(window_s * 1e9)
        self._samples: deque[tuple[int, int]] = deque()  # (arrival ROS ns, offset ns)
        self._last_camera_ns: int | None = None
        self.resets = 0

    def reset(self) -> None:
        self._samples.clear()
        self._last_camera_ns = None

    def to_ros_ns(self, camera_ms: float, domain, arrival_ros_ns: int, arrival_system_ns: int) -> int:
        camera_ns = round(camera_ms * NS_PER_MS)
        if domain != timestamp_domain.hardware_clock:
            return camera_ns + (arrival_ros_ns - arrival_system_ns)
        if self._last_camera_ns is not None and camera_ns <= self._last_camera_ns:
            self._samples.clear()
            self.resets += 1
        self._last_camera_ns = camera_ns
        offset = arrival_ros_ns - camera_ns
        while self._samples and self._samples[-1][1] >= offset:
            self._samples.pop()  # monotonic deque: keeps the window minimum at the front
        self._samples.append((arrival_ros_ns, offset))
        while self._samples[0][0] < arrival_ros_ns - self.window_ns:
            self._samples.popleft()
        return camera_ns + self.offset_ns

    @property
    def offset_ns(self) -> int:
        """The current hardware→ROS offset estimate (valid once a frame was mapped)."""
        return self._samples[0][1]

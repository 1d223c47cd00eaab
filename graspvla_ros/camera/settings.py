"""Which RealSense a camera driver opens and how it streams: the camera node's parameters that
belong to the camera itself (graspvla_ros.settings builds the node's table from these fields).

No librealsense here: the launch file imports this module on the system Python.
"""
from __future__ import annotations

from dataclasses import dataclass

from graspvla_ros.settings import inline, setting

SOURCES = ("device", "software", "playback")
PROFILE = "colour stream profile (rgb8); GraspVLA expects 640×480 from a D435/D415"


@dataclass(frozen=True)
class StreamSettings:
    width: int = setting(640, PROFILE)
    height: int = setting(480, PROFILE)
    fps: int = setting(30, PROFILE)
    enable_depth: bool = setting(False, "also stream z16 depth, aligned to colour")
    auto_exposure: bool = setting(True, "colour sensor auto exposure (when the device has the option)")

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.fps) <= 0:
            raise ValueError(f"width, height and fps must be > 0, got {self.width}x{self.height}@{self.fps}")


@dataclass(frozen=True)
class CameraSettings:
    serial: str = setting("", "serial number to open; empty = the only RealSense connected. A wrong serial fails "
                              "with the list of serials present (and keeps retrying)")
    source: str = setting("device", "`device` (USB RealSense), `software` (an `rs.software_device` playing a "
                                    "moving test pattern: no hardware needed), `playback` (a `.db3` recording)")
    playback_path: str = setting("", "the `.db3` file for `source: playback` (recorded with `rs.recorder`)")
    playback_real_time: bool = setting(True, "play the recording at its own pace (`false`: as fast as it is read)")
    stream: StreamSettings = inline(StreamSettings)
    stall_timeout: float = setting(1.0, "seconds without a frame before the device is closed and reopened (backoff "
                                        "0.25 s doubling to 5 s; the first frame may take 5 s)")

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "playback" and not self.playback_path:
            raise ValueError("source 'playback' needs playback_path (a .db3 recorded with rs.recorder)")
        if not self.stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 s, got {self.stall_timeout}")


@dataclass(frozen=True)
class ModelViewSettings:
    """What model_view_node sends the policy on the other host (`transport: model_view`)."""

    jpeg_quality: int = setting(75, "JPEG quality of the views (1–100); the graphs set the policy's `jpeg_quality`, "
                                    "so the model sees what it would on one host")
    diagnostics_period: float = setting(1.0, "seconds between /diagnostics messages")

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1 … 100, got {self.jpeg_quality}")
        if not self.diagnostics_period > 0:
            raise ValueError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")

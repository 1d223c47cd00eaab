"""The simulated world's settings: franky-sim's address, the object layout, the physics' pace and
the simulated cameras (the sim_world node's table is built from these fields).

No MuJoCo here: the launch file imports this module on the system Python.
"""
from __future__ import annotations

from dataclasses import dataclass

from graspvla_ros.camera.settings import PROFILE
from graspvla_ros.settings import setting


@dataclass(frozen=True)
class SimWorldSettings:
    host: str = setting("127.0.0.1", "loopback address franky-sim binds (the controller's `robot_ip`)")
    seed: int = setting(0, "object layout seed")
    realtime: float = setting(1.0, "pace of the physics: each simulated second takes at least this many wall seconds "
                                   "(1.0 = real time; a starved CPU makes it slower, never faster)")
    camera_rate_hz: float = setting(
        10.0, "frames per second of SIM time of each camera, rendered in a process of its own (a 640×480 frame "
              "costs 30–90 ms of CPU with llvmpipe on the 2-core test machine, BENCHMARKS.md)")
    width: int = setting(640, PROFILE)
    height: int = setting(480, PROFILE)

    def __post_init__(self) -> None:
        if self.realtime < 0:
            raise ValueError(f"realtime must be ≥ 0 (0: as fast as the CPU goes), got {self.realtime}")
        if not self.camera_rate_hz > 0:
            raise ValueError(f"camera_rate_hz must be > 0, got {self.camera_rate_hz}")
        if min(self.width, self.height) <= 0:
            raise ValueError(f"width and height must be > 0, got {self.width}x{self.height}")

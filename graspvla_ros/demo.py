"""`make demo`: the stack in simulation, no hardware.

Brings up the simulated robot (franky-sim, MuJoCo), the controller node and a scripted
stand-in policy that streams chunks at 5 Hz (a square in the air, then gripper close/open),
and prints how well the arm tracked them. Runs inside the loopback-only network namespace
(`scripts/isolated`), like every ROS process of the project.
"""
from __future__ import annotations

import sys

from graspvla_ros.bringup import Bringup
from graspvla_ros.graph import controller, scripted_chunks
from graspvla_ros.sim.server import SimServer

SIM_HOST = "127.0.0.1"


def main() -> int:
    print("graspvla_ros demo: franky-sim + controller_node + scripted chunks (5 Hz)", flush=True)
    with SimServer(SIM_HOST):
        with Bringup([controller(robot_ip=SIM_HOST), scripted_chunks()]) as graph:
            code = graph.wait("scripted_chunks", timeout=180)
            dead = [name for name, rc in graph.failed() if name != "scripted_chunks"]
    if code != 0 or dead:
        print(f"demo FAILED: scripted_chunks exit code {code}, nodes that died early: {dead}", file=sys.stderr)
        return 1
    print("demo finished: the arm followed the streamed chunks (metrics above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

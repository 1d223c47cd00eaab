"""`make demo`: the stack in simulation, no hardware.

Brings up the simulated world (franky-sim in MuJoCo with a table of objects and the two
cameras), the controller node and a scripted
stand-in policy that streams chunks at 5 Hz (a square in the air, then gripper close/open),
and prints how well the arm tracked them. Runs inside the loopback-only network namespace
(`scripts/isolated`), like every ROS process of the project.
"""
from __future__ import annotations

import sys

from graspvla_ros.bringup import Bringup
from graspvla_ros.graph import scripted_chunks, sim_graph

DEMO_CAMERA_RATE_HZ = 2.0


def main() -> int:
    print("graspvla_ros demo: sim_world (franky-sim + cameras) + controller_node + scripted chunks (5 Hz)",
          flush=True)
    # Cameras at 2 Hz: the scripted chunks do not look at them, and without a GPU every frame
    # costs CPU on the cores the physics needs (rendering yields to it, BENCHMARKS.md).
    # The scripted chunks stand in for the policy node of the sim graph.
    specs = [s for s in sim_graph(sim_camera_rate_hz=str(DEMO_CAMERA_RATE_HZ)) if s.name != "policy"]
    with Bringup(specs + [scripted_chunks(use_sim_time=True)]) as graph:
        code = graph.wait("scripted_chunks", timeout=180)
        dead = [name for name, rc in graph.failed() if name != "scripted_chunks"]
    if code != 0 or dead:
        print(f"demo FAILED: scripted_chunks exit code {code}, nodes that died early: {dead}", file=sys.stderr)
        return 1
    print("demo finished: the arm followed the streamed chunks (metrics above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

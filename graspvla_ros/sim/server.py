"""franky-sim embedded in-process: an FR3 in MuJoCo that speaks the libfranka protocol.

A `SimServer` binds the robot (port 1337) and gripper (port 1338) servers to one loopback
address, so several simulated robots (one per test worker) can run side by side. Bodies can
be added to the MJCF scene before start; afterwards `model`/`data` are the live MuJoCo
objects, and readers that need a consistent snapshot (cameras, ground truth) hold `lock`,
which the physics loop holds while it steps.

    python -m graspvla_ros.sim.server --host 127.0.0.2 --cube   # as a separate process
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import mujoco
import numpy as np
from franky_sim import SimulationServer
from franky_sim.base_simulator import RobotParameters
from franky_sim.mujoco_simulator import MujocoSimulator

from graspvla_ros.process import die_with_parent
from graspvla_ros.sim.faults import FaultyRobotServer

ROBOT_PORT = 1337
GRIPPER_PORT = 1338
CUBE_SIZE = 0.04
FRANKA_HAND_EE = 0.1034  # m, flange → EE of Desk's Franka Hand setting


def add_cube(worldbody: ET.Element, name: str = "cube", pos=(0.5, 0.0, CUBE_SIZE / 2),
             size: float = CUBE_SIZE, rgba: str = "0.85 0.15 0.15 1") -> ET.Element:
    """A free, graspable cube (default 4 cm, 50 g) resting on the ground."""
    body = ET.SubElement(worldbody, "body", name=name, pos=" ".join(f"{v:g}" for v in pos))
    ET.SubElement(body, "freejoint", name=f"{name}_joint")
    ET.SubElement(body, "geom", name=f"{name}_geom", type="box", size=f"{size / 2:g} {size / 2:g} {size / 2:g}",
                  rgba=rgba, mass="0.05", friction="1.5 0.01 0.001", condim="4")
    return body


ROBOT_PREFIX = "robot0_"  # franky-sim names the first robot's bodies robot0_*


_ROBOT_GEOMS: dict[tuple[int, str], tuple[np.ndarray, set[int]]] = {}


def _robot_geoms(model: mujoco.MjModel, prefix: str) -> tuple[np.ndarray, set[int]]:
    """(per geom: does it belong to the robot, the finger bodies' ids), worked out once per model:
    the force is computed every physics step, where name look-ups would slow the simulation."""
    key = (id(model), prefix)
    if key not in _ROBOT_GEOMS:
        names = [model.body(int(model.geom_bodyid[g])).name for g in range(model.ngeom)]
        _ROBOT_GEOMS[key] = (np.array([n.startswith(prefix) for n in names]),
                             {model.body(prefix + "left_finger").id, model.body(prefix + "right_finger").id})
    return _ROBOT_GEOMS[key]


def external_force(model: mujoco.MjModel, data: mujoco.MjData, prefix: str = ROBOT_PREFIX) -> tuple[float, ...]:
    """The force (x, y, z, N, world frame; torques 0) that everything else exerts on the robot
    through contacts, as the real estimate (O_F_ext_hat_K) sees it: franky-sim reports none, and
    the controller's contact reaction needs one. An object held between both fingers counts as
    the load it is (its weight and what the world pushes on it), not with the fingers' squeeze,
    which is internal to the hand."""
    robot, fingers = _robot_geoms(model, prefix)
    pairs = []
    touching: dict[int, set[int]] = {}
    for i in range(data.ncon):
        contact = data.contact[i]
        g1, g2 = contact.geom1, contact.geom2
        b1, b2 = int(model.geom_bodyid[g1]), int(model.geom_bodyid[g2])
        pairs.append((i, robot[g1], robot[g2], b1, b2))
        if robot[g1] != robot[g2]:
            hand, other = (b1, b2) if robot[g1] else (b2, b1)
            if hand in fingers:
                touching.setdefault(other, set()).add(hand)
    held = {body for body, touched in touching.items() if touched == fingers}
    total = np.zeros(3)
    wrench = np.zeros(6)
    for i, robot1, robot2, b1, b2 in pairs:
        if robot1 == robot2 and not ({b1, b2} & held):
            continue
        if robot1 != robot2 and ({b1, b2} & held):
            continue  # the grip itself
        if robot1 == robot2:  # a held object and the world: passed on to the hand
            if b1 in held and b2 in held:
                continue
            mujoco.mj_contactForce(model, data, i, wrench)
            on_geom2 = data.contact[i].frame.reshape(3, 3).T @ wrench[:3]
            total += on_geom2 if b2 in held else -on_geom2
            continue
        mujoco.mj_contactForce(model, data, i, wrench)
        on_geom2 = data.contact[i].frame.reshape(3, 3).T @ wrench[:3]  # what geom1 exerts on geom2, world frame
        total += on_geom2 if robot2 else -on_geom2
    for body in held:
        total[2] -= model.body_subtreemass[body] * 9.81
    return (*total.tolist(), 0.0, 0.0, 0.0)


class _LockedSimulationServer(SimulationServer):
    """The franky-sim control loop, stepping under a lock that readers can take, with robot
    servers that answer as a real robot does (sim.faults) and report the contact force."""

    def __init__(self, sim: MujocoSimulator, host: str, lock: threading.Lock):
        super().__init__(sim, hostname_candidates=[host])
        self._lock = lock

    def init(self) -> None:
        for robot in self.sim.robots:
            rs = FaultyRobotServer(robot, self._remaining_hostname_candidates,
                                   external_force=lambda: external_force(self.sim.model, self.sim.data),
                                   sim_time=lambda: self.sim.data.time)
            rs.init()
            rs.fail_next_gripper_command()
            self.robot_servers.append(rs)
        self.sim.start()

    def _run_loop(self, realtime: bool | float) -> None:
        period = 0.001 * float(realtime)
        while self.running:
            start = time.perf_counter()
            with self._lock:
                for rs in self.robot_servers:
                    rs.process_commands()
                self.sim.step()
                for rs in self.robot_servers:
                    rs.send_state()
            time.sleep(max(0.0, period - (time.perf_counter() - start)))


class SimServer:
    """One simulated FR3 + gripper served on `host` (a 127.x.y.z address)."""

    def __init__(self, host: str = "127.0.0.1",
                 scene: Callable[[ET.Element], None] | None = None, realtime: float = 1.0,
                 ee_offset: float = FRANKA_HAND_EE):
        if not host.startswith("127."):
            raise ValueError(f"franky-sim must bind a loopback address (127.x.y.z), got {host!r}")
        self.host = host
        self.realtime = realtime
        self.lock = threading.Lock()
        self.sim = MujocoSimulator()
        self.sim.init()
        # Desk's end effector: the Franka Hand unless a test configures another one
        self.sim.add_robot(robot_parameters=RobotParameters(ee_tcp_xyz=(0.0, 0.0, ee_offset)))
        if scene is not None:
            scene(self.sim.worldbody)
        self._server = _LockedSimulationServer(self.sim, host, self.lock)
        self._started = False

    @property
    def model(self) -> mujoco.MjModel:
        return self.sim.model

    @property
    def data(self) -> mujoco.MjData:
        return self.sim.data

    def start(self, timeout: float = 10.0) -> SimServer:
        self._server.init()
        self._server.run_async(self.realtime)
        self._started = True
        deadline = time.monotonic() + timeout
        for port in (ROBOT_PORT, GRIPPER_PORT):
            while not port_open(self.host, port):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"franky-sim did not open {self.host}:{port} in {timeout} s")
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._server.cleanup()
        if not self.sim.is_cleaned_up:
            self.sim.cleanup()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: str) -> dict:
        """Make the robot fail as a real one does (sim.faults.FAULTS); returns the faults in
        force. Raises ValueError for an unknown fault."""
        with self.lock:
            robot = self._server.robot_servers[0]
            robot.inject(fault)
            return robot.active()

    def faults(self) -> dict:
        with self.lock:
            return self._server.robot_servers[0].active()

    def body_position(self, name: str):
        """World position of a named body (a copy, read under the lock)."""
        with self.lock:
            return self.data.body(name).xpos.copy()


@contextlib.contextmanager
def sim_process(host: str, *flags: str, timeout: float = 30.0):
    """franky-sim in a process of its own (its own GIL and process group) on `host`; stopped by
    PID with SIGTERM, and SIGTERMed by the kernel if the caller dies first."""
    proc = subprocess.Popen([sys.executable, "-m", "graspvla_ros.sim.server", "--host", host, *flags],
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + timeout
        while not port_open(host, GRIPPER_PORT):
            if proc.poll() is not None:
                raise RuntimeError(f"franky-sim on {host} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"franky-sim did not open {host}:{GRIPPER_PORT} in {timeout} s")
            time.sleep(0.05)
        yield host
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run franky-sim (FR3 in MuJoCo) on a loopback address.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.x.y.z)")
    parser.add_argument("--cube", action="store_true", help="add a 4 cm cube at (0.5, 0, 0.02) m")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with SimServer(args.host, scene=add_cube if args.cube else None):
        print(f"franky-sim ready on {args.host}:{ROBOT_PORT}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Controller grasp semantics and e-stop on franky-sim: arm speed while the fingers close (per
strategy), and e-stop service call → arm at rest while streaming at 8 cm/s.

    scripts/isolated .venv/bin/python -m benchmarks.bench_controller_grasp
"""
from __future__ import annotations

import threading
import time

import numpy as np

from benchmarks.report import write_section
from graspvla_ros.chunk import ActionChunk
from graspvla_ros.control import ArmController, ControllerState, Strategy
from graspvla_ros.sim_settings import sim_controller_settings
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.sim.server import sim_process

HOST = "127.0.251.2"
COMMAND = "scripts/isolated .venv/bin/python -m benchmarks.bench_controller_grasp"
GRASP_TRIALS = 3
ESTOP_TRIALS = 20
ESTOP_SPEED = 0.08  # m/s
AT_REST = 1e-3      # m/s, commanded TCP speed


def window_speed(t: np.ndarray, x: np.ndarray, window: float = 0.02) -> float:
    """Max TCP speed over `window`-long stretches (robot clock)."""
    speeds = [np.linalg.norm(x[j] - x[i]) / (t[j] - t[i])
              for i in range(len(t)) for j in [np.searchsorted(t, t[i] + window)] if j < len(t)]
    return max(speeds, default=0.0)


def speed_while_closing(ex: ArmController) -> float:
    """A chunk down at 5 cm/s with the close on step 4 of 8; max TCP speed (m/s) from the
    fingers' first 2 mm to within 2 mm of their final width."""
    ex.home()
    here = ex.read_state().ee
    rows = [[0, 0, -0.005, 0, 0, 0, 0]] * 3 + [[0, 0, -0.005, 0, 0, 0, -1.0]] + [[0, 0, -0.005, 0, 0, 0, 0]] * 4
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            s = ex.read_state()
            samples.append((s.robot_time, s.ee.position.copy(), s.gripper_width))
            time.sleep(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    ex.submit(ActionChunk(ex.clock(), 0.1, "base", np.array(rows, float), here))
    deadline = time.monotonic() + 15
    while not (ex.gripper_command == -1.0 and ex.state != ControllerState.GRIPPER) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    stop.set()
    sampler.join()
    t, x, w = (np.array([s[i] for s in samples]) for i in range(3))
    closing = np.flatnonzero((w < w[0] - 0.002) & (w > w[-1] + 0.002))
    return window_speed(t[closing], x[closing])


def estop_to_rest(ex: ArmController) -> list[tuple[float, float]]:
    """(wall s, robot s) from `estop()` called to the first state with commanded TCP speed under
    AT_REST, streaming along ±y at ESTOP_SPEED."""
    out = []
    step = ESTOP_SPEED * 0.1
    for i in range(ESTOP_TRIALS):
        ex.home()
        direction = (-1) ** i
        stop = threading.Event()

        def send():
            while not stop.is_set():
                try:
                    ex.submit(ActionChunk(ex.clock(), 0.1, "base", np.array([[0, direction * step, 0, 0, 0, 0, 0]] * 8),
                                          ex.read_state().ee))
                except ChunkRejected:
                    return
                time.sleep(0.2)
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 5
        while ex.read_state().ee_speed < 0.9 * ESTOP_SPEED and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.3)
        robot_t0, t0 = ex.read_state().robot_time, time.perf_counter()
        ex.estop()
        while (s := ex.read_state()).ee_speed > AT_REST:
            time.sleep(0.0005)
        out.append((time.perf_counter() - t0, s.robot_time - robot_t0))
        stop.set()
        sender.join()
        ex.release()
    return out


def main() -> None:
    grasp_rows = []
    with sim_process(HOST), ArmController(sim_controller_settings(HOST)) as ex:
        for strategy in Strategy:
            ex.strategy = strategy
            speeds = [speed_while_closing(ex) for _ in range(GRASP_TRIALS)]
            grasp_rows.append(f"| {strategy.value} | {GRASP_TRIALS} | {np.median(speeds) * 1e3:.2f} mm/s "
                              f"| {max(speeds) * 1e3:.2f} mm/s |")
        ex.strategy = Strategy.STREAMING
        stops = np.array(estop_to_rest(ex)) * 1e3
        errors, contacts = ex.reflex_count, ex.contact_count
    p = lambda a, q: f"{np.percentile(a, q):.0f}"  # noqa: E731
    md = f"""## Controller: grasp gating and e-stop (franky-sim)

Arm speed while the fingers close: one chunk down at 5 cm/s (8 steps × 5 mm, 0.1 s) with the
close on step 4; TCP speed from its measured position over 20 ms windows of the robot's clock,
from the fingers' first 2 mm until they are within 2 mm of their final width (goal < 5 mm/s;
before this change the close fired on a timer and the arm moved at 16 mm/s meanwhile).

| strategy | trials | median of max speed | worst |
|---|---|---|---|
{chr(10).join(grasp_rows)}

E-stop: `ArmController.estop()` (what `/controller/estop` calls) while streaming along y at
{ESTOP_SPEED * 100:.0f} cm/s, to the first robot state whose commanded TCP speed is under
{AT_REST * 1e3:.0f} mm/s (franky's `CartesianStopMotion` decelerates at the arm's limits scaled by
`relative_dynamics_factor` {ex.dynamics_factor}); {ESTOP_TRIALS} trials.

| e-stop → arm at rest | p50 | p99 | max |
|---|---|---|---|
| wall clock | {p(stops[:, 0], 50)} ms | {p(stops[:, 0], 99)} ms | {stops[:, 0].max():.0f} ms |
| robot clock | {p(stops[:, 1], 50)} ms | {p(stops[:, 1], 99)} ms | {stops[:, 1].max():.0f} ms |

Motion errors during the run: {errors}; contact retreats: {contacts}.
"""
    print(md)
    write_section("controller_grasp", md, COMMAND)


if __name__ == "__main__":
    main()

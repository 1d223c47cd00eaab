"""The franky executor against franky-sim (a real libfranka-protocol robot in MuJoCo)."""
import threading
import time

import numpy as np
import pytest

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.franka import HOME_POSITION, FrankaExecutor, Strategy
from graspvla_ros.safety import ChunkRejected, ControllerState, SafetyLimits
from graspvla_ros.sim.server import SimServer, add_cube

pytestmark = pytest.mark.sim
DT = 0.1


@pytest.fixture
def executor(sim_host):
    with FrankaExecutor(sim_host, limits=SafetyLimits(hold_timeout=0.6)) as ex:
        ex.home()
        yield ex


def make_chunk(ex, rows, stamp=None):
    state = ex.read_state()
    return ActionChunk(stamp or ex.clock(), DT, "base", np.asarray(rows, float), state.ee)


def step_rows(n=8, d=(0.0, 0.0, 0.0), grip=0.0):
    return [[*d, 0, 0, 0, grip]] * n


def wait_still(ex, timeout=5.0):
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while ex.read_state().ee_speed > 1e-3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return ex.read_state()


def test_home_reaches_the_graspvla_reset_pose(executor):
    np.testing.assert_allclose(executor.read_state().ee.position, HOME_POSITION, atol=2e-3)
    assert executor.state == ControllerState.IDLE


def test_base_frame_plus_x_delta_moves_plus_x(executor):
    before = executor.read_state().ee.position
    executor.submit(make_chunk(executor, step_rows(8, (0.005, 0, 0))))
    after = wait_still(executor).ee.position
    assert after[0] - before[0] == pytest.approx(0.04, abs=2e-3)
    assert abs(after[1] - before[1]) < 2e-3 and abs(after[2] - before[2]) < 2e-3


@pytest.mark.parametrize("strategy", list(Strategy))
def test_each_strategy_reaches_the_final_target(executor, strategy):
    executor.strategy = strategy
    rows = [[0.004, -0.003, 0.002, 0.0, 0.0, 0.01, 0.0]] * 8
    chunk = make_chunk(executor, rows)
    executor.submit(chunk)
    time.sleep(0.9 if strategy != Strategy.BLOCKING else 3.0)
    final = wait_still(executor).ee
    assert final.translation_to(chunk.targets[-1].pose) < 2e-3
    assert final.rotation_to(chunk.targets[-1].pose) < 0.01
    assert executor.reflex_count == 0


def test_streaming_never_stops_between_chunks(executor):
    """12 chunks at 5 Hz along +y at 5 cm/s: no reflex, and the arm keeps moving through every
    chunk switch (it would stop if each chunk ended in a standstill)."""
    speeds, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            speeds.append((time.monotonic(), executor.read_state().ee_speed))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    switches = []
    for _ in range(12):
        switches.append(time.monotonic())
        executor.submit(make_chunk(executor, step_rows(8, (0, 0.005, 0))))
        time.sleep(0.2)
    stop.set()
    sampler.join()
    wait_still(executor)
    samples = np.array(speeds)
    for t in switches[3:]:
        window = samples[(samples[:, 0] > t - 0.05) & (samples[:, 0] < t + 0.1), 1]
        assert window.min() > 0.3 * 0.05, f"arm nearly stopped at a chunk switch ({window.min():.4f} m/s)"
    assert executor.reflex_count == 0 and executor.state != ControllerState.FAULT


def test_estop_halts_and_refuses_chunks_until_release(executor):
    executor.submit(make_chunk(executor, step_rows(8, (0, 0, 0.01))))
    time.sleep(0.25)
    executor.estop()
    halted = wait_still(executor, timeout=2.0).ee.position
    with pytest.raises(ChunkRejected, match="estopped"):
        executor.submit(make_chunk(executor, step_rows(8, (0, 0, 0.01))))
    time.sleep(0.5)
    np.testing.assert_allclose(executor.read_state().ee.position, halted, atol=1e-3)
    executor.release()
    assert executor.state == ControllerState.IDLE
    executor.submit(make_chunk(executor, step_rows(4, (0, 0, -0.005))))
    assert wait_still(executor).ee.position[2] < halted[2] - 0.015


def test_watchdog_holds_when_chunks_stop(executor):
    executor.submit(make_chunk(executor, step_rows(8, (0.003, 0, 0))))
    time.sleep(0.3)
    assert executor.state == ControllerState.RUNNING
    time.sleep(1.0)
    assert executor.state == ControllerState.HOLDING
    held = wait_still(executor).ee.position
    time.sleep(0.5)
    np.testing.assert_allclose(executor.read_state().ee.position, held, atol=1e-3)


def test_workspace_box_holds(executor):
    """Chunks that push up past z_max (0.6 m) stop at the box face."""
    for _ in range(6):
        executor.submit(make_chunk(executor, step_rows(8, (0, 0, 0.02))))
        time.sleep(0.3)
    z = wait_still(executor).ee.position[2]
    assert z <= executor.limits.workspace_max[2] + 2e-3
    assert z > executor.limits.workspace_max[2] - 5e-3


def test_gripper_grasps_and_lifts_a_cube():
    """In-process sim, so the test can read where the cube really is."""
    with SimServer("127.0.1.9", scene=add_cube) as sim, FrankaExecutor("127.0.1.9") as ex:
        ex.home()
        cube_start = sim.body_position("cube")
        above = Pose.from_xyz_rpy((*cube_start[:2], 0.15), (-np.pi, 0.0, np.pi / 4))
        ex.move_to(above)
        ex.move_to(Pose(cube_start, above.rotation))
        ex.submit(make_chunk(ex, step_rows(4, grip=-1.0)))
        time.sleep(2.0)
        width = ex.read_state().gripper_width
        assert 0.035 < width < 0.045, f"fingers should stop on the 4 cm cube, width {width:.4f}"
        for _ in range(10):
            ex.submit(make_chunk(ex, step_rows(8, (0, 0, 0.005), grip=-1.0)))
            time.sleep(0.3)
        wait_still(ex)
        lifted = sim.body_position("cube")
        assert lifted[2] - cube_start[2] >= 0.10, f"cube only rose {lifted[2] - cube_start[2]:.3f} m"
        assert np.linalg.norm(lifted - ex.read_state().ee.position) < 0.02, "cube is not between the fingers"
        ex.submit(make_chunk(ex, step_rows(2, grip=1.0)))
        time.sleep(1.5)
        assert ex.read_state().gripper_width > 0.07

"""The franky executor against franky-sim (a real libfranka-protocol robot in MuJoCo)."""
import dataclasses
import threading
import time

import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.control import ArmController, ControllerState, Strategy
from graspvla_ros.deployment import HOME_POSITION
from graspvla_ros.sim_settings import sim_controller_settings
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.sim.server import SimServer, add_cube

pytestmark = pytest.mark.sim
DT = 0.1


# Longer than a lone chunk's motion (0.8 s) on this host's clock even when the simulator runs at half
# speed: the watchdog stops a motion still under way; the watchdog's own tests shorten it.
HOLD_TIMEOUT = 2.0


def sim_settings(host: str, **params):
    """The sim graph's controller settings, with this module's HOLD_TIMEOUT."""
    return sim_controller_settings(host, **{"safety.hold_timeout": HOLD_TIMEOUT, **params})


@pytest.fixture
def executor(sim_host):
    with ArmController(sim_settings(sim_host)) as ex:
        ex.home()
        yield ex


def make_chunk(ex, rows, stamp=None):
    state = ex.read_state()
    return ActionChunk(stamp or ex.clock(), DT, "base", np.asarray(rows, float), state.ee)


def late_stamp(ex, late_ns: int) -> int:
    """A stamp `late_ns` ago, once the controller's last stop (the fixture's home) is older than
    that: a chunk observed before a stop is refused (control.order)."""
    wait_for(lambda: ex.clock() - ex.machine.stopped_ns > late_ns + 10_000_000, 10,
             f"the home to be over for {late_ns / 1e6:.0f} ms")
    return ex.clock() - late_ns


def step_rows(n=8, d=(0.0, 0.0, 0.0), grip=0.0):
    return [[*d, 0, 0, 0, grip]] * n


def wait_still(ex, timeout=20.0):
    """Until the controller's work on chunks is over (no longer RUNNING or GRIPPER: the watchdog
    held, or something stopped it) and the TCP is at rest; fails with a message after `timeout`."""
    wait_for(lambda: ex.state not in (ControllerState.RUNNING, ControllerState.GRIPPER, ControllerState.HOMING),
             timeout, "the chunk work to end")
    return wait_at_rest(ex, timeout, "the arm at rest")


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
    final = wait_still(executor).ee
    assert final.translation_to(chunk.targets[-1].pose) < 2e-3
    assert final.rotation_to(chunk.targets[-1].pose) < 0.01
    assert executor.reflex_count == 0


def test_official_blocking_waits_for_a_chunk_planned_after_the_motion(executor):
    """The official blocking client asks the model only once the arm is still: a chunk whose
    images were taken while the previous chunk moved the arm is refused (`moving`)."""
    executor.strategy = Strategy.OFFICIAL_BLOCKING
    executor.submit(make_chunk(executor, step_rows(8, (0.004, 0, 0))))
    wait_for(lambda: executor.read_state().ee_speed > 1e-3, 5, "the arm moving")
    with pytest.raises(ChunkRejected, match="moving"):
        executor.submit(make_chunk(executor, step_rows(8, (0.004, 0, 0))))
    wait_still(executor)

    def accepted() -> bool:  # the job ends a poll period (0.1 s) after the arm settled
        try:
            executor.submit(make_chunk(executor, step_rows(8, (0.004, 0, 0))))
            return True
        except ChunkRejected:
            return False

    wait_for(accepted, 5, "a chunk planned from the still arm accepted")


def test_a_late_chunk_is_run_not_refused_by_the_planner(executor):
    """A chunk 90 ms late: its first waypoint is due in 10 ms with a whole step's turn, a
    waypoint velocity above franky's limits (2.5 rad/s × 0.3), which its planner refuses as
    invalid input (-100: the arm held, the chunk lost). The twist is scaled to the limits: the
    chunk runs, no fault, and the arm turns."""
    start = executor.read_state().ee
    late = late_stamp(executor, 90_000_000)
    executor.submit(make_chunk(executor, [[0.005, 0, 0, 0, 0, 0.05, 0]] * 8, stamp=late))
    end = wait_still(executor).ee
    assert not executor.faults, dict(executor.faults)
    assert end.rotation_to(start) > 0.1, "the arm did not turn"


def test_a_chunk_runs_once_and_nothing_observed_before_a_hold_runs_after_it(executor):
    """control.order on the controller: a chunk delivered twice is refused the second time
    (stale_seq), a chunk observed before a hold is refused after it (before_stop), and a restarted
    policy's episode 1 runs after the hold its instruction asks for."""
    first = dataclasses.replace(make_chunk(executor, step_rows(8, (0.002, 0, 0))), episode=3, seq=1)
    executor.submit(first)
    with pytest.raises(ChunkRejected, match="stale_seq"):
        executor.submit(first)
    observed = executor.clock()
    executor.hold()
    with pytest.raises(ChunkRejected, match="before_stop"):
        executor.submit(dataclasses.replace(make_chunk(executor, step_rows(8), stamp=observed), episode=3, seq=2))
    executor.submit(dataclasses.replace(make_chunk(executor, step_rows(8)), episode=1, seq=1))
    assert executor.rejections.counts["stale_seq"] == 1 and executor.rejections.counts["before_stop"] == 1
    wait_still(executor)


def test_streaming_never_stops_between_chunks(executor):
    """12 chunks at 5 Hz along +y at 5 cm/s: no reflex, and the arm keeps moving through every
    chunk switch (it would stop if each chunk ended in a standstill): 30–100 ms of robot time
    after each new motion replaced a running one, the TCP moves at over 30% of the speed. Judged
    on the robot's clock, per switch, so a test thread that falls behind on a busy machine
    leaves switches out instead of failing them."""
    samples, issued, stop = [], [], threading.Event()
    arm = executor.arm
    real = arm.move_through

    def move_through(setpoints):
        issued.append((executor.read_state().robot_time, arm.moving()))
        real(setpoints)

    def sample():
        while not stop.is_set():
            s = executor.read_state()
            samples.append((s.robot_time, s.ee_speed))
            time.sleep(0.005)

    arm.move_through = move_through
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(12):
            executor.submit(make_chunk(executor, step_rows(8, (0, 0.005, 0))))
            time.sleep(0.2)
    finally:
        stop.set()
        sampler.join()
        del arm.move_through
    wait_still(executor)
    t, speed = np.array(samples).T
    checked = 0
    for (start, replaced), (following, _) in zip(issued[3:], issued[4:] + [(np.inf, False)]):
        window = speed[(t >= start + 0.03) & (t <= min(start + 0.1, following))]
        if replaced and window.size:
            checked += 1
            assert window.min() > 0.3 * 0.05, f"arm nearly stopped after a chunk switch ({window.min():.4f} m/s)"
    assert checked >= 4, f"only {checked} chunk switches replaced a running motion with samples after them"
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
    """One chunk, then none: RUNNING, then HOLDING once `hold_timeout` passed without a chunk,
    and the arm stays where the last motion ended."""
    states = []
    executor.apply("safety.hold_timeout", 0.6)
    executor.add_state_listener(lambda state, why: states.append((state, why)))
    executor.submit(make_chunk(executor, step_rows(8, (0.003, 0, 0))))
    wait_for(lambda: executor.state == ControllerState.HOLDING, 10, "HOLDING after the chunks stopped")
    executor.flush()
    assert [s for s, _ in states][:2] == [ControllerState.RUNNING, ControllerState.HOLDING], states
    assert "no chunk for" in states[1][1]
    held = wait_at_rest(executor, 10, "the arm at rest").ee.position
    time.sleep(0.5)
    np.testing.assert_allclose(executor.read_state().ee.position, held, atol=1e-3)


def test_the_watchdog_stops_a_motion_still_under_way(executor):
    """A chunk whose motion outlasts `hold_timeout` (8 steps of 5 mm, 0.5 s apart: 4 s) and no
    chunk after it: the watchdog's HOLDING stops the arm there and then, far short of the chunk's
    end, and the arm stays; HOLDING never names a hold the arm does not keep."""
    executor.apply("safety.hold_timeout", 0.6)
    start = executor.read_state().ee.position
    chunk = ActionChunk(executor.clock(), 0.5, "base", np.asarray(step_rows(8, (0.005, 0, 0)), float),
                        executor.read_state().ee)
    executor.submit(chunk)
    wait_for(lambda: executor.state == ControllerState.HOLDING, 10, "the watchdog's HOLDING")
    holding = executor.read_state().robot_time

    def after(s: float):   # the state once `s` of robot time passed since HOLDING was seen
        wait_for(lambda: executor.read_state().robot_time > holding + s, 10, f"{s} s of robot time")
        return executor.read_state()
    held = after(0.5).ee.position   # decelerated to rest by then, and it stays
    assert held[0] - start[0] < 0.015, f"the arm went {(held[0] - start[0]) * 1e3:.1f} mm of the chunk's 40 mm"
    np.testing.assert_allclose(after(1.5).ee.position, held, atol=1e-3)


def test_workspace_box_holds(executor):
    """Chunks that push up past z_max (0.6 m) stop at the box face."""
    for _ in range(6):
        executor.submit(make_chunk(executor, step_rows(8, (0, 0, 0.02))))
        time.sleep(0.3)
    z = wait_still(executor).ee.position[2]
    assert z <= executor.limits.workspace_max[2] + 2e-3
    assert z > executor.limits.workspace_max[2] - 5e-3


def test_gripper_grasps_and_lifts_a_cube(new_loopback_host):
    """In-process sim, so the test can read where the cube really is."""
    with SimServer(new_loopback_host(), scene=add_cube) as sim, ArmController(sim_settings(sim.host)) as ex:
        ex.home()
        cube_start = sim.body_position("cube")
        above = Pose.from_xyz_rpy((*cube_start[:2], 0.15), (-np.pi, 0.0, np.pi / 4))
        ex.move_to(above)
        ex.move_to(Pose(cube_start, above.rotation))
        ex.submit(make_chunk(ex, step_rows(4, grip=-1.0)))
        wait_for(lambda: ex.gripper_command == -1.0 and ex.state == ControllerState.RUNNING, 10, "the close")
        time.sleep(0.3)  # the fingers settle on the cube
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
        wait_for(lambda: ex.read_state().gripper_width > 0.07, 10, "the gripper to open")


def window_speed(t, x, window=0.02):
    """Max TCP speed (m/s) over `window`-long stretches of samples (robot clock), robust to
    samples that share a robot-clock tick."""
    speeds = [np.linalg.norm(x[j] - x[i]) / (t[j] - t[i])
              for i in range(len(t)) for j in [np.searchsorted(t, t[i] + window)] if j < len(t)]
    return max(speeds, default=0.0)


class CommandLog:
    """Wraps the executor's real franky adapter and records every motion command it issues;
    `slow` s of delay inside each chunk motion widen the window an e-stop race needs."""

    NAMES = ("move_through", "move_to", "stop")

    def __init__(self, ex, slow=0.0):
        self.commands, self.arm = [], ex.arm
        arm = self.arm
        for name in self.NAMES:
            real = getattr(arm, name)

            def record(*args, _real=real, _name=name):
                if _name == "move_through":
                    time.sleep(slow)
                self.commands.append(_name)
                return _real(*args)
            setattr(arm, name, record)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Unwrap: the wrappers hold the adapter, which must be freed (disconnected) at close."""
        for name in self.NAMES:
            delattr(self.arm, name)


def test_estop_is_the_last_motion_command(executor):
    """Chunks keep arriving while the e-stop is called: once estop returns, no motion command
    other than its stop reaches the robot, and the arm stays where it stopped."""
    with CommandLog(executor, slow=0.05) as log:
        estop_while_streaming(executor, log)


def estop_while_streaming(executor, log):
    stop = threading.Event()

    def send():
        while not stop.is_set():
            try:
                executor.submit(make_chunk(executor, step_rows(8, (0, 0.004, 0))))
            except ChunkRejected:
                pass
            time.sleep(0.02)
    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: log.commands.count("move_through") >= 3, 10, "streaming motions")
    executor.estop()
    after_estop = len(log.commands)
    time.sleep(0.5)
    stop.set()
    sender.join()
    assert log.commands[after_estop - 1] == "stop"
    assert log.commands[after_estop:] == [], f"motion commands after the e-stop: {log.commands[after_estop:]}"
    halted = wait_still(executor).ee.position
    time.sleep(0.3)
    np.testing.assert_allclose(executor.read_state().ee.position, halted, atol=1e-3)
    executor.release()


def test_homing_is_a_state_that_refuses_chunks_and_yields_to_estop(executor):
    executor.move_to(Pose(np.add(HOME_POSITION, (0.1, 0.1, -0.1)), executor.read_state().ee.rotation))
    job = executor.request_home()
    assert executor.state == ControllerState.HOMING
    with pytest.raises(ChunkRejected, match="homing"):
        executor.submit(make_chunk(executor, step_rows(8, (0.003, 0, 0))))
    executor.estop()
    assert job.done.wait(10) and "interrupted" in job.error
    assert executor.state == ControllerState.ESTOPPED
    executor.release()
    executor.home()
    np.testing.assert_allclose(executor.read_state().ee.position, HOME_POSITION, atol=2e-3)


def test_hold_stops_drops_the_chunk_and_accepts_later_ones(executor):
    executor.submit(make_chunk(executor, step_rows(8, (0, 0, -0.006))))
    time.sleep(0.2)
    executor.hold()
    assert executor.state == ControllerState.HOLDING
    held = wait_still(executor).ee.position
    assert held[2] > HOME_POSITION[2] - 0.04, "the dropped chunk went on"
    executor.submit(make_chunk(executor, step_rows(4, (0.005, 0, 0))))
    assert wait_still(executor).ee.position[0] > held[0] + 0.015


def test_listeners_run_outside_the_lock(executor):
    """A state listener may take the executor's lock (e.g. read its state): with listeners
    called under the lock, it could not."""
    took_lock = []

    def listener(state, why):
        took_lock.append(executor._lock.acquire(timeout=2.0))
        if took_lock[-1]:
            executor._lock.release()
    executor.add_state_listener(listener)
    executor.submit(make_chunk(executor, step_rows(4, (0.003, 0, 0))))
    executor.estop()
    executor.release()
    executor.flush()
    assert took_lock and all(took_lock)


def test_close_joins_the_worker_before_letting_the_robot_go(sim_host):
    ex = ArmController(sim_settings(sim_host)).connect()
    ex.home()
    ex.submit(make_chunk(ex, step_rows(8, (0, 0, -0.004)) + [[0, 0, 0, 0, 0, 0, -1.0]]))
    wait_for(lambda: ex.state == ControllerState.GRIPPER, 5, "the gripper change to start")
    worker = ex._worker
    ex.close()
    assert not worker.is_alive()
    assert ex.arm is None


@pytest.mark.parametrize("strategy", list(Strategy))
def test_gripper_change_is_gated_by_position(executor, strategy):
    """Close at step 4 of 8 (moving down 5 mm a step): the arm reaches step 4 and holds still
    while the fingers close, a newer chunk meanwhile is refused (`gripper_busy`) and does not
    cancel the close, then the chunk's remaining steps run."""
    executor.strategy = strategy
    rows = step_rows(3, (0, 0, -0.005)) + [[0, 0, -0.005, 0, 0, 0, -1.0]] + step_rows(4, (0, 0, -0.005))
    chunk = make_chunk(executor, rows)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            s = executor.read_state()
            samples.append((s.robot_time, s.ee.position.copy(), s.gripper_width))
            time.sleep(0.005)
    sampler = threading.Thread(target=sample)
    sampler.start()
    executor.submit(chunk)
    wait_for(lambda: executor.state == ControllerState.GRIPPER, 5, "GRIPPER")
    with pytest.raises(ChunkRejected, match="gripper_busy"):
        executor.submit(make_chunk(executor, step_rows(8, (0.005, 0, 0), grip=1.0)))
    wait_for(lambda: executor.gripper_command == -1.0 and executor.state == ControllerState.RUNNING, 10, "the close")
    final = wait_still(executor).ee
    stop.set()
    sampler.join()
    assert final.translation_to(chunk.targets[-1].pose) < 2e-3
    t = np.array([s[0] for s in samples])
    x = np.array([s[1] for s in samples])
    width = np.array([s[2] for s in samples])
    closing = np.flatnonzero(width < width[0] - 0.002)
    assert closing.size, "the fingers never moved"
    start = closing[0]
    assert np.linalg.norm(x[start] - chunk.targets[3].pose.position) < 2e-3, "fingers started before the waypoint"
    moving = np.flatnonzero((width > width[-1] + 2e-3) & (np.arange(len(width)) >= start))
    speed = window_speed(t[moving], x[moving])
    assert speed.max() < 0.005, f"arm moved at {speed.max() * 1e3:.1f} mm/s while the fingers closed"


def test_a_gripper_change_on_an_overdue_step_still_happens(executor):
    """Latency compensation drops steps already due, but never the gripper change they carry."""
    rows = [[0, 0, 0, 0, 0, 0, -1.0]] + step_rows(7)
    executor.submit(make_chunk(executor, rows, stamp=late_stamp(executor, 400_000_000)))
    wait_for(lambda: executor.gripper_command == -1.0, 10, "the overdue close")
    wait_for(lambda: executor.state != ControllerState.GRIPPER, 10, "the close to finish")
    assert executor.read_state().gripper_width < 0.01


def test_pressing_into_the_floor_ends_in_the_retreat_not_fault(sim_host):
    """Chunks that drive the open hand 3 cm into the floor: the contact force (from MuJoCo's
    contacts, sim.server.external_force) exceeds 15 N, the controller lifts 5 cm and goes IDLE."""
    settings = sim_settings(sim_host, **{"safety.workspace_min": (0.2, -0.4, -0.05), "safety.hold_timeout": 0.6})
    with ArmController(settings) as ex:
        ex.home()
        rotation = ex.read_state().ee.rotation
        ex.move_to(Pose(np.array([0.4, 0.2, 0.03]), rotation))
        states = []
        ex.add_state_listener(lambda state, why: states.append(state))
        for _ in range(6):
            try:
                ex.submit(make_chunk(ex, step_rows(8, (0, 0, -0.005))))
            except ChunkRejected:
                break
            time.sleep(0.3)
        wait_for(lambda: ex.contact_count >= 1, 10, "the contact reaction")
        wait_for(lambda: ex.state == ControllerState.IDLE, 15, "IDLE after the retreat")
        ex.flush()
        assert ControllerState.FAULT not in states, states
        assert abs(ex.read_state().force[2]) < 15.0
        assert ex.read_state().ee.position[2] > 0.04, "the hand touched the floor (z ≈ 0) and should be 5 cm up"


def test_streaming_with_a_tcp_offset_reaches_tcp_targets(sim_host):
    """With the official +3 cm finger extensions the TCP, not the flange, follows the chunk,
    also while the hand turns (the flange's velocity is corrected for the offset)."""
    with ArmController(sim_settings(sim_host, tcp_offset=0.03)) as ex:
        ex.home()
        np.testing.assert_allclose(ex.read_state().ee.position, HOME_POSITION, atol=2e-3)
        chunk = make_chunk(ex, [[0.004, 0.0, -0.003, 0.0, 0.0, 0.04, 0.0]] * 8)
        ex.submit(chunk)
        final = wait_still(ex).ee
        assert final.translation_to(chunk.targets[-1].pose) < 2e-3
        assert final.rotation_to(chunk.targets[-1].pose) < 0.01
        assert ex.reflex_count == 0


def wait_at_rest(ex, timeout, what):
    """The TCP at rest: under 1 mm/s over 0.1 s of robot time; fails after `timeout` s."""
    def still():
        a = ex.read_state()
        wait_for(lambda: ex.read_state().robot_time >= a.robot_time + 0.1, 5, "the robot clock to advance")
        b = ex.read_state()
        return np.linalg.norm(b.ee.position - a.ee.position) / (b.robot_time - a.robot_time) < 1e-3
    wait_for(still, timeout, what)
    return ex.read_state()


def start_calibration_pose(ex):
    """Start the joint motion to the camera calibration pose; returns its job once the arm moves."""
    from graspvla_ros.calibration.nominal import load_nominal

    start = ex.read_state().ee.position
    job = ex.request_home(joints=load_nominal().calibration_joints)
    wait_for(lambda: np.linalg.norm(ex.read_state().ee.position - start) > 0.01, 10, "the joint motion to start")
    return job


@pytest.mark.parametrize("stop", ["estop", "hold"])
def test_estop_and_hold_stop_a_joint_motion(executor, stop):
    """franky refuses to swap a running motion's type: a Cartesian stop cannot end the joint
    motion to the calibration pose. The stop must be the joint motion's own, and the arm must
    come to rest short of the target and stay there; a Cartesian motion then runs again."""
    job = start_calibration_pose(executor)
    getattr(executor, stop)()  # must not raise
    assert job.done.wait(10) and "interrupted" in job.error
    rest = wait_at_rest(executor, 5, f"the arm at rest after {stop}")
    time.sleep(0.5)
    np.testing.assert_allclose(executor.read_state().ee.position, rest.ee.position, atol=1e-3)
    assert executor.state == (ControllerState.ESTOPPED if stop == "estop" else ControllerState.HOLDING)
    if stop == "estop":
        executor.release()
    executor.home()
    np.testing.assert_allclose(executor.read_state().ee.position, HOME_POSITION, atol=2e-3)


def test_home_while_a_joint_motion_runs_ends_it_and_homes(executor):
    """`home` (Cartesian) asked for during `calibration_pose` (joint): the joint motion is
    stopped and the home runs once it ended, instead of franky refusing the swap."""
    executor.move_to(Pose(np.add(HOME_POSITION, (0.05, 0.0, -0.05)), executor.read_state().ee.rotation))
    job = start_calibration_pose(executor)
    executor.home()
    assert job.done.is_set() and "interrupted" in job.error
    np.testing.assert_allclose(executor.read_state().ee.position, HOME_POSITION, atol=2e-3)
    assert executor.state == ControllerState.IDLE


def test_dry_run_plans_every_motion_but_never_moves_the_arm(sim_host):
    """dry_run: home and chunks (with a gripper close) are computed and handed to `on_planned`,
    and the arm and the fingers stay where they are."""
    with ArmController(sim_settings(sim_host)) as ex:
        ex.home()
        ex.move_to(Pose(np.add(HOME_POSITION, (0.05, 0.0, -0.05)), ex.read_state().ee.rotation))
    with ArmController(sim_settings(sim_host, dry_run=True)) as ex:
        planned = []
        ex.on_planned = planned.append
        start = ex.read_state()
        ex.home()
        ex.submit(make_chunk(ex, step_rows(4, (0.005, 0, 0)) + [[0, 0, 0, 0, 0, 0, -1.0]]))
        wait_for(lambda: ex.gripper_command == -1.0 and ex.state == ControllerState.RUNNING, 10, "the chunk run")
        ex.flush()
        assert any(np.allclose(p[-1].position, HOME_POSITION, atol=1e-6) for p in planned), "home was not planned"
        assert any(p[-1].position[0] > start.ee.position[0] + 0.015 for p in planned), "the chunk was not planned"
        end = ex.read_state()
        assert end.ee.translation_to(start.ee) < 5e-4, "the arm moved in a dry run"
        assert abs(end.gripper_width - start.gripper_width) < 1e-3, "the fingers moved in a dry run"

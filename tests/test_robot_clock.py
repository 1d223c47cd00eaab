"""RobotClock: robot-state time → node time, on a wall clock and on sim time."""
import numpy as np

from graspvla_ros.control.robot_clock import RobotClock

C = 1_700_000_000_000_000_000  # node time at robot time 0


def test_wall_clock_stamps_lose_the_read_latency():
    rng = np.random.default_rng(0)
    clock = RobotClock(sim_time=False)
    errors = []
    for k in range(2000):  # 200 Hz for 10 s, reads 0.5–8 ms late
        robot_s = k * 0.005
        node_now = C + round(robot_s * 1e9) + int(rng.uniform(0.5e6, 8e6))
        errors.append(clock.to_node_ns(robot_s, node_now) - (C + round(robot_s * 1e9)))
    assert np.abs(errors[-1000:]).max() < 1e6  # the least-delayed read's 0.5 ms, not up to 8


def test_sim_time_stamps_lose_the_clock_lag_and_its_steps():
    """The node's sim clock is /clock at 250 Hz, arriving 0–60 ms late: stamps follow the
    simulator's own time instead (what the cameras are stamped with)."""
    rng = np.random.default_rng(1)
    clock = RobotClock(sim_time=True)
    errors, naive, stamps = [], [], []
    for k in range(2000):
        sim_ns = k * 5_000_000
        lag = 0 if k == 500 else int(rng.uniform(10e6, 60e6))  # one read without lag, then none for 7.5 s
        seen_ns = max(0, sim_ns - lag)
        node_now = seen_ns - seen_ns % 4_000_000  # the last /clock message received
        robot_s = (sim_ns - 1_016_000_000) / 1e9  # franky-sim's robot time: sim time since connect
        stamps.append(clock.to_node_ns(robot_s, node_now))
        errors.append(stamps[-1] - sim_ns)
        naive.append(node_now - sim_ns)
    assert np.abs(errors[-1000:]).max() <= 4e6  # within one /clock step, from up to 60 ms
    assert np.abs(naive[-1000:]).max() > 40e6
    assert (np.diff(stamps[500:]) > 0).all(), "the best sample never expires: stamps never step back"


def test_robot_time_going_back_starts_over():
    clock = RobotClock(sim_time=False)
    assert clock.to_node_ns(10.0, C + 10_000_000_000) == C + 10_000_000_000
    assert clock.to_node_ns(0.0, C + 20_000_000_000) == C + 20_000_000_000  # reconnected: new offset

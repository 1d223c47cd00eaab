"""The robot's own clock (libfranka's state time) → the node clock.

Stamping a robot state with the node's "now" when it is read makes its stamp late by however
long the read waited; on sim time it is worse: the node clock is a copy of the simulator's
`/clock` that arrives late and in 4 ms steps, while the state carries the simulator's exact
time. The policy interpolates these stamps to the cameras' exposure times, so the error shows
up as a wrong proprio and anchor (measured: 10 mm at 0.1 m/s on a loaded machine).
"""
from __future__ import annotations

from collections import deque


class RobotClock:
    """Maps robot time (s) to node time (ns) through an offset tracked over `window_s`.

    Each read gives a sample node_now − robot_time. On a wall clock the read can only be late,
    so the smallest recent sample is the least delayed, and the window follows a drifting robot
    crystal. On sim time the node clock can only be behind the simulator, so the largest sample
    is; both are the simulator's clock (no drift), so the largest since the start is kept: a
    window would let it expire and step the stamps back. Robot time going back (a reconnect, a
    simulator restart) starts the estimate over.
    """

    def __init__(self, sim_time: bool, window_s: float = 2.0):
        self.sim_time = sim_time
        self.window_ns = int(window_s * 1e9)
        self._samples: deque[tuple[int, int]] = deque()  # (node ns, offset ns), best offset first
        self._last_robot_ns: int | None = None

    def to_node_ns(self, robot_time_s: float, node_now_ns: int) -> int:
        robot_ns = round(robot_time_s * 1e9)
        if self._last_robot_ns is not None and robot_ns < self._last_robot_ns:
            self._samples.clear()
        self._last_robot_ns = robot_ns
        offset = node_now_ns - robot_ns
        worse = (lambda kept: kept <= offset) if self.sim_time else (lambda kept: kept >= offset)
        while self._samples and worse(self._samples[-1][1]):
            self._samples.pop()  # monotonic deque: the window's best offset stays at the front
        self._samples.append((node_now_ns, offset))
        while not self.sim_time and self._samples[0][0] < node_now_ns - self.window_ns:
            self._samples.popleft()
        return robot_ns + self._samples[0][1]

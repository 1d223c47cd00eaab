"""A scripted stand-in for the policy: a square in the air, then a gripper close and open.

The script is a reference path for the TCP (one pose and gripper command every `dt`). Like
GraspVLA, the scripted policy is closed-loop: each chunk is anchored at the pose the robot
reports at observation time, so its first delta absorbs the tracking error so far and the
following deltas follow the reference. `PathMetrics` turns the measured TCP poses into the
numbers the demo and the benchmark print: tracking error and the speed at chunk switches.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graspvla_ros.chunk import GRIPPER_CLOSE, GRIPPER_HOLD, GRIPPER_OPEN, ActionChunk, Pose

CHUNK_PERIOD = 0.2   # s between chunks (5 Hz, GraspVLA's rate on an L40S)
STEP_DT = 0.1        # s between waypoints (GraspVLA: 4 actions split into 8 sub-steps)
HORIZON = 8          # waypoints per chunk


@dataclass(frozen=True)
class ScriptedPath:
    """Reference TCP poses and gripper commands at t = k·dt (k = 0..M) from the start pose."""

    dt: float
    poses: tuple[Pose, ...]
    grippers: np.ndarray
    cruise_speed: float

    @property
    def duration(self) -> float:
        return (len(self.poses) - 1) * self.dt

    def index_at(self, elapsed: float) -> int:
        return int(np.clip(np.floor(elapsed / self.dt + 1e-9), 0, len(self.poses) - 1))

    def position_at(self, elapsed: float) -> np.ndarray:
        """Reference position at `elapsed` seconds, linearly interpolated between steps."""
        x = np.clip(elapsed / self.dt, 0.0, len(self.poses) - 1)
        k = min(int(x), len(self.poses) - 2)
        a, b = self.poses[k].position, self.poses[k + 1].position
        return a + (x - k) * (b - a)

    def cruising(self, elapsed: float, margin: float) -> bool:
        """True while the reference moves at cruise speed over [elapsed − margin, elapsed + margin]
        (away from the square's corners, start and end, where it has to slow down)."""
        ts = np.linspace(elapsed - margin, elapsed + margin, 5)
        if ts[0] < 0 or ts[-1] > self.duration:
            return False
        ks = {self.index_at(t) for t in ts}
        heading = {tuple(np.round(self.poses[k + 1].position - self.poses[k].position, 9))
                   for k in ks if k + 1 < len(self.poses)}
        return len(heading) == 1 and np.linalg.norm(np.array(heading.pop())) > 0

    def pose_at(self, elapsed: float) -> Pose:
        return Pose(self.position_at(elapsed), self.poses[self.index_at(elapsed)].rotation)

    def chunk(self, elapsed: float, anchor: Pose, stamp_ns: int, frame_id: str = "base",
              horizon: int = HORIZON, anchor_gripper: float = GRIPPER_OPEN) -> ActionChunk:
        """The chunk a policy observing `anchor` at `elapsed` s into the script would predict:
        the reference at elapsed + k·dt, k = 1..horizon (it rests at the end of the script)."""
        ts = [elapsed + k * self.dt for k in range(1, horizon + 1)]
        return ActionChunk.from_targets(stamp_ns, self.dt, frame_id, anchor, [self.pose_at(t) for t in ts],
                                        [float(self.grippers[self.index_at(t)]) for t in ts], anchor_gripper)


def square_path(start: Pose, side: float = 0.08, speed: float = 0.04, dt: float = STEP_DT,
                gripper_hold: float = 1.5) -> ScriptedPath:
    """A horizontal square (+x, +y, −x, −y) at the start height and orientation, then the
    gripper closes for `gripper_hold` s and opens for as long (a grasp takes ~1 s)."""
    steps_per_side = max(1, int(round(side / (speed * dt))))
    corners = [np.zeros(3), np.array([side, 0, 0]), np.array([side, side, 0]), np.array([0, side, 0]), np.zeros(3)]
    offsets = [np.zeros(3)]
    for a, b in zip(corners, corners[1:]):
        offsets += [a + (b - a) * (j / steps_per_side) for j in range(1, steps_per_side + 1)]
    grippers = [GRIPPER_HOLD] * len(offsets)
    hold = int(round(gripper_hold / dt))
    offsets += [np.zeros(3)] * (2 * hold)
    grippers += [GRIPPER_CLOSE] * hold + [GRIPPER_OPEN] * hold
    poses = tuple(Pose(start.position + o, start.rotation) for o in offsets)
    return ScriptedPath(dt, poses, np.asarray(grippers, float), side / (steps_per_side * dt))


def speeds(times: np.ndarray, positions: np.ndarray, window: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """TCP speed from timestamped positions, by differences over ~`window` s (robust to
    duplicate or jittery stamps of a 100–200 Hz pose stream)."""
    times, positions = np.asarray(times, float), np.asarray(positions, float)
    j = np.searchsorted(times, times + window)
    ok = j < len(times)
    i, j = np.nonzero(ok)[0], j[ok]
    v = np.linalg.norm(positions[j] - positions[i], axis=1) / (times[j] - times[i])
    return 0.5 * (times[i] + times[j]), v


@dataclass(frozen=True)
class PathMetrics:
    """How well a run followed a scripted path."""

    rms_error: float        # m, TCP vs reference while the script ran
    max_error: float        # m
    final_error: float      # m, at rest after the script
    min_switch_speed: float  # m/s, lowest TCP speed around chunk switches while cruising
    cruise_speed: float     # m/s, the reference speed there
    switches: int           # chunk switches that were measured

    @property
    def switch_speed_ratio(self) -> float:
        return self.min_switch_speed / self.cruise_speed if self.cruise_speed > 0 else float("nan")

    def lines(self) -> list[str]:
        return [f"tracking error: rms {self.rms_error * 1e3:.1f} mm, max {self.max_error * 1e3:.1f} mm, "
                f"final {self.final_error * 1e3:.2f} mm",
                f"speed at {self.switches} chunk switches: min {self.min_switch_speed * 1e3:.1f} mm/s "
                f"= {self.switch_speed_ratio:.0%} of the commanded {self.cruise_speed * 1e3:.0f} mm/s"]


def evaluate(path: ScriptedPath, t0: float, times, positions, switch_times, final_position,
             robot_times=None, window: tuple[float, float] = (-0.05, 0.1),
             speed_window: float = 0.02) -> PathMetrics:
    """Metrics of a run whose script started at `t0` (same clock as `times`, the TCP sample
    times, and `switch_times`, when each chunk was handed to the controller; chunk 2 onwards
    replace a running motion). Chunk targets are due at their reference time, so the error is
    taken against the reference at the same time. `robot_times`, the robot's own stamps of the
    samples where known, give speeds free of sampling jitter; without them, a longer
    `speed_window` (s) averages the jitter of the sample stamps out."""
    times, positions = np.asarray(times, float), np.asarray(positions, float)
    during = (times >= t0) & (times <= t0 + path.duration)
    ref = np.array([path.position_at(t - t0) for t in times[during]]).reshape(-1, 3)
    err = np.linalg.norm(positions[during] - ref, axis=1) if len(ref) else np.array([np.nan])
    if robot_times is None:
        vt, v = speeds(times, positions, speed_window)
    else:  # differentiate on the robot's clock, immune to sampling jitter; window on ours
        rt, v = speeds(robot_times, positions, speed_window)
        vt = np.interp(rt, robot_times, times)
    mins = []
    for s in list(switch_times)[1:]:  # the first chunk starts the motion, later ones replace it
        if not path.cruising(s - t0, margin=max(abs(window[0]), window[1]) + path.dt):
            continue
        sel = (vt >= s + window[0]) & (vt <= s + window[1])
        if sel.any():
            mins.append(v[sel].min())
    final_error = float(np.linalg.norm(np.asarray(final_position) - path.poses[-1].position))
    return PathMetrics(float(np.sqrt(np.mean(err ** 2))), float(err.max()), final_error,
                       float(min(mins)) if mins else float("nan"), path.cruise_speed, len(mins))


def stream(path: ScriptedPath, clock_ns: Callable[[], int], observe: Callable[[], Pose],
           send: Callable[[ActionChunk], None], latency: float = 0.0, period: float = CHUNK_PERIOD,
           frame_id: str = "base") -> tuple[float, list[float]]:
    """Play the script as a policy would: every `period` s observe the TCP, predict a chunk
    stamped with the observation time, take `latency` s (simulated inference), send it. The
    last chunk is observed less than `period` before the script ends and rests at its end.
    Returns the script's start time and the send time of every chunk (seconds, `clock_ns`)."""
    now = lambda: clock_ns() * 1e-9  # noqa: E731
    t0, sent = now(), []
    for i in range(max(1, math.ceil(path.duration / period - 1e-9))):
        time.sleep(max(0.0, t0 + i * period - now()))
        anchor, stamp = observe(), clock_ns()
        chunk = path.chunk(stamp * 1e-9 - t0, anchor, stamp, frame_id)
        time.sleep(latency)
        send(chunk)
        sent.append(now())
    return t0, sent

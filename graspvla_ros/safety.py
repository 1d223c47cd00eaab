"""Safety rules for streaming model output to an arm, all in one place.

Every chunk passes `SafetyLimits.check` (refuse) and then `SafetyLimits.clip` (bound): a
chunk that is malformed or stale is refused whole; a well-formed chunk has each step bounded
relative to the pose before it and every target clamped into the workspace box.
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from graspvla_ros.chunk import ROW_WIDTH, ActionChunk, Pose, Waypoint
from graspvla_ros.settings import setting


class ChunkRejected(ValueError):
    """A chunk the controller refuses; `reason` is a short stable key for counting."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SafetyLimits:
    """The controller's `safety.*` parameters; `frame_id` (the node's `base_frame`) is set by it."""

    workspace_min: tuple[float, float, float] = setting((0.2, -0.4, 0.0), "m, box (base frame) every target is clamped into")
    workspace_max: tuple[float, float, float] = setting((0.8, 0.4, 0.6), "m, box (base frame) every target is clamped into")
    max_step_translation: float = setting(
        0.02, "m per step, relative to the step before (the first: the current pose); `official_blocking` clips at 0.01 "
              "as the official blocking client does")
    max_step_rotation: float = setting(0.05, "rad per step")
    max_chunk_age: float = setting(
        1.0, "s, older observations are refused (the official eager client sends chunks 0.5–0.7 s after their "
             "observation)", live=True)
    hold_timeout: float = setting(1.0, "s without a chunk before HOLDING: the running motion is stopped then",
                                  live=True)
    frame_id: str = "base"

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"workspace box must be 3 mins below 3 maxes, got {lo} / {hi}")
        for name in ("max_step_translation", "max_step_rotation", "max_chunk_age", "hold_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")

    def check(self, chunk: ActionChunk, now_ns: int, last_stamp_ns: int | None) -> None:
        """Refuse a chunk that must not move the arm at all (raises ChunkRejected)."""
        rows = chunk.rows
        if rows.ndim != 2 or rows.shape[1] != ROW_WIDTH:
            raise ChunkRejected("bad_shape", f"rows must be N×{ROW_WIDTH}, got shape {rows.shape}")
        if rows.shape[0] == 0:
            raise ChunkRejected("empty", "chunk has no actions")
        if not np.all(np.isfinite(rows)):
            raise ChunkRejected("not_finite", "chunk contains NaN or inf")
        if not (np.all(np.isfinite(chunk.anchor.position)) and np.all(np.isfinite(chunk.anchor.rotation))):
            raise ChunkRejected("not_finite", "anchor pose contains NaN or inf")
        if not (math.isfinite(chunk.dt) and chunk.dt > 0):
            raise ChunkRejected("bad_dt", f"step period must be positive, got {chunk.dt}")
        if chunk.frame_id != self.frame_id:
            raise ChunkRejected("unknown_frame", f"chunk is in frame {chunk.frame_id!r}, controller works in {self.frame_id!r}")
        if not np.all(np.isin(rows[:, 6], (-1.0, 0.0, 1.0))):
            raise ChunkRejected("bad_gripper", f"gripper commands must be -1, 0 or +1, got {rows[:, 6]}")
        age = (now_ns - chunk.stamp_ns) * 1e-9
        if age > self.max_chunk_age:
            raise ChunkRejected("too_old", f"observation is {age:.3f} s old (max {self.max_chunk_age} s)")
        if age < -self.max_chunk_age:
            raise ChunkRejected("from_future", f"observation stamp is {-age:.3f} s in the future")
        if last_stamp_ns is not None and chunk.stamp_ns <= last_stamp_ns:
            raise ChunkRejected("non_monotonic", f"observation stamp {chunk.stamp_ns} is not after the last one {last_stamp_ns}")

    def clamp_position(self, position: np.ndarray) -> np.ndarray:
        return np.clip(position, self.workspace_min, self.workspace_max)

    def clip(self, start: Pose, waypoints: list[Waypoint], max_step: float | None = None) -> list[Waypoint]:
        """Bound each step relative to the (already bounded) pose before it, starting at
        `start` (the current pose), at most `max_step` m (default and upper bound:
        `max_step_translation`), and clamp every target into the workspace box."""
        step = self.max_step_translation if max_step is None else min(max_step, self.max_step_translation)
        out, prev = [], start
        for w in waypoints:
            pose = self._bounded_step(prev, w.pose, step)
            pose = Pose(self.clamp_position(pose.position), pose.rotation)
            out.append(Waypoint(w.stamp_ns, pose, w.gripper))
            prev = pose
        return out

    def _bounded_step(self, prev: Pose, target: Pose, max_step: float) -> Pose:
        delta = target.position - prev.position
        dist = float(np.linalg.norm(delta))
        position = prev.position + delta * (max_step / dist) if dist > max_step else target.position
        angle = prev.rotation_to(target)
        rotation = target.rotation
        if angle > self.max_step_rotation:
            pair = Rotation.from_matrix(np.stack([prev.rotation, target.rotation]))
            rotation = Slerp([0.0, 1.0], pair)(self.max_step_rotation / angle).as_matrix()
        return Pose(position, rotation)


class RejectionLog:
    """Counts rejections per reason; `record` returns True only the first time a reason is
    seen since the last accepted chunk, so a stream of bad chunks is logged once, not at 5 Hz."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._quiet: set[str] = set()
        self._lock = threading.Lock()

    def record(self, reason: str) -> bool:
        with self._lock:
            self.counts[reason] += 1
            first = reason not in self._quiet
            self._quiet.add(reason)
            return first

    def accepted(self) -> None:
        with self._lock:
            self._quiet.clear()

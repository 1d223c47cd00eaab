"""Observations exactly as the official GraspVLA robot client builds them.

- Images: each view → the official crop (from CameraInfo) → 256×256 cv2 INTER_CUBIC → JPEG at
  quality 75 (PIL, what the client sends on the wire; 0 = off) → decoded again. The model's
  server side (letterbox to 224) runs in `graspvla_ros.model`.
- View pair: the two views' stamps ≤ `max_skew` apart and the older ≤ `max_age` old.
- Proprio: 4 rows [prev, prev, prev, current]; current = the TCP pose at the images' exposure
  stamp (interpolated from the controller's pose stream), prev = the pose `lookback` s earlier
  (the current pose while the episode is younger than that), Euler 'sxyz' as the rotation
  matrix gives it (never unwrapped: roll ≈ ±π at home), gripper = the last COMMANDED state ±1.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from graspvla_ros.chunk import GRIPPER_OPEN, Pose, matrix_to_euler
from graspvla_ros.preprocess import CropWindow, client_view, decode_view, encode_view

PROPRIO_ROWS = 4
LOOKBACK_S = 0.3
DEFAULT_JPEG_QUALITY = 75


class Skip(Exception):
    """A cycle that cannot run, with a short machine-readable `reason` and a human detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def client_image(rgb: np.ndarray, crop: CropWindow | None, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> np.ndarray:
    """One camera image → the 256×256 RGB view the official client sends, as the server decodes
    it (0 = no JPEG). The same bytes as the robot host's model view (`transport: model_view`)."""
    if jpeg_quality <= 0:
        return client_view(rgb, crop)
    return decode_view(encode_view(rgb, crop, jpeg_quality))


@dataclass(frozen=True)
class Frame:
    """One camera image with its exposure stamp and the crop its CameraInfo gives, or (`viewed`)
    the client's view already made on the robot host (`transport: model_view`)."""

    stamp_ns: int
    rgb: np.ndarray
    crop: CropWindow | None = None
    received_ns: int = 0          # when it arrived (for the cycle timings)
    viewed: bool = False          # rgb is the decoded 256×256 model view: no crop, resize or JPEG here

    def client_image(self, jpeg_quality: int) -> np.ndarray:
        return self.rgb if self.viewed else client_image(self.rgb, self.crop, jpeg_quality)


def pick_pair(fronts, sides, now_ns: int, max_skew_s: float, max_age_s: float) -> tuple[Frame, Frame]:
    """The newest front/side pair whose stamps are ≤ max_skew apart, if the older of the two is
    ≤ max_age old; else Skip with the reason (`no_images`, `views_apart`, `stale`)."""
    if not fronts or not sides:
        missing = [n for n, f in (("front", fronts), ("side", sides)) if not f]
        raise Skip("no_images", f"no {' or '.join(missing)} image yet")
    best = None
    for f in fronts:
        for s in sides:
            if abs(f.stamp_ns - s.stamp_ns) <= max_skew_s * 1e9:
                if best is None or min(f.stamp_ns, s.stamp_ns) > min(best[0].stamp_ns, best[1].stamp_ns):
                    best = (f, s)
    if best is None:
        f, s = max(fronts, key=lambda x: x.stamp_ns), max(sides, key=lambda x: x.stamp_ns)
        raise Skip("views_apart", f"newest views are {abs(f.stamp_ns - s.stamp_ns) / 1e6:.0f} ms apart "
                                  f"(max {max_skew_s * 1e3:.0f} ms)")
    age = (now_ns - min(best[0].stamp_ns, best[1].stamp_ns)) / 1e9
    if age > max_age_s:
        raise Skip("stale", f"newest synchronised views are {age * 1e3:.0f} ms old (max {max_age_s * 1e3:.0f} ms)")
    return best


class PoseHistory:
    """The controller's TCP pose stream, kept for `span_s`, interpolated at any stamp inside it
    (linear in position, slerp in rotation). A stamp up to `max_extrapolation_s` after the newest
    sample takes the newest (the stream is 200 Hz; an image may be stamped between samples)."""

    def __init__(self, span_s: float = 3.0, max_extrapolation_s: float = 0.05):
        self.span_ns = int(span_s * 1e9)
        self.max_extrapolation_ns = int(max_extrapolation_s * 1e9)
        self._stamps: deque[int] = deque()
        self._poses: deque[Pose] = deque()

    def add(self, stamp_ns: int, pose: Pose) -> None:
        if self._stamps and stamp_ns <= self._stamps[-1]:
            if stamp_ns < self._stamps[-1]:  # the clock went back (a sim reset): start over
                self._stamps.clear()
                self._poses.clear()
            else:
                return
        self._stamps.append(stamp_ns)
        self._poses.append(pose)
        while self._stamps and self._stamps[0] < stamp_ns - self.span_ns:
            self._stamps.popleft()
            self._poses.popleft()

    @property
    def oldest_ns(self) -> int | None:
        return self._stamps[0] if self._stamps else None

    @property
    def newest(self) -> tuple[int, Pose] | None:
        return (self._stamps[-1], self._poses[-1]) if self._stamps else None

    def at(self, stamp_ns: int) -> Pose:
        """The pose at `stamp_ns`; Skip(`no_pose`) outside the history."""
        if not self._stamps:
            raise Skip("no_pose", "no TCP pose from the controller yet")
        stamps = list(self._stamps)
        if stamp_ns > stamps[-1]:
            if stamp_ns - stamps[-1] > self.max_extrapolation_ns:
                raise Skip("no_pose", f"the newest TCP pose is {(stamp_ns - stamps[-1]) / 1e6:.0f} ms older "
                                      "than the images")
            return self._poses[-1]
        if stamp_ns < stamps[0]:
            raise Skip("no_pose", f"the images are {(stamps[0] - stamp_ns) / 1e6:.0f} ms older than the pose history")
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            return self._poses[i]
        t0, t1 = stamps[i - 1], stamps[i]
        a, b = self._poses[i - 1], self._poses[i]
        w = (stamp_ns - t0) / (t1 - t0)
        rot = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a.rotation, b.rotation])))(w).as_matrix()
        return Pose((1 - w) * a.position + w * b.position, rot)


class GripperHistory:
    """The last commanded gripper state (+1 open, −1 closed) over time; open before any command."""

    def __init__(self, initial: float = GRIPPER_OPEN):
        self.initial = initial
        self._events: list[tuple[int, float]] = []

    def add(self, stamp_ns: int, state: float) -> None:
        if self._events and stamp_ns < self._events[-1][0]:
            self._events = [e for e in self._events if e[0] <= stamp_ns]
        if not self._events or self._events[-1][1] != state:
            self._events.append((stamp_ns, float(state)))
        del self._events[:-64]

    def at(self, stamp_ns: int) -> float:
        state = self.initial
        for t, s in self._events:
            if t > stamp_ns:
                break
            state = s
        return state

    @property
    def last(self) -> float:
        return self._events[-1][1] if self._events else self.initial

    def since(self) -> int | None:
        """When the current state was commanded (None: never)."""
        return self._events[-1][0] if self._events else None


def proprio_row(pose: Pose, gripper: float) -> np.ndarray:
    """x, y, z, roll, pitch, yaw ('sxyz', as the matrix gives it), gripper ±1."""
    return np.array([*pose.position, *matrix_to_euler(pose.rotation), gripper], dtype=np.float64)


@dataclass(frozen=True)
class Observation:
    """What one cycle sends to a backend: the official client's request, plus the anchor."""

    stamp_ns: int                 # the images' exposure time (the front view's)
    instruction: str              # the task text the model reads ("pick up red cube")
    target: str                   # the object named in it ("red cube")
    front: np.ndarray             # 256×256×3 uint8 RGB, after the client's crop/resize/JPEG
    side: np.ndarray
    proprio: np.ndarray           # (4, 7) [prev, prev, prev, current]
    anchor: Pose                  # the TCP pose at stamp_ns (the chunk's anchor)
    gripper: float                # the last commanded gripper state at stamp_ns (±1)
    episode: int = 0
    extra: dict = field(default_factory=dict)


def proprio_rows(stamp_ns: int, poses: PoseHistory, gripper: GripperHistory, episode_start_ns: int,
                 lookback_s: float = LOOKBACK_S) -> tuple[np.ndarray, Pose]:
    """(4, 7) [prev, prev, prev, current] rows for images exposed at `stamp_ns`, and the
    current pose (the chunk's anchor)."""
    current = poses.at(stamp_ns)
    cur_row = proprio_row(current, gripper.at(stamp_ns))
    prev_stamp = stamp_ns - int(lookback_s * 1e9)
    prev_row = cur_row if prev_stamp < episode_start_ns else proprio_row(poses.at(prev_stamp), gripper.at(prev_stamp))
    return np.stack([prev_row] * (PROPRIO_ROWS - 1) + [cur_row]), current


class CommandedHistory:
    """The waypoints the controller commanded (official_blocking announces each one), newest last."""

    def __init__(self, keep: int = 64):
        self._entries: deque[tuple[int, Pose]] = deque(maxlen=keep)

    def add(self, stamp_ns: int, pose: Pose) -> None:
        if self._entries and stamp_ns < self._entries[-1][0]:
            self._entries.clear()  # the clock went back (a sim reset): start over
        self._entries.append((stamp_ns, pose))

    def between(self, start_ns: int, end_ns: int) -> list[tuple[int, Pose]]:
        return [(t, p) for t, p in self._entries if start_ns <= t <= end_ns]


def commanded_rows(stamp_ns: int, commanded: list[tuple[int, Pose]], start: tuple[int, Pose],
                   gripper: GripperHistory, back: int = PROPRIO_ROWS - 1) -> tuple[np.ndarray, Pose]:
    """The official BLOCKING client's proprio: its history is the episode's start pose followed by
    every waypoint it commanded since (`commanded`, up to the images' stamp); the current row is
    the last one, the history rows the one `back` waypoints before it (0.3 s at 0.1 s a waypoint;
    the start pose while there are fewer), and the chunk chains from the last commanded waypoint.
    Each row's gripper is the commanded state at its time; the current row's at the images'."""
    history = [start, *commanded]
    (_, current), (t_prev, prev) = history[-1], history[max(0, len(history) - 1 - back)]
    cur_row = proprio_row(current, gripper.at(stamp_ns))
    prev_row = proprio_row(prev, gripper.at(t_prev)) if len(history) > 1 else cur_row
    return np.stack([prev_row] * (PROPRIO_ROWS - 1) + [cur_row]), current


def observation_from(front: Frame, side: Frame, rows: np.ndarray, anchor: Pose, instruction: str, target: str,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY, episode: int = 0) -> Observation:
    """The images' part (crop, resize, JPEG: the slow part) around already computed proprio rows."""
    return Observation(front.stamp_ns, instruction, target, front.client_image(jpeg_quality),
                       side.client_image(jpeg_quality), rows, anchor, float(rows[-1, 6]), episode)

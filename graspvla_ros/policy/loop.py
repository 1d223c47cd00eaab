"""The policy's cycle, ROS-free: the one code policy_node and `graspvla replay-test` run.

policy_node's callbacks hand what arrives to a `PolicyLoop` (`add_frame`, `add_pose`,
`add_gripper`, `set_width`, `set_controller_state`, `instruct`); its worker thread is `run`,
which calls `cycle(now_ns)` at most `rate_hz` times a second: the newest synchronised view pair
→ the official client's observation → the backend → an ActionChunk, returned as a `Cycle` with
everything the node publishes about it, or a `Skip` raised with the reason. Replay puts one
recorded cycle's inputs into a loop of its own and calls `cycle` once, with the recorded seed.

Invariants:
- Inputs, the episode and the settings change under one lock; the backend runs outside it, so
  callbacks never wait for inference.
- A chunk is published (`publish`) under that lock and only while the episode it was computed
  for still runs: an instruction that ends or replaces the episode takes the same lock, so
  once it has returned no chunk of the old episode reaches the controller.
- Chunk stamps grow: a pair is used only if both its views are newer than the last pair's, so
  the model never sees a moment twice and the controller never gets an older chunk after a newer one.
- Each chunk carries (episode, seq): the episode's id and its count of published chunks, 1 up,
  set under the lock it is published under (the controller's control.order refuses any other order).
- The proprio's gripper is the last COMMANDED state: the controller's reports once it has sent
  one; until then the gripper commands of the loop's own chunks, at their due time.
- The anchor is the TCP pose measured at the front view's exposure, interpolated between the
  two samples around it: a cycle whose views are newer than the newest pose waits for the next
  sample (up to 50 ms after the exposure; after that the newest sample is taken).
- `rate_hz` is a cap, not a clock: a cycle starts no sooner than 1/rate_hz after the previous
  one started, and as soon as new views allow after that.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.interfaces import VIEWS, ControllerState
from graspvla_ros.latency import POLICY_STAGES, LatencyWindow
from graspvla_ros.policy.backend import Backend, PolicyOutput
from graspvla_ros.policy.episode import Episode, Home, Pick, Stop
from graspvla_ros.policy.observation import (CommandedHistory, Frame, GripperHistory, Observation, PoseHistory, Skip,
                                             commanded_rows, observation_from, pick_pair, proprio_rows)
from graspvla_ros.policy.settings import PolicySettings
from graspvla_ros.settings import params

__all__ = ["BUSY_STATES", "LIVE", "QUIET_SKIPS", "VIEWS", "Cycle", "PolicyLoop", "Skip"]

FRAMES_KEPT = 4         # per view: enough to pair views that arrive a frame apart
STALLED_S = 2.0         # no new view pair for this long: the cameras stalled (not just between frames)
# Controller states in which a chunk would be refused or is pointless: the cycle is skipped.
BUSY_STATES = frozenset({ControllerState.GRIPPER, ControllerState.HOMING, ControllerState.ESTOPPED,
                         ControllerState.USER_STOPPED, ControllerState.DISCONNECTED, ControllerState.FAULT})
# Skips that are part of normal running (waiting for the next frame; an episode that ended
# just before or while the backend ran), counted but not worth a warning.
QUIET_SKIPS = frozenset({"no_new_images", "no_episode", "episode_ended"})
LIVE = frozenset(p.name for p in params(PolicySettings) if p.live)
IDLE = {"episode": 0, "instruction": "", "target": "", "phase": "idle", "reason": "", "cycles": 0}


@dataclass(frozen=True)
class Cycle:
    """One cycle's answer: the chunk (already published when the loop has `publish`) and what
    the node publishes about it."""

    chunk: ActionChunk
    observation: Observation
    output: PolicyOutput
    timings: dict[str, float]     # ms after the exposure (node clock) and ms spent (wall clock)
    replay: dict[str, Any]        # the inputs replay-test needs to run the cycle again

    def report(self) -> dict[str, Any]:
        """The /graspvla/debug/timings message (docs/interfaces.md)."""
        return {"episode": self.observation.episode, "seq": self.chunk.seq, "stamp_ns": self.observation.stamp_ns,
                **self.timings,
                "seed": self.output.seed, "tokens": self.output.tokens, **self.replay}


class PolicyLoop:
    """The inputs of the policy, its episode and its cycle. `clock()` is the node's clock (ns:
    the one image, pose and episode stamps are on); `publish(chunk)` sends a chunk on."""

    def __init__(self, backend: Backend, settings: PolicySettings = PolicySettings(),
                 clock: Callable[[], int] = time.monotonic_ns, publish: Callable[[ActionChunk], None] | None = None):
        self.backend = backend
        self._settings = settings
        self._clock = clock
        self._publish = publish
        self._lock = threading.Lock()
        self._new_input = threading.Condition(self._lock)   # views, an episode, stop: the worker may go on
        self._retimed = threading.Condition(self._lock)     # settings, stop: the rate cap's wait changes
        self._pose_arrived = threading.Condition(self._lock)  # a TCP pose: a pending anchor may be there
        self._frames: dict[str, deque[Frame]] = {v: deque(maxlen=FRAMES_KEPT) for v in VIEWS}
        self._poses = PoseHistory()
        self._commanded = CommandedHistory()
        self._start: tuple[int, Pose] | None = None  # the episode's first measured pose (history: commanded)
        self._gripper = GripperHistory()
        self._gripper_reported = False
        self._width: float | None = None   # measured finger width, None until the controller says
        self._controller_state = ""
        self._episode: Episode | None = None
        self._episodes = 0
        self._last_pair: tuple[int, int] | None = None
        self._stopped = False
        self.inferring = False   # the backend runs now (the node counts image callbacks meanwhile)
        # the robot host's clock minus this one's (policy.link.ClockOffset; 0 on one host): stamps
        # from there are compared with `now + clock_offset_ns`, never with this host's clock alone
        self.clock_offset_ns = 0
        self.latency = LatencyWindow(POLICY_STAGES, settings.latency_window)   # ms after the exposure, robot's clock
        self.inference_s = 0.0   # the backend's total wall time, for the diagnostics

    @property
    def settings(self) -> PolicySettings:
        return self._settings

    # --- inputs ---------------------------------------------------------------------------
    def add_frame(self, view: str, frame: Frame) -> None:
        """A camera image of `view` ("front" or "side") with its exposure stamp and crop."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r} (views: {', '.join(VIEWS)})")
        with self._lock:
            self._frames[view].append(frame)
            self._new_input.notify_all()

    def add_pose(self, stamp_ns: int, pose: Pose) -> None:
        """The TCP pose the controller measured at `stamp_ns`."""
        with self._lock:
            self._poses.add(stamp_ns, pose)
            self._pose_arrived.notify_all()

    def add_commanded(self, stamp_ns: int, pose: Pose) -> None:
        """A waypoint the controller commanded at `stamp_ns` (official_blocking announces each)."""
        with self._lock:
            self._commanded.add(stamp_ns, pose)

    def add_gripper(self, stamp_ns: int, command: float) -> None:
        """The gripper state the controller last commanded (±1), known since `stamp_ns`."""
        with self._lock:
            self._gripper_reported = True
            self._gripper.add(stamp_ns, float(command))

    def set_width(self, width: float) -> None:
        """The measured finger width (m): an episode succeeds only on a grasp that holds something."""
        self._width = float(width)

    def set_controller_state(self, state: str) -> None:
        with self._lock:
            self._controller_state = state

    def update(self, **changes: Any) -> PolicySettings:
        """Apply live settings (`LIVE`) while running; ValueError with the reason for another
        setting or a bad value, and nothing changes then."""
        fixed = sorted(set(changes) - LIVE)
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot change while the policy runs (live: {', '.join(sorted(LIVE))})")
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **changes)
            if "episode_timeout" in changes and self._episode is not None:
                self._episode.timeout_s = self._settings.episode_timeout
            self._retimed.notify_all()
            return self._settings

    # --- episodes -------------------------------------------------------------------------
    def instruct(self, command: Pick | Stop | Home, text: str, now_ns: int) -> tuple[Episode | None, Episode | None]:
        """A parsed instruction `text` at `now_ns`: the running episode ends (`replaced` by a
        pick, `stopped`, `homed`) and a pick starts a new one (the backend is reset).
        Returns (the episode it ended, the one it started), None where none."""
        phases = {Pick: "replaced", Stop: "stopped", Home: "homed"}
        if type(command) not in phases:
            raise ValueError(f"not an instruction the policy runs: {command!r}")
        with self._lock:
            ended = self._episode
            if ended is not None and not ended.end(phases[type(command)], f"instruction {text!r}"):
                ended = None   # it had ended before
            started = None
            if isinstance(command, Pick):
                self._episodes += 1
                s = self._settings
                started = self._episode = Episode(self._episodes, command.target, command.task, now_ns,
                                                  s.episode_timeout, s.lift_success, s.min_grasp_width)
                self._start = None
                self.backend.reset()
                self._new_input.notify_all()
            return ended, started

    def end_episode(self, phase: str, reason: str) -> Episode | None:
        """End the running episode from outside (the robot link lost); the episode if this ended it."""
        with self._lock:
            ep = self._episode
            return ep if ep is not None and ep.end(phase, reason) else None

    def check_episode(self, now_ns: int) -> Episode | None:
        """Success or timeout of the running episode from the newest TCP pose, the commanded
        gripper and the measured width; the episode if it ended or its reason changed."""
        with self._lock:
            ep = self._episode
            if ep is None or not ep.running:
                return None
            newest = self._poses.newest
            tcp_z = None if newest is None else float(newest[1].position[2])
            return ep if ep.update(now_ns, tcp_z, self._gripper.at(now_ns), self._width) else None

    def status(self) -> dict[str, Any]:
        """The episode's status (phase `idle` before the first)."""
        with self._lock:
            return self._episode.status() if self._episode is not None else dict(IDLE)

    # --- the cycle ------------------------------------------------------------------------
    def cycle(self, now_ns: int, seed: int | None = None) -> Cycle:
        """One cycle starting at `now_ns` (the clock's now; replay: the recorded start), with the
        flow noise `seed` (None: the backend's own; replay: the recorded one). Raises Skip when
        it cannot run or its chunk must not be used."""
        wall_start, cpu_start = time.perf_counter(), time.thread_time()
        offset = self.clock_offset_ns
        robot_now = now_ns + offset   # the robot host's clock, which the images and poses are stamped on
        with self._lock:
            s, ep = self._settings, self._episode
            if ep is None or not ep.running:
                raise Skip("no_episode", "no episode is running")
            if self._controller_state in BUSY_STATES:
                raise Skip("controller_busy", f"controller is {self._controller_state}")
            last_front, last_side = self._last_pair or (-1, -1)
            fronts = [f for f in self._frames["front"] if f.stamp_ns > last_front]
            sides = [f for f in self._frames["side"] if f.stamp_ns > last_side]
            if self._last_pair and not (fronts and sides):
                waited = (robot_now - max(self._last_pair)) / 1e9
                raise Skip("no_new_images" if waited < STALLED_S else "cameras_stalled",
                           f"no new view pair for {waited:.1f} s")
            front, side = pick_pair(fronts, sides, robot_now, s.max_view_skew, s.max_image_age)
            newest = self._poses.newest
            if newest is not None and newest[0] < front.stamp_ns \
                    and robot_now - front.stamp_ns < self._poses.max_extrapolation_ns:
                raise Skip("pose_pending", "the TCP pose at the views' exposure has not arrived yet")
            if s.history == "commanded":
                if self._start is None:  # the official blocking client starts its history with the measured pose
                    self._start = (ep.start_ns, self._poses.at(front.stamp_ns))
                rows, anchor = commanded_rows(front.stamp_ns, self._commanded.between(ep.start_ns, front.stamp_ns),
                                              self._start, self._gripper)
            else:
                rows, anchor = proprio_rows(front.stamp_ns, self._poses, self._gripper, ep.start_ns, s.proprio_lookback)
            newest_pose_ns = self._poses.newest[0]
            self._last_pair = (front.stamp_ns, side.stamp_ns)
        obs = observation_from(front, side, rows, anchor, ep.task, ep.target, s.jpeg_quality, ep.id)
        infer_start, wall_infer_start, cpu_infer_start = self._clock(), time.perf_counter(), time.thread_time()
        self.inferring = True
        try:
            out = self.backend.infer(obs, seed)
        finally:
            self.inferring = False
            wall_infer_end, cpu_infer_end = time.perf_counter(), time.thread_time()
            self.inference_s += wall_infer_end - wall_infer_start
        infer_end = self._clock()
        with self._lock:
            if self._episode is not ep or not ep.running:
                raise Skip("episode_ended", f"episode {ep.id} ended while the backend ran: its chunk is dropped")
            chunk = ActionChunk(obs.stamp_ns, s.waypoint_dt, s.base_frame, out.waypoints, obs.anchor, obs.gripper,
                                episode=ep.id, seq=ep.cycles + 1)
            if self._publish is not None:
                self._publish(chunk)
            published = self._clock()
            # the loop's own work this cycle (wall clock): view pair → observation, chunk → published
            overhead_s = (wall_infer_start - wall_start) + (time.perf_counter() - wall_infer_end)
            # the same on this thread's CPU clock: its work alone, without the waits for the GIL and a CPU
            overhead_cpu_s = (cpu_infer_start - cpu_start) + (time.thread_time() - cpu_infer_end)
            ep.cycles += 1
            if not self._gripper_reported:
                for w in chunk.targets:
                    if w.gripper != 0.0:
                        self._gripper.add(w.stamp_ns, w.gripper)
        ms = lambda t: round((t + offset - obs.stamp_ns) / 1e6, 2)  # noqa: E731  (on the robot host's clock)
        chain = {"received": ms(max(front.received_ns, side.received_ns)), "inference_start": ms(infer_start),
                 "inference_end": ms(infer_end), "published": ms(published)}
        for stage, value in chain.items():
            self.latency.add(stage, value)
        timings = {"cycle_start_ms": ms(now_ns), **{f"{k}_ms": v for k, v in chain.items()},
                   "overhead_ms": round(overhead_s * 1e3, 2), "overhead_cpu_ms": round(overhead_cpu_s * 1e3, 2),
                   "clock_offset_ms": round(offset / 1e6, 2),
                   **{f"{k}_ms": round(v * 1e3, 2) for k, v in out.timings.items()}}
        replay = {"side_stamp_ns": side.stamp_ns, "newest_pose_ns": newest_pose_ns, "episode_start_ns": ep.start_ns,
                  "gripper": [float(rows[0, 6]), float(rows[-1, 6])]}
        return Cycle(chunk, obs, out, timings, replay)

    # --- the worker -----------------------------------------------------------------------
    def run(self, on_cycle: Callable[[Cycle], None], on_skip: Callable[[Skip], None],
            alive: Callable[[], bool] = lambda: True) -> None:
        """Cycle while an episode runs, until `stop()` (or `alive()` turns false): `on_cycle`
        gets each answer, `on_skip` each skip. A failure of the backend or of `on_cycle` is a
        skip (`backend_error`): it must not end the loop; the controller holds meanwhile."""
        last_start: float | None = None
        while alive():
            with self._lock:
                if self._stopped:
                    return
                if self._episode is None or not self._episode.running:
                    self._new_input.wait(0.2)
                    continue
                period = 1.0 / self._settings.rate_hz
                if last_start is not None and time.monotonic() < last_start + period:
                    self._retimed.wait(last_start + period - time.monotonic())
                    continue   # the settings may have changed meanwhile: look again
            started = time.monotonic()
            try:
                on_cycle(self.cycle(self._clock()))
            except Skip as skip:
                if skip.reason == "pose_pending":   # a wait of a few ms for the anchor, not a skip
                    with self._lock:
                        if not self._stopped:
                            self._pose_arrived.wait(0.01)
                    continue
                on_skip(skip)
                if skip.reason == "no_new_images":   # wait for a view, not for the rate cap
                    with self._lock:
                        if not self._stopped:
                            self._new_input.wait(period)
                    continue
            except Exception as err:
                on_skip(Skip("backend_error", f"{type(err).__name__}: {err}"))
            last_start = started

    def stop(self) -> None:
        """End `run` (it returns once the cycle under way, if any, is over)."""
        with self._lock:
            self._stopped = True
            self._new_input.notify_all()
            self._retimed.notify_all()
            self._pose_arrived.notify_all()

"""How a chunk becomes arm motion: one class per execution strategy.

- `Streaming` (default): steps already due are dropped (latency compensation, never dropping a
  gripper change); the rest become ONE waypoint motion that passes each target at its due time
  with the path's velocity, replaced asynchronously by the next chunk (no stop between chunks).
- `OfficialBlocking`: the official blocking client: each waypoint in turn, ≤ step_timeout toward
  step_tolerance, then ≤ settle_timeout to settle_tolerance at the chunk's end; chains from the
  last COMMANDED waypoint, steps clipped at 0.01 m; no latency compensation. The arm waits for
  the model: a chunk whose images were taken before the last job ended is refused (`moving`).
- `OfficialNonblocking`: the chunk's last waypoint at once, steps clipped at 0.02 m.

In every strategy a gripper change is gated by position: the arm goes to the waypoint that
carries it and comes to rest there, holds while the fingers move, and only then goes on with
the rest of the chunk (`ChunkStrategy.execute`).
"""
from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from graspvla_ros.chunk import ActionChunk, Pose, Waypoint
from graspvla_ros.control import planner
from graspvla_ros.control.gripper import GripperResult
from graspvla_ros.control.state import ControllerState
from graspvla_ros.safety import ChunkRejected

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from graspvla_ros.control.arm_controller import ArmController


class Strategy(str, enum.Enum):
    STREAMING = "streaming"
    OFFICIAL_BLOCKING = "official_blocking"
    OFFICIAL_NONBLOCKING = "official_nonblocking"


class ChunkStrategy:
    """One chunk, start to end, on the worker thread."""

    strategy: Strategy
    max_step: float | None = None  # m, the strategy's own per-step clip (None: the safety limit's)

    def admit(self, ctl: ArmController, chunk: ActionChunk) -> None:
        """Raise ChunkRejected if this strategy refuses the chunk (under the state lock)."""

    def due(self, chunk: ActionChunk, now_ns: int) -> list[Waypoint]:
        return list(chunk.targets)

    def start(self, ctl: ArmController, here: Pose) -> Pose:
        return here

    def execute(self, ctl: ArmController, chunk: ActionChunk, epoch: int) -> None:
        due = self.due(chunk, ctl.clock())
        if not due:
            if ctl.rejections.record("all_steps_passed"):
                log.warning("chunk dropped: every step of the chunk is already due")
            return
        waypoints = ctl.limits.clip(self.start(ctl, ctl.read_state().ee), due, self.max_step)
        segments = planner.split_at_gripper(waypoints, ctl.gripper_command)
        for k, segment in enumerate(segments):
            path = segment.waypoints
            if k > 0:  # the rest of the chunk, after a gripper change: due from now on
                path = planner.retime(path, ctl.clock(), chunk.dt)
            changing = segment.gripper is not None
            with ctl.gate.lock:
                ctl.gate.check(epoch)
                ctl.machine.set(ControllerState.GRIPPER if changing else ControllerState.RUNNING,
                                "gripper change under way" if changing else "chunk accepted")
            here = ctl.read_state().ee
            if path and not all(planner.reached(here, w.pose, 1e-4, 1e-3) for w in path):
                # (already there: franky's planner fails on zero-length motions, -111)
                self.move(ctl, epoch, path, here, last=k == len(segments) - 1, gripper=changing)
            if k == 0:   # the arm's motion follows this chunk from now on (the latency chain's last stage)
                ctl.latency.add("motion_updated", (ctl.clock() - chunk.stamp_ns) / 1e6)
            if changing:
                change_gripper(ctl, epoch, segment.gripper)

    def move(self, ctl: ArmController, epoch: int, path: tuple[Waypoint, ...], here: Pose, last: bool,
             gripper: bool) -> None:
        """Move along `path` from `here`; when `gripper`, come to rest at its end first."""
        raise NotImplementedError


class Streaming(ChunkStrategy):
    strategy = Strategy.STREAMING

    def due(self, chunk: ActionChunk, now_ns: int) -> list[Waypoint]:
        return planner.latency_compensate(chunk.targets, now_ns)

    def move(self, ctl, epoch, path, here, last, gripper):
        setpoints = planner.streaming_setpoints(here, path, ctl.clock(), ctl.arm.tcp_offset, ctl.arm.twist_limits)
        ctl.gate.issue(epoch, ctl.arm.move_through, setpoints)
        if gripper:
            reach = max(0.0, (path[-1].stamp_ns - ctl.clock()) * 1e-9) + ctl.timing.reach_timeout
            ctl.gate.arrive(epoch, path[-1].pose, reach, lambda: ctl.read_state().ee)


class OfficialNonblocking(ChunkStrategy):
    strategy = Strategy.OFFICIAL_NONBLOCKING
    max_step = 0.02

    def move(self, ctl, epoch, path, here, last, gripper):
        ctl.gate.issue(epoch, ctl.arm.move_to, path[-1].pose)
        if gripper:
            ctl.gate.arrive(epoch, path[-1].pose, 2.0, lambda: ctl.read_state().ee)


class OfficialBlocking(ChunkStrategy):
    strategy = Strategy.OFFICIAL_BLOCKING
    max_step = 0.01

    def admit(self, ctl, chunk):
        if chunk.stamp_ns < ctl.still_since_ns:
            raise ChunkRejected("moving", "official_blocking: its images were taken while the arm moved")

    def start(self, ctl, here):
        last = ctl.last_commanded
        if last is not None and planner.reached(here, last, ctl.limits.max_step_translation,
                                                ctl.limits.max_step_rotation):
            return last  # chain from the last commanded target, unless the arm was moved away since
        return here

    def move(self, ctl, epoch, path, here, last, gripper):
        # Paced as the official client: it checks arrival, then again one poll period
        # (= step_timeout) later, and goes on either way: ~0.1 s per waypoint.
        t = ctl.timing
        for w in path:
            ctl.gate.issue(epoch, ctl.arm.move_to, w.pose)
            ctl.last_commanded = w.pose  # the next chunk chains from it; the policy's history reads it
            ctl.machine.notify(ctl.on_commanded, w.pose)
            ctl.gate.wait(epoch, lambda: planner.reached(ctl.read_state().ee, w.pose, *t.step_tolerance),
                          t.step_timeout, poll=t.step_timeout)
        goal = path[-1].pose
        if gripper:
            ctl.gate.arrive(epoch, goal, t.reach_timeout, lambda: ctl.read_state().ee)
        elif last:
            ctl.gate.wait(epoch, lambda: planner.reached(ctl.read_state().ee, goal, *t.settle_tolerance),
                          t.settle_timeout, poll=t.step_timeout)


def change_gripper(ctl: ArmController, epoch: int, command: float, force: bool = False) -> GripperResult:
    """Make a gripper change with the arm held. The commanded state is announced when the
    command is sent (as the official client records it), so the next observation has it; a
    failure or a timeout is counted and said, and the chunk goes on."""
    ctl.gate.check(epoch)
    fingers = ctl.connection.fingers
    if command == fingers.commanded and not force:
        return GripperResult(True)
    ctl.machine.notify(ctl.on_gripper_command, command)
    result = fingers.run(command, ctl.settings.gripper)
    what = "close" if command < 0 else "open"
    if not result.ok:
        ctl.gripper_failures += 1
        log.warning("gripper %s failed: %s", what, result.detail)
    with ctl.gate.lock:
        ctl.gate.check(epoch)
        ctl.last_chunk_ns = ctl.clock()  # the gripper time does not count toward hold_timeout
        if ctl.machine.state == ControllerState.GRIPPER:
            ctl.machine.set(ControllerState.RUNNING, "gripper change done" if result.ok else
                            f"gripper {what} failed ({result.detail}); going on")
    return result


STRATEGIES = {s.strategy: s for s in (Streaming, OfficialBlocking, OfficialNonblocking)}


def create(name: str | Strategy) -> ChunkStrategy:
    return STRATEGIES[Strategy(name)]()

"""Replay regression (pure core): run a recorded episode's cycles again through a backend and
compare each produced chunk with the recorded one.

A bag recorded by `recorder_node` holds what policy_node saw (both views + camera_info, the TCP
pose stream, the commanded gripper, the instruction) and what it answered (the chunks, and per
cycle on `/graspvla/debug/timings`: the seed, the generated tokens, the side view's stamp, the
newest pose it had, the episode start, when the cycle started and the commanded gripper states
of its proprio rows). Each cycle runs again in a `PolicyLoop` of its own, the node's own loop,
given exactly those inputs (images through `image_from_msg` and `crop_from_camera_info`) and the
policy's recorded settings: the same pairing, crop/resize/JPEG and proprio interpolation, so the
same backend gives the same chunk, bit for bit, without DDS or timing.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from graspvla_ros.bag.reader import Bag, BagError
from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.interfaces import (ACTION_CHUNK, DEBUG_TIMINGS, EE_POSE, GRIPPER_COMMAND, INSTRUCTION, VIEWS,
                                     camera_info_topic, camera_topics, image_topic, stamp_ns)
from graspvla_ros.policy import episode as episodes
from graspvla_ros.policy.loop import Cycle, PolicyLoop
from graspvla_ros.policy.observation import Frame, Skip
from graspvla_ros.policy.settings import PolicySettings
from graspvla_ros.preprocess import crop_from_camera_info, image_from_msg
from graspvla_ros.settings import build, params

# the default graph's absolute camera topics, as the recorder writes them
IMAGES = {image_topic(f"/{v}"): v for v in VIEWS}
INFOS = {camera_info_topic(f"/{v}"): v for v in VIEWS}
REQUIRED = (*camera_topics(), EE_POSE, INSTRUCTION, ACTION_CHUNK, DEBUG_TIMINGS)
DEFAULT_ATOL = 1e-4


def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _ns(stamp) -> int:
    return stamp_ns(stamp.sec, stamp.nanosec)


def _pose(position, orientation) -> Pose:
    return Pose.from_xyz_quat([position.x, position.y, position.z],
                              [orientation.x, orientation.y, orientation.z, orientation.w])


@dataclass(frozen=True)
class RecordedCycle:
    """One recorded answer: the chunk as published and the node's notes on how it made it."""

    index: int
    chunk: ActionChunk
    timing: dict
    instruction: str


@dataclass
class Recording:
    """What the replay needs from a bag, read in two passes (the images last, only those used)."""

    bag: Bag
    cycles: list[RecordedCycle]
    poses: list[tuple[int, Pose]]
    gripper: list[tuple[int, float]]
    frames: dict[tuple[str, int], Frame] = field(default_factory=dict)   # (view, stamp) → frame
    parameters: dict = field(default_factory=dict)

    @classmethod
    def load(cls, bag: Bag) -> Recording:
        missing = [t for t in REQUIRED if t not in bag.topics or not bag.topics[t].count]
        if missing:
            raise BagError(f"{bag.path}: cannot replay: no messages on {', '.join(missing)} "
                           f"(it has: {', '.join(sorted(t for t in bag.topics if bag.topics[t].count)) or 'none'})")
        store = _store()
        poses, gripper, chunks, timings, instructions = [], [], [], {}, []
        first = [EE_POSE, INSTRUCTION, ACTION_CHUNK, DEBUG_TIMINGS]
        first += [GRIPPER_COMMAND] if GRIPPER_COMMAND in bag.topics else []
        for msg in bag.messages(first):
            m = store.deserialize_cdr(msg.data, msg.msgtype)
            if msg.topic == EE_POSE:
                poses.append((_ns(m.header.stamp), _pose(m.pose.position, m.pose.orientation)))
            elif msg.topic == GRIPPER_COMMAND:
                gripper.append((msg.timestamp, float(m.data)))
            elif msg.topic == INSTRUCTION:
                instructions.append(m.data)
            elif msg.topic == ACTION_CHUNK:
                chunks.append((_recorded_chunk(m), instructions[-1] if instructions else ""))
            else:
                t = json.loads(m.data)
                timings[int(t.get("stamp_ns", -1))] = t
        cycles = []
        for chunk, instruction in chunks:
            t = timings.get(chunk.stamp_ns)
            if t is None or t.get("seed") is None or "side_stamp_ns" not in t:
                raise BagError(f"{bag.path}: the chunk stamped {chunk.stamp_ns} has no replay notes (seed, view "
                               f"stamps) on {DEBUG_TIMINGS}: recorded from a backend without a seed, or an older "
                               "policy_node")
            if not instruction:
                raise BagError(f"{bag.path}: the chunk stamped {chunk.stamp_ns} came before any instruction in the bag")
            cycles.append(RecordedCycle(len(cycles), chunk, t, instruction))
        rec = cls(bag, cycles, poses, gripper, parameters=dict(bag.episode.get("parameters") or {}))
        rec._load_frames(store)
        return rec

    def _load_frames(self, store) -> None:
        """The images the cycles used, each with the crop its view's latest camera_info gave."""
        wanted = {("front", c.chunk.stamp_ns) for c in self.cycles} | {
            ("side", int(c.timing["side_stamp_ns"])) for c in self.cycles}
        crops = {}
        for msg in self.bag.messages([*IMAGES, *INFOS]):
            if msg.topic in INFOS:
                crops[INFOS[msg.topic]] = crop_from_camera_info(store.deserialize_cdr(msg.data, msg.msgtype))
                continue
            view = IMAGES[msg.topic]
            m = store.deserialize_cdr(msg.data, msg.msgtype)
            key = (view, _ns(m.header.stamp))
            if key in wanted and key not in self.frames:
                self.frames[key] = Frame(key[1], image_from_msg(m), crops.get(view), msg.timestamp)

    def settings(self, cycle: RecordedCycle) -> PolicySettings:
        """The policy's settings as recorded in the episode metadata (defaults where the bag has
        none), with the recorded chunk's waypoint spacing and frame."""
        known = {p.name for p in params(PolicySettings)}
        recorded = {k: v for k, v in self.parameters.items() if k in known}
        return build(PolicySettings, {**recorded, "waypoint_dt": cycle.chunk.dt, "base_frame": cycle.chunk.frame_id})

    def rerun(self, cycle: RecordedCycle, backend) -> Cycle:
        """The cycle run again in a PolicyLoop of its own holding what the node had then: the
        two views, the TCP poses up to the newest it had, the commanded gripper states of its
        proprio rows, the episode from its recorded start; at the recorded cycle start, with the
        recorded seed. Skip where the bag does not hold the inputs."""
        t = cycle.timing
        command = episodes.parse(cycle.instruction)
        if not isinstance(command, episodes.Pick):
            raise BagError(f"{self.bag.path}: cycle {cycle.index} answered {cycle.instruction!r}, not a pick instruction")
        front = self.frames.get(("front", cycle.chunk.stamp_ns))
        side = self.frames.get(("side", int(t["side_stamp_ns"])))
        if front is None or side is None:  # an episode bag starts at the instruction: older views are not in it
            raise Skip("images_not_in_bag", "the views it answered were taken before the bag began")
        loop = PolicyLoop(backend, self.settings(cycle))
        loop.add_frame("front", front)
        loop.add_frame("side", side)
        for stamp, pose in self.poses:
            if stamp <= t["newest_pose_ns"]:
                loop.add_pose(stamp, pose)
        if "gripper" in t:   # the states the node had (it knows them by its own receipt time, not the bag's)
            previous, current = t["gripper"]
            loop.add_gripper(front.stamp_ns - int(loop.settings.proprio_lookback * 1e9), previous)
            loop.add_gripper(front.stamp_ns, current)
        else:
            for stamp, state in self.gripper:
                loop.add_gripper(stamp, state)
        loop.instruct(command, cycle.instruction, int(t["episode_start_ns"]))
        # bags from before cycle_start_ms was recorded: judge the pair's age at its exposure
        start_ns = cycle.chunk.stamp_ns + round(float(t.get("cycle_start_ms", 0.0)) * 1e6)
        return loop.cycle(start_ns, seed=int(t["seed"]))


def _recorded_chunk(msg) -> ActionChunk:
    """The chunk a recorded MultiDOFJointTrajectory carries (encoding: docs/interfaces.md)."""
    points = msg.points
    if len(points) < 2 or any(len(p.transforms) != 2 for p in points):
        raise BagError(f"a recorded {ACTION_CHUNK} message is not a chunk ({len(points)} points)")
    pose = lambda tr: _pose(tr.translation, tr.rotation)  # noqa: E731
    dt = (_ns(points[1].time_from_start) - _ns(points[0].time_from_start)) * 1e-9
    return ActionChunk.from_targets(_ns(msg.header.stamp), dt, msg.header.frame_id, pose(points[0].transforms[0]),
                                    [pose(p.transforms[0]) for p in points[1:]],
                                    [float(p.transforms[1].translation.x) for p in points[1:]],
                                    float(points[0].transforms[1].translation.x))


@dataclass(frozen=True)
class CycleResult:
    index: int
    stamp_ns: int
    seed: int
    tokens_equal: bool | None      # None: the bag or the backend has no tokens
    max_xyz: float                 # m, anchor and targets
    max_euler: float               # rad, wrapped to ±π
    max_gripper: float
    recorded_ms: float
    replayed_ms: float
    skipped: str = ""              # why the cycle could not be rebuilt from the bag (not compared)

    def within(self, atol: float) -> bool:
        return bool(self.skipped) or (self.tokens_equal is not False and
                                      max(self.max_xyz, self.max_euler, self.max_gripper) <= atol)


def compare(recorded: ActionChunk, produced: ActionChunk) -> tuple[float, float, float]:
    """Max |Δ| of xyz, Euler 'sxyz' (wrapped) and gripper over the anchor and every target."""
    if len(recorded.targets) != len(produced.targets):
        raise ValueError(f"the backend makes {len(produced.targets)}-waypoint chunks, the bag has "
                         f"{len(recorded.targets)}: a checkpoint of another model shape")
    a = [(recorded.anchor, recorded.anchor_gripper)] + [(w.pose, w.gripper) for w in recorded.targets]
    b = [(produced.anchor, produced.anchor_gripper)] + [(w.pose, w.gripper) for w in produced.targets]
    xyz = max(float(np.abs(p.position - q.position).max()) for (p, _), (q, _) in zip(a, b))
    euler = max(float(np.abs(np.angle(np.exp(1j * (p.rpy - q.rpy)))).max()) for (p, _), (q, _) in zip(a, b))
    grip = max(abs(g - h) for (_, g), (_, h) in zip(a, b))
    return xyz, euler, grip


def replay(recording: Recording, backend) -> Iterator[CycleResult]:
    """Each recorded cycle run again through `backend` (a GraspVLABackend) with its recorded seed."""
    for cycle in recording.cycles:
        seed, recorded_ms = int(cycle.timing["seed"]), float(cycle.timing.get("model_ms", float("nan")))
        try:
            again = recording.rerun(cycle, backend)
        except Skip as skip:
            yield CycleResult(cycle.index, cycle.chunk.stamp_ns, seed, None, 0.0, 0.0, 0.0, recorded_ms, 0.0,
                              f"{skip.reason}: {skip.detail}")
            continue
        xyz, euler, grip = compare(cycle.chunk, again.chunk)
        recorded_tokens = cycle.timing.get("tokens") or []
        tokens = again.output.tokens
        tokens_equal = (list(recorded_tokens) == list(tokens)) if recorded_tokens and tokens else None
        yield CycleResult(cycle.index, cycle.chunk.stamp_ns, seed, tokens_equal, xyz, euler, grip, recorded_ms,
                          again.timings["model_ms"])


def table_header() -> str:
    return (f"{'cycle':>5} {'stamp s':>10} {'seed':>5} {'tokens':>6} {'max|Δxyz| m':>12} {'max|Δrpy| rad':>13} "
            f"{'max|Δgrip|':>10} {'rec ms':>8} {'replay ms':>9}  ok")


def table_row(r: CycleResult, atol: float) -> str:
    if r.skipped:
        return f"{r.index:>5} {r.stamp_ns / 1e9:>10.3f} {r.seed:>5}  not replayed: {r.skipped}"
    tokens = {True: "same", False: "DIFF", None: "-"}[r.tokens_equal]
    return (f"{r.index:>5} {r.stamp_ns / 1e9:>10.3f} {r.seed:>5} {tokens:>6} {r.max_xyz:>12.2e} {r.max_euler:>13.2e} "
            f"{r.max_gripper:>10.2e} {r.recorded_ms:>8.1f} {r.replayed_ms:>9.1f}  {'ok' if r.within(atol) else 'FAIL'}")

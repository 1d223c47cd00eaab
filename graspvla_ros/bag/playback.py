"""What a player does, without ROS: which messages, under which names, released when.

- `timeline()`: the messages with their due time in seconds after playback starts: original
  relative timing divided by `rate`, from `start` s into the bag, repeated with `loop`.
- `Pacer`: waits for due times on a monotonic clock and keeps the lateness of each release.
- `cycles()`: lock-step: where an observation ends in the bag, for each recorded answer.
"""
from __future__ import annotations

import fnmatch
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from graspvla_ros.bag.reader import Bag, BagError, Message
from graspvla_ros.bag.settings import ANSWER_TOPIC, OBSERVATION_TOPICS
from graspvla_ros.interfaces import stamp_ns


def parse_remaps(remaps: Iterable[str]) -> dict[str, str]:
    """{"/a": "/b"} from ["/a:=/b"]; raises ValueError for anything else."""
    out = {}
    for item in remaps:
        src, sep, dst = item.partition(":=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise ValueError(f"remap {item!r} must be /from:=/to")
        out[src] = dst
    return out


def matches(topic: str, patterns: Iterable[str]) -> bool:
    """Exact names, or shell-style patterns (`/graspvla/debug/*`)."""
    return any(topic == p or (_is_pattern(p) and fnmatch.fnmatchcase(topic, p)) for p in patterns)


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def select_topics(bag: Bag, topics: Sequence[str] = (), exclude: Iterable[str] = ()) -> list[str]:
    """The bag's topics named or matched by `topics` (all when empty), minus `exclude`, sorted;
    BagError names a requested topic the bag lacks, or patterns that match nothing."""
    missing = [t for t in topics if not _is_pattern(t) and t not in bag.topics]
    chosen = sorted(t for t in bag.topics if not topics or matches(t, topics))
    if missing or not chosen:
        raise BagError(f"{bag.path}: no topic {', '.join(missing or topics)} in the bag "
                       f"(it has: {', '.join(sorted(bag.topics)) or 'none'})")
    return [t for t in chosen if t not in set(exclude)]


def timeline(bag: Bag, topics: Iterable[str], rate: float = 1.0, start: float = 0.0,
             loop: bool = False) -> Iterator[tuple[float, Message]]:
    """(due s after playback start, message) in bag order. A loop starts again `1/rate` of the
    played span after the previous one began, so the gap between loops is the bag's own."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if start < 0 or start * 1e9 > bag.end_ns - bag.start_ns:
        raise ValueError(f"start {start} s is outside the bag (0 … {bag.duration_s:.3f} s)")
    first = bag.start_ns + int(start * 1e9)
    span = (bag.end_ns - first) / 1e9 / rate
    topics = list(topics)
    offset = 0.0
    while True:
        for msg in bag.messages(topics):
            if msg.timestamp >= first:
                yield offset + (msg.timestamp - first) / 1e9 / rate, msg
        if not loop:
            return
        offset += max(span, 1e-3)


@dataclass
class Pacer:
    """Releases at due times (s after `begin()`), measured on `clock`; `lateness` keeps how late
    each release was (s). `tick` is called while waiting, at most every `tick_period` s."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    tick: Callable[[float], None] | None = None
    tick_period: float = 0.0
    lateness: list[float] = field(default_factory=list)

    def begin(self) -> None:
        self.t0 = self.clock()

    def now(self) -> float:
        return self.clock() - self.t0

    def wait(self, due: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Sleep until `due`; False if `stop()` turned true meanwhile."""
        while not stop():
            left = due - self.now()
            if left <= 0:
                self.lateness.append(-left)
                return True
            step = min(left, self.tick_period) if self.tick and self.tick_period > 0 else min(left, 0.1)
            self.sleep(step)
            if self.tick and self.tick_period > 0:
                self.tick(self.now())
        return False


def header_stamp_ns(data: bytes) -> int | None:
    """header.stamp of a CDR message that starts with a std_msgs/Header (Image, PoseStamped,
    MultiDOFJointTrajectory, ...); None if the encapsulation is not little-endian CDR."""
    if len(data) < 12 or data[1] not in (1, 3):
        return None
    return stamp_ns(*struct.unpack_from("<iI", data, 4))


@dataclass(frozen=True)
class Cycle:
    """One lock-step cycle: release the played messages [0, release_until) of the bag order,
    then wait for one answer. `recorded` is the answer recorded then (None in a bag without
    answers); `stamp_ns` its header stamp (the observation time); `observation` the header
    stamps of the observation messages the answer was computed from."""

    index: int
    release_until: int
    stamp_ns: int | None
    recorded: Message | None
    observation: dict[str, int]


def cycles(bag: Bag, topics: Sequence[str], observation_topics: Sequence[str] = OBSERVATION_TOPICS,
           answer_topic: str = ANSWER_TOPIC) -> list[Cycle]:
    """Lock-step cycles over `topics` (the played ones, without the answer topic).

    With recorded answers: cycle k releases everything up to the last observation message whose
    header stamp is ≤ the k-th answer's stamp (the answer's observation time), so the live
    policy sees exactly the observation the recorded one answered. Without answers in the bag,
    each complete set of observation topics (one new message on each) is a cycle.
    """
    missing = [t for t in observation_topics if t not in bag.topics]
    if missing:
        raise BagError(f"{bag.path}: lock-step needs the observation topic {', '.join(missing)}, not in the bag")
    played = [t for t in topics if t != answer_topic]
    obs = set(observation_topics)
    history: dict[str, list[tuple[int, int]]] = {t: [] for t in observation_topics}  # (stamp, index)
    answers: list[Message] = []
    complete_sets: list[tuple[int, dict[str, int]]] = []
    pending: dict[str, int] = {}
    index = 0
    wanted = played + ([answer_topic] if answer_topic in bag.topics else [])
    for msg in bag.messages(wanted):
        if msg.topic == answer_topic:
            answers.append(msg)
            continue
        if msg.topic in obs:
            stamp = header_stamp_ns(msg.data)
            if stamp is None:
                raise BagError(f"{bag.path}: {msg.topic} message without a CDR header stamp")
            history[msg.topic].append((stamp, index))
            pending[msg.topic] = stamp
            if len(pending) == len(obs):
                complete_sets.append((index + 1, dict(pending)))
                pending = {}
        index += 1
    if not answers:
        return [Cycle(k, until, None, None, stamps) for k, (until, stamps) in enumerate(complete_sets)]
    out: list[Cycle] = []
    last_until = 0
    for answer in answers:
        stamp = header_stamp_ns(answer.data)
        if stamp is None:
            raise BagError(f"{bag.path}: {answer_topic} message without a CDR header stamp")
        chosen = {t: max(((s, i) for s, i in history[t] if s <= stamp), default=None) for t in observation_topics}
        if any(v is None for v in chosen.values()):
            continue              # answered an observation from before the recording began
        until = 1 + max(i for _, i in chosen.values())
        if until <= last_until:
            continue              # the same observation answered twice: one cycle
        last_until = until
        out.append(Cycle(len(out), until, stamp, answer, {t: s for t, (s, _) in chosen.items()}))
    return out


def observations(bag: Bag, topics: Sequence[str], cycle_list: Sequence[Cycle],
                 answer_topic: str = ANSWER_TOPIC) -> Iterator[tuple[Cycle, dict[str, Message]]]:
    """For each cycle, the newest message of every played topic at its release point: what a
    policy has seen when it answers (reads the bag once; for replaying without ROS)."""
    played = [t for t in topics if t != answer_topic]
    pending = iter(cycle_list)
    cycle = next(pending, None)
    latest: dict[str, Message] = {}
    for index, msg in enumerate(bag.messages(played)):
        while cycle is not None and index == cycle.release_until:
            yield cycle, dict(latest)
            cycle = next(pending, None)
        latest[msg.topic] = msg
    while cycle is not None:
        yield cycle, dict(latest)
        cycle = next(pending, None)

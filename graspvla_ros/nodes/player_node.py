"""player_node: publishes a bag's topics with their original relative timing.

Reads this recorder's bags and `ros2 bag record` output (MCAP, sqlite3). The whole bag is
checked before the first message goes out (missing topics, unknown types, truncated or corrupt
data: one error, nothing published). Lock-step mode releases one observation at a time and
waits for the policy's answer on `/graspvla/action_chunk`, for deterministic replays.
Topics and parameters: docs/interfaces.md (## Recording and playback).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock

from graspvla_ros.bag import BagError, open_bag
from graspvla_ros.bag.playback import Pacer, cycles, parse_remaps, select_topics, timeline
from graspvla_ros.bag.settings import PlaybackSettings
from graspvla_ros.interfaces import CLOCK
from graspvla_ros.nodes.common import run
from graspvla_ros.nodes.convert import ns_to_stamp
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.rosbag import message_class, publisher_qos
from graspvla_ros.settings import build, inline, params, setting

CONFIG = 'player.yaml'


@dataclass(frozen=True)
class PlayerNodeSettings:
    """What is played (`bag.settings`) and how this node publishes it."""

    playback: PlaybackSettings = inline(PlaybackSettings)
    clock: float = setting(0.0, "Hz of `/clock` (bag time) while playing; 0: no clock")
    wait_for_subscribers: int = setting(
        0, "before playing, wait until every played topic has this many subscribers (up to `start_timeout`; "
           "`/clock` holds the bag start meanwhile)")
    start_timeout: float = setting(30.0, "s to wait for `wait_for_subscribers`")
    qos_depth: int = setting(100, "keep-last depth of the publishers (reliable; latched where the recording was)")

    def __post_init__(self) -> None:
        if self.clock < 0 or self.wait_for_subscribers < 0 or self.qos_depth < 1:
            raise ValueError(f"clock and wait_for_subscribers must be ≥ 0 and qos_depth ≥ 1, got {self.clock}, "
                             f"{self.wait_for_subscribers}, {self.qos_depth}")


PARAMS = params(PlayerNodeSettings)


class PlayerNode(Node):
    def __init__(self) -> None:
        super().__init__("player")
        self.s = build(PlayerNodeSettings, declare(self, PARAMS))
        play = self.play = self.s.playback
        lock_step = play.lock_step
        self.exit_code = 0
        self.published = 0
        self.pacer = Pacer(tick=self._tick_clock, tick_period=1.0 / self.s.clock if self.s.clock > 0 else 0.0)
        self.bag = open_bag(play.bag)
        if not 0.0 <= play.start <= self.bag.duration_s:
            raise ValueError(f"start {play.start} s is outside the bag (0 … {self.bag.duration_s:.3f} s)")
        remaps = parse_remaps(play.remap.split())
        answer = lock_step.answer_topic
        self.topics = select_topics(self.bag, play.topics, exclude=[answer] if lock_step.enabled else [])
        self.bag.check(self.topics, known_type=lambda t: message_class(t) is not None)
        self.cycles = cycles(self.bag, self.topics, lock_step.observation_topics, answer) if lock_step.enabled else []
        if lock_step.enabled and not self.cycles:
            raise BagError(f"{self.bag.path}: no complete observation ({', '.join(lock_step.observation_topics)}) "
                           "for lock-step")
        unplayed = [src for src in remaps if src not in self.topics]
        if unplayed:
            self.get_logger().warning(f"remapped but not played: {', '.join(unplayed)}")
        self.pubs = {t: self.create_publisher(message_class(self.bag.topics[t].msgtype), remaps.get(t, t),
                                              publisher_qos(self.bag.topics[t].qos, self.s.qos_depth))
                     for t in self.topics}
        self.clock_pub = self.create_publisher(Clock, CLOCK, 10) if self.s.clock > 0 else None
        self._answers = 0
        self._answer_event = threading.Condition()
        if lock_step.enabled:
            cls = message_class(self.bag.topics[answer].msgtype) if answer in self.bag.topics else \
                message_class("trajectory_msgs/msg/MultiDOFJointTrajectory")
            self.create_subscription(cls, answer, self._on_answer, QoSProfile(depth=10), raw=True)
        self._bag_time = self.bag.start_ns + int(play.start * 1e9)
        state = "unfinished (recorder killed), played up to its last complete chunk" if not self.bag.complete else ""
        self.get_logger().info(f"playing {self.bag.path} ({self.bag.duration_s:.1f} s, {len(self.topics)} topics"
                               f"{', lock-step, %d cycles' % len(self.cycles) if self.cycles else ''}) {state}")
        self._worker = threading.Thread(target=self._play, name="player", daemon=True)
        self._worker.start()

    def _ok(self) -> bool:
        return rclpy.ok(context=self.context)

    def _on_answer(self, _data: bytes) -> None:
        with self._answer_event:
            self._answers += 1
            self._answer_event.notify_all()

    def _tick_clock(self, now_s: float) -> None:
        """/clock: the bag time now (in lock-step: of the last message released)."""
        if self.clock_pub is None:
            return
        first = self.bag.start_ns + int(self.play.start * 1e9)
        elapsed = int(now_s * self.play.rate * 1e9)
        if self.play.loop:
            elapsed %= max(1, self.bag.end_ns - first)
        t = self._bag_time if self.play.lock_step.enabled else first + elapsed
        self.clock_pub.publish(Clock(clock=ns_to_stamp(t)))

    def _wait_for_subscribers(self) -> None:
        need = self.s.wait_for_subscribers
        deadline = time.monotonic() + self.s.start_timeout
        while need > 0 and self._ok() and any(p.get_subscription_count() < need for p in self.pubs.values()):
            if time.monotonic() > deadline:
                short = [t for t, p in self.pubs.items() if p.get_subscription_count() < need]
                self.get_logger().warning(f"starting without {need} subscriber(s) on {', '.join(short)}")
                return
            self._tick_clock(0.0)   # the bag's start time: nodes on sim time run their timers (discovery) meanwhile
            time.sleep(0.05)

    def _publish(self, msg) -> None:
        self._bag_time = msg.timestamp
        self.pubs[msg.topic].publish(msg.data)
        self.published += 1

    def _play(self) -> None:
        try:
            self._wait_for_subscribers()
            if self.play.lock_step.enabled:
                self._play_lock_step()
            else:
                self.pacer.begin()
                for due, msg in timeline(self.bag, self.topics, self.play.rate, self.play.start, self.play.loop):
                    if not self.pacer.wait(due, stop=lambda: not self._ok()):
                        return
                    self._publish(msg)
                    self._tick_clock(self.pacer.now())
                late = np.array(self.pacer.lateness or [0.0]) * 1e3
                self.get_logger().info(f"played {self.published} messages; lateness p50 {np.percentile(late, 50):.2f} ms, "
                                       f"p99 {np.percentile(late, 99):.2f} ms")
        except Exception as err:  # report and end: a half-played bag is no use to a test
            if self._ok():
                self.get_logger().error(f"playback stopped: {err}")
                self.exit_code = 1
        finally:
            for pub in self.pubs.values():  # reliable delivery of the tail before the process ends
                if self._ok():
                    pub.wait_for_all_acked(Duration(seconds=5.0))
            rclpy.try_shutdown(context=self.context)

    def _play_lock_step(self) -> None:
        pending = list(self.cycles)
        mark = self._answer_count()
        for index, msg in enumerate(self.bag.messages(self.topics)):
            while pending and index == pending[0].release_until:
                mark = self._await_answer(pending.pop(0), mark)
            if not self._ok():
                return
            self._publish(msg)
        for cycle in pending:             # the last observation ends the bag
            mark = self._await_answer(cycle, mark)
        self.get_logger().info(f"lock-step: {len(self.cycles)} cycles answered, {self.published} messages played")

    def _answer_count(self) -> int:
        with self._answer_event:
            return self._answers

    def _await_answer(self, cycle, mark: int) -> int:
        """The observation of `cycle` is out: wait for an answer after `mark` (the count when its
        release began); returns the new mark. Answers that arrive together count as one."""
        self._tick_clock(0.0)
        with self._answer_event:
            if not self._answer_event.wait_for(lambda: self._answers > mark or not self._ok(),
                                               timeout=self.play.lock_step.timeout):
                raise TimeoutError(f"no answer on {self.play.lock_step.answer_topic} within "
                                   f"{self.play.lock_step.timeout} s for cycle {cycle.index}")
            return self._answers


def main(args: list[str] | None = None) -> int:
    nodes: list[PlayerNode] = []

    def make() -> PlayerNode:
        nodes.append(PlayerNode())
        return nodes[-1]

    try:
        rc = run(make, args)
    except (BagError, ValueError) as err:
        print(f"player: {err}", file=sys.stderr)
        return 2
    return nodes[0].exit_code if nodes else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))

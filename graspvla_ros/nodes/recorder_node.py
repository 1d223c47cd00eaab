"""recorder_node: records the stack's topics to rosbag2 MCAP as the raw CDR received.

Subscriptions are raw (no deserialisation) with QoS matched to each topic's publishers
(reliable and deep where they allow it: lossless); a separate thread writes, so a slow disk
never stalls the executor. `mode: episode` starts a new bag at every /graspvla/instruction,
with the instruction, the policy's parameters and the git commit as episode metadata.
Topics and parameters: docs/interfaces.md (## Recording and playback).
"""
from __future__ import annotations

import json
import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import DurabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from graspvla_ros.bag import BagWriter, episode_metadata
from graspvla_ros.bag.playback import matches
from graspvla_ros.bag.settings import RecordingSettings
from graspvla_ros.interfaces import INSTRUCTION, POLICY, RECORDER_STATUS
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.rosbag import message_class, subscription_qos, to_bag_qos
from graspvla_ros.settings import build, inline, params, setting

DRAIN_TIMEOUT = 10.0   # s: at most this long taking delivered messages after SIGINT/SIGTERM

CONFIG = 'recorder.yaml'


@dataclass(frozen=True)
class RecorderNodeSettings:
    """What is recorded (`bag.settings`) and how this node finds and takes it from the graph."""

    recording: RecordingSettings = inline(RecordingSettings)
    qos_depth: int = setting(
        500, "keep-last depth of each subscription: how far the recorder may fall behind without losing a message")
    policy_node: str = setting(
        POLICY, "node whose parameters are stored in each episode's metadata (`backend`, `checkpoint_hash`, …)")
    discovery_period: float = setting(0.5, "s between graph scans for the topics to record")

    def __post_init__(self) -> None:
        if self.qos_depth < 1 or not self.discovery_period > 0:
            raise ValueError(f"qos_depth must be ≥ 1 and discovery_period > 0 s, got {self.qos_depth}, "
                             f"{self.discovery_period}")


PARAMS = params(RecorderNodeSettings)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.s = build(RecorderNodeSettings, declare(self, PARAMS))
        self.recording = self.s.recording
        self.output_dir = Path(self.recording.output_dir).expanduser()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.bags: list[Path] = []                 # every bag started, in order
        self.written: dict[str, int] = {}          # messages written per topic, all bags
        self.received = 0                          # messages taken from DDS, all topics
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._recorded: dict[str, object] = {}
        self._episode = 0                          # the bag being written (writer thread)
        self._instructions = 0                     # instructions received (executor thread)
        policy = self.s.policy_node.rstrip("/")
        self._list_params = self.create_client(ListParameters, f"{policy}/list_parameters")
        self._get_params = self.create_client(GetParameters, f"{policy}/get_parameters")
        self._writer = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self._writer.start()
        if self.recording.mode == "continuous":
            self._queue.put(("open", self._now(), "", 1))
        self.create_timer(self.s.discovery_period, self._discover)
        self.status_pub = self.create_publisher(String, RECORDER_STATUS, 10)
        self.create_timer(1.0, self._publish_status)
        self._discover()
        self.get_logger().info(f"recording ({self.recording.mode}) under {self.output_dir}")

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    # ------------------------------------------------------------------ executor thread
    def _discover(self) -> None:
        for name, types in self.get_topic_names_and_types():
            if name in self._recorded or not matches(name, self.recording.topics) or len(types) != 1:
                continue
            cls = message_class(types[0])
            if cls is None:
                self.get_logger().warning(f"not recording {name}: message type {types[0]} is not installed")
                self._recorded[name] = None
                continue
            offered = [info.qos_profile for info in self.get_publishers_info_by_topic(name)]
            if not offered:
                continue
            qos = subscription_qos(offered, self.s.qos_depth)
            self._queue.put(("topic", name, types[0], [to_bag_qos(q) for q in offered]))
            callback = self._on_instruction if name == INSTRUCTION else self._callback(name)
            self._recorded[name] = self.create_subscription(cls, name, callback, qos, raw=True)
            latched = " latched" if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL else ""
            self.get_logger().info(f"recording {name} ({types[0]}, {qos.reliability.name.lower()}{latched})")

    def _publish_status(self) -> None:
        """Where the recording goes and how far the writer is (not recorded itself)."""
        self.status_pub.publish(String(data=json.dumps({
            "bag": str(self.bags[-1]) if self.bags else "", "episode": self._episode,
            "written": dict(self.written), "queued": self._queue.qsize()})))

    def _callback(self, topic: str):
        put, now = self._queue.put, self._now

        def on_message(data: bytes, info) -> None:
            self.received += 1
            gid = info.get("publisher_gid")
            put(("msg", topic, now(), data, bytes(gid["data"]) if gid else b""))
        return on_message

    def _on_instruction(self, data: bytes) -> None:
        self.received += 1
        t = self._now()
        if self.recording.mode == "episode":
            self._instructions += 1
            self._queue.put(("open", t, deserialize_message(data, String).data, self._instructions))
            self._fetch_policy_parameters(self._instructions)
        self._queue.put(("msg", INSTRUCTION, t, data, b""))

    def _fetch_policy_parameters(self, episode: int) -> None:
        """Ask the policy for its parameters without blocking; they reach the episode's metadata."""
        if not (self._list_params.service_is_ready() and self._get_params.service_is_ready()):
            return

        def got_values(names, future):
            values = {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
            self._queue.put(("policy", episode, values))

        def got_names(future):
            names = list(future.result().result.names)
            self._get_params.call_async(GetParameters.Request(names=names)).add_done_callback(
                lambda f: got_values(names, f))

        self._list_params.call_async(ListParameters.Request()).add_done_callback(got_names)

    # ------------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        bag: BagWriter | None = None
        topics: dict[str, tuple[str, list]] = {}
        # a latched topic's last message of each publisher (/tf_static: one per camera node)
        latched: dict[str, dict[bytes, tuple[int, bytes]]] = {}
        while True:
            try:
                item = self._queue.get(timeout=self.recording.flush_period)
            except queue.Empty:   # quiet topics: the open chunk still reaches the disk in time
                if bag is not None:
                    bag.flush()
                continue
            if item is None:
                break
            kind = item[0]
            try:
                if kind == "msg":
                    _, topic, t, data, publisher = item
                    if topic in latched:
                        latched[topic][publisher] = (t, data)
                    if bag is not None:
                        bag.write(topic, t, data)
                        self.written[topic] = self.written.get(topic, 0) + 1
                elif kind == "topic":
                    _, topic, msgtype, qos = item
                    topics[topic] = (msgtype, qos)
                    if qos and all(q.durability.name == "TRANSIENT_LOCAL" for q in qos):
                        latched[topic] = {}
                    if bag is not None:
                        bag.add_topic(topic, msgtype, qos)
                elif kind == "open":
                    _, t, instruction, episode = item
                    if bag is not None:
                        self._close(bag)
                    bag = self._open(t, instruction, episode, topics, latched)
                elif kind == "policy":
                    _, episode, values = item
                    if bag is not None and episode == self._episode:
                        bag.set_metadata({**bag.metadata, "backend": str(values.get("backend", "")),
                                          "checkpoint_hash": str(values.get("checkpoint_hash", "")),
                                          "parameters": values})
            except Exception as err:  # keep what is recorded: close the bag, stop writing
                self.get_logger().error(f"recording stopped: {err}")
                if bag is not None:
                    self._close(bag)
                bag = None
        if bag is not None:
            self._close(bag)

    def _open(self, t: int, instruction: str, episode: int, topics, latched) -> BagWriter:
        self._episode = episode
        name = f"{self.recording.bag_prefix}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        if self.recording.mode == "episode":
            name += f"_ep{self._episode}"
        path = self.output_dir / name
        for n in range(2, 1000):
            if not path.exists():
                break
            path = self.output_dir / f"{name}-{n}"
        split = self.recording.split
        bag = BagWriter(path, episode_metadata(instruction=instruction, episode=self._episode),
                        split_bytes=split.max_bytes, split_seconds=split.max_seconds,
                        chunk_seconds=self.recording.flush_period)
        for topic, (msgtype, qos) in topics.items():
            bag.add_topic(topic, msgtype, qos)
        for topic, last in latched.items():   # each episode starts with the latched state it had
            if topic == INSTRUCTION:
                continue
            for _, data in last.values():
                bag.write(topic, t, data)
                self.written[topic] = self.written.get(topic, 0) + 1
        self.bags.append(path)
        self.get_logger().info(f"episode {self._episode}: recording to {path}" +
                               (f" ({instruction!r})" if instruction else ""))
        return bag

    def _close(self, bag: BagWriter) -> None:
        bag.close()
        counts = ", ".join(f"{t} {n}" for t, n in sorted(bag.counts.items()))
        self.get_logger().info(f"closed {bag.path}: {sum(bag.counts.values())} messages ({counts})")

    def close(self) -> None:
        """Write what is queued and close the bag (on SIGINT/SIGTERM too)."""
        self._queue.put(None)
        self._writer.join()


def main(args: list[str] | None = None) -> int:
    """Like nodes.common.run, but SIGINT/SIGTERM first take what DDS has already delivered
    (rclpy's own handlers would invalidate the context with messages still queued in the
    subscriptions), then write and close the bag."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = RecorderNode()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        for timer in list(node.timers):        # from now on only messages wake the executor
            node.destroy_timer(timer)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:      # until nothing arrives for 0.2 s
            before, waited = node.received, time.monotonic()
            executor.spin_once(timeout_sec=0.2)
            if node.received == before and time.monotonic() - waited >= 0.15:
                break
    finally:
        executor.shutdown()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

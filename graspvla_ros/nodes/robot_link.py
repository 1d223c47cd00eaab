"""The policy node's side of the link to the robot host: is it up (the TCP pose stream as
heartbeat, policy.link.LinkWatch), how far is its clock (a ping-pong with the controller's
`~/clock`, policy.link.ClockOffset), and, in tests, an emulated slow and lossy link
(`link_emulation`, policy.netem). Each runs on this host's steady clock: in the sim graph the
node clock is `/clock`, which stops with a lost link."""
from __future__ import annotations

import time
from collections.abc import Callable

from diagnostic_msgs.msg import KeyValue
from rclpy.clock import Clock, ClockType
from std_srvs.srv import Trigger

from graspvla_ros.interfaces import CONTROLLER_CLOCK, VIEWS, under
from graspvla_ros.policy.link import ClockOffset, LinkWatch
from graspvla_ros.policy.netem import LinkEmulator, LinkSpec

STREAMS = (*VIEWS, "poses", "chunks")   # what crosses the link, each emulated in its own order


class RobotLink:
    """`on_change(lost, text)` when the link is lost or back; `on_offset(ns)` at each new offset."""

    def __init__(self, node, controller: str, timeout: float, on_change: Callable[[bool, str], None],
                 on_offset: Callable[[int], None]):
        self.node = node
        self.watch = LinkWatch(timeout)
        self.offset = ClockOffset()
        self._on_change, self._on_offset = on_change, on_offset
        self._emulators: dict[str, LinkEmulator] = {}
        self._ping = None
        self._clock_client = node.create_client(Trigger, under(controller, CONTROLLER_CLOCK))
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        node.create_timer(0.2, self._check, clock=steady)
        node.create_timer(1.0, self._ping_clock, clock=steady)

    @property
    def lost(self) -> bool:
        return self.watch.lost

    def heard(self) -> None:
        """A TCP pose arrived."""
        self.watch.heard(time.monotonic())

    def across(self, stream: str, handle: Callable, *args) -> None:
        """`handle(*args)` now, or over the emulated link of `stream` (tests)."""
        link = self._emulators.get(stream)
        if link is None:
            handle(*args)
        else:
            link.send(lambda: handle(*args))

    def emulate(self, text: str) -> None:
        """`link_emulation` (tests): each stream gets an emulator of its own; empty: none."""
        old, spec = self._emulators, LinkSpec.parse(text)
        self._emulators = {} if spec is None else {name: LinkEmulator(spec, name, seed=k)
                                                   for k, name in enumerate(STREAMS)}
        for link in old.values():
            link.close()
        if spec is not None:
            self.node.get_logger().warning(f"TEST LINK EMULATION: views, poses and chunks delayed {spec.delay * 1e3:.0f}"
                                           f" ± {spec.jitter * 1e3:.0f} ms, {spec.loss:.0%} lost")

    def diagnostics(self) -> list[KeyValue]:
        values = [KeyValue(key="robot_link", value=self.watch.describe(time.monotonic())),
                  KeyValue(key="robot_clock_offset", value=self.offset.describe())]
        if self.offset.measured:
            values += [KeyValue(key="robot_clock_offset_ms", value=f"{self.offset.offset_ns / 1e6:.2f}"),
                       KeyValue(key="robot_link_round_trip_ms", value=f"{self.offset.round_trip_ns / 1e6:.2f}")]
        return values + [KeyValue(key=f"link_emulation.{name}", value=f"{link.dropped}/{link.sent} dropped")
                         for name, link in self._emulators.items()]

    def _check(self) -> None:
        change = self.watch.check(time.monotonic())
        if change is not None:
            self._on_change(self.watch.lost, change)

    def _ping_clock(self) -> None:
        """One exchange of the ping-pong: t0 here, the controller's clock t1, back at t2."""
        if self._ping is not None and not self._ping.done():
            self._clock_client.remove_pending_request(self._ping)   # unanswered for 1 s: a lost exchange
        if not self._clock_client.service_is_ready():
            return
        now = lambda: self.node.get_clock().now().nanoseconds  # noqa: E731
        t0 = now()

        def answered(future) -> None:
            t2, reply = now(), future.result()
            if reply is not None and reply.success and reply.message.lstrip("-").isdigit():
                self.offset.add(t0, int(reply.message), t2)
                self._on_offset(self.offset.offset_ns)
        self._ping = self._clock_client.call_async(Trigger.Request())
        self._ping.add_done_callback(answered)

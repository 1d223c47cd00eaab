"""The robot host as the policy sees it: is its TCP pose stream (200 Hz) still arriving, and how
far is its clock from this one's?

The link is judged on this host's own monotonic clock, never by comparing stamps of two hosts,
and never on the node clock: in the sim graph that is `/clock`, which stops with the link it
comes over. The clock offset is measured (a ping-pong with the controller), never assumed."""
from __future__ import annotations

from collections import deque

LOST = "no TCP pose from the controller: robot host or link down"   # the episode's reason, diagnostics


class LinkWatch:
    """`heard(now)` at every TCP pose; `check(now)` says (once) when nothing came for
    `timeout` s and (once) when it comes again; `now` in seconds of a monotonic clock.
    A timeout of 0 watches nothing (the replay graph: the bag's poses end with the bag)."""

    def __init__(self, timeout: float = 1.0):
        if not timeout >= 0:
            raise ValueError(f"timeout must be ≥ 0 s (0: not watched), got {timeout}")
        self.timeout = timeout
        self.last: float | None = None
        self.lost_since: float | None = None

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    def heard(self, now: float) -> None:
        self.last = now

    def check(self, now: float) -> str | None:
        if self.last is None or not self.timeout:
            return None   # nothing heard yet (the start-up waits say so), or not watched
        silent = now - self.last
        if not self.lost and silent >= self.timeout:
            self.lost_since = self.last
            return (f"no TCP pose from the controller for {silent:.1f} s: the robot host or the link to it is down; "
                    "the episode ends; the controller holds the arm on its own watchdog")
        if self.lost and silent < self.timeout:
            gone = self.last - self.lost_since
            self.lost_since = None
            return f"the controller's TCP poses arrive again (after {gone:.1f} s without)"
        return None

    def describe(self, now: float) -> str:
        if not self.timeout:
            return "not watched"
        if self.last is None:
            return "nothing heard yet"
        return f"lost for {now - self.last:.1f} s" if self.lost else "ok"


class ClockOffset:
    """The robot host's clock minus this one's, measured by a ping-pong: this host asks at t0 (its
    clock), the controller answers with its clock t1, the answer arrives at t2. If the two legs
    take equally long, offset = t1 − (t0 + t2) / 2, wrong by at most half the round trip t2 − t0:
    of the last `keep` exchanges the one with the shortest round trip is used. Zero until the
    first answer (one machine, or clocks kept in step by NTP/PTP, measure close to it)."""

    def __init__(self, keep: int = 16):
        self._samples: deque[tuple[int, int]] = deque(maxlen=keep)   # (round trip, offset) ns

    def add(self, t0_ns: int, t1_ns: int, t2_ns: int) -> None:
        if t2_ns < t0_ns:
            return   # this clock went back (a sim reset): not a measurement
        self._samples.append((t2_ns - t0_ns, t1_ns - (t0_ns + t2_ns) // 2))

    @property
    def measured(self) -> bool:
        return bool(self._samples)

    @property
    def offset_ns(self) -> int:
        return min(self._samples)[1] if self._samples else 0

    @property
    def round_trip_ns(self) -> int | None:
        return min(self._samples)[0] if self._samples else None

    def describe(self) -> str:
        if not self._samples:
            return "not measured yet"
        rtt, offset = min(self._samples)
        return f"{offset / 1e6:+.1f} ms (±{rtt / 2e6:.1f} ms: round trip {rtt / 1e6:.1f} ms)"

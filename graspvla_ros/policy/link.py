"""The robot host as the policy sees it: is its TCP pose stream (200 Hz) still arriving?

Judged on this host's own monotonic clock, never by comparing stamps of two hosts, and never on
the node clock: in the sim graph that is `/clock`, which stops with the link it comes over."""
from __future__ import annotations

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

"""A slow, lossy link, emulated where the kernel has no `tc netem` (tests only: `link_emulation`).

What crosses the emulated link is delayed by `delay` ± `jitter` s (normal, ≥ 0) and dropped with
probability `loss`, in order, as DDS delivers one writer's samples: a message is never handed
over before one that crossed before it. Each direction of each stream is one LinkEmulator.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkSpec:
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LinkSpec | None:
        """`delay=0.05,jitter=0.02,loss=0.05` (s, s, fraction); empty: None (no emulation)."""
        if not text.strip():
            return None
        fields = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            if key.strip() not in ("delay", "jitter", "loss"):
                raise ValueError(f"link_emulation: {part.strip()!r}: expected delay=<s>, jitter=<s> or loss=<fraction>")
            try:
                fields[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"link_emulation: {part.strip()!r}: not a number") from None
        spec = cls(**fields)
        if spec.delay < 0 or spec.jitter < 0 or not 0 <= spec.loss < 1:
            raise ValueError(f"link_emulation: delay and jitter must be ≥ 0 s and loss in [0, 1), got {text!r}")
        return spec


class LinkEmulator:
    """`send(deliver)`: call `deliver()` on this emulator's thread after the link's delay, or never."""

    def __init__(self, spec: LinkSpec, name: str, seed: int = 0):
        self.spec = spec
        self.sent = self.dropped = 0
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._last_due = 0.0
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"link-{name}", daemon=True)
        self._thread.start()

    def send(self, deliver: Callable[[], None]) -> None:
        with self._wake:
            self.sent += 1
            if self._rng.random() < self.spec.loss:
                self.dropped += 1
                return
            delay = max(0.0, self._rng.gauss(self.spec.delay, self.spec.jitter) if self.spec.jitter else self.spec.delay)
            self._last_due = max(time.monotonic() + delay, self._last_due)
            heapq.heappush(self._queue, (self._last_due, next(self._order), deliver))
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._wake.wait(None if not self._queue else self._queue[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, deliver = heapq.heappop(self._queue)
            try:
                deliver()
            except Exception:   # the node's callback failed: as in its executor, said, and the link goes on
                log.exception("a message delivered over the emulated link failed")

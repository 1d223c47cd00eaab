"""The latency chain of a cycle, from the views' exposure to the arm's motion, on one clock.

Each stage is ms after the exposure stamp, on the robot host's clock (where the cameras stamped
it): the controller's stages are on that clock already; the policy's are on its own host's clock
and are moved onto the robot's by the offset the stack measures (policy.link.ClockOffset: a
ping-pong with the controller, never a trusted stamp), so on two machines the chain adds up.
The policy and the controller publish p50/p99 of their stages on /diagnostics
(`latency.<stage>.p50_ms`, `.p99_ms`, `.n`) over the cycles of the `latency_window` seconds (of
the host's steady clock) up to the newest one, and how long ago that was (`latency.window_s`,
`latency.last_s_ago`): the window ends at the last cycle, not now, so after an episode
`graspvla status` still shows that episode's chain; it prints the chain as a table and warns
about a stage whose p99 is past its budget.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_S = 20.0   # s: 100 cycles at 5 Hz; what is older than the newest by more drops out
MAX_SAMPLES = 1000


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    budget_ms: float   # by when (ms after the exposure, p99) the stage is done in a healthy 5 Hz loop


# In the order a cycle goes through them; the first four are the policy's, the last two the controller's.
STAGES = (
    Stage("received", "view pair received by the policy", 150.0),
    Stage("inference_start", "inference started", 250.0),
    Stage("inference_end", "inference ended", 500.0),
    Stage("published", "chunk published", 520.0),
    Stage("controller_received", "chunk received by the controller", 600.0),
    Stage("motion_updated", "arm's motion updated to it", 700.0),
)
POLICY_STAGES = tuple(s.name for s in STAGES[:4])
CONTROLLER_STAGES = tuple(s.name for s in STAGES[4:])


class LatencyWindow:
    """The values (ms after the exposure) of each stage added in the `span_s` s up to the newest value
    of any stage, from any thread."""

    def __init__(self, stages: tuple[str, ...], span_s: float = WINDOW_S, clock=time.monotonic):
        self.span_s, self._clock = span_s, clock
        self._values: dict[str, deque[tuple[float, float]]] = {s: deque(maxlen=MAX_SAMPLES) for s in stages}
        self._newest: float | None = None
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._newest = self._clock()
            self._values[stage].append((self._newest, float(ms)))

    def diagnostics(self) -> dict[str, str]:
        """`latency.<stage>.p50_ms` / `.p99_ms` / `.n` of each stage with values in the window, and
        the window's span and end (`latency.window_s`, `latency.last_s_ago`); {} before any value."""
        with self._lock:
            if self._newest is None:
                return {}
            out = {"latency.window_s": f"{self.span_s:g}", "latency.last_s_ago": f"{self._clock() - self._newest:.1f}"}
            for stage, samples in self._values.items():
                while samples and samples[0][0] < self._newest - self.span_s:
                    samples.popleft()
                values = [ms for _, ms in samples]
                if values:
                    p50, p99 = np.percentile(np.asarray(values), [50, 99])
                    out.update({f"latency.{stage}.p50_ms": f"{p50:.1f}", f"latency.{stage}.p99_ms": f"{p99:.1f}",
                                f"latency.{stage}.n": str(len(values))})
        return out


def chain_rows(values: dict[str, str]) -> list[tuple[Stage, float, float, bool]]:
    """(stage, p50, p99, over budget) of each stage found in diagnostics `values` (both nodes' merged)."""
    rows = []
    for stage in STAGES:
        p50, p99 = values.get(f"latency.{stage.name}.p50_ms"), values.get(f"latency.{stage.name}.p99_ms")
        if p50 is not None and p99 is not None:
            rows.append((stage, float(p50), float(p99), float(p99) > stage.budget_ms))
    return rows

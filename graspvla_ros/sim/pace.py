"""How fast the simulated world runs against the wall clock, in words when it falls behind.

Every node of the sim graph runs on the world's time, so a starved or blocked physics loop
slows everything at once (cameras, controller waits, the policy's rate): one warning that says
so, and one when it has recovered, is what makes such a run explainable afterwards."""
from __future__ import annotations


class PaceMonitor:
    """Feed it (wall s, sim s) as often as you like; over each `window_s` of wall time it works
    out the real-time factor and returns a message when it drops below `slow` (once) and when
    it is back above it (once)."""

    def __init__(self, window_s: float = 5.0, slow: float = 0.25):
        if not window_s > 0 or not 0 < slow < 1:
            raise ValueError(f"window_s must be > 0 and slow in (0, 1), got {window_s}, {slow}")
        self.window_s, self.slow = window_s, slow
        self._start: tuple[float, float] | None = None
        self.behind = False
        self.factor: float | None = None

    def update(self, wall_s: float, sim_s: float) -> str | None:
        if self._start is None or sim_s < self._start[1]:  # the first call, or the world was reset
            self._start = (wall_s, sim_s)
            return None
        wall0, sim0 = self._start
        if wall_s - wall0 < self.window_s:
            return None
        self._start = (wall_s, sim_s)
        self.factor = (sim_s - sim0) / (wall_s - wall0)
        if not self.behind and self.factor < self.slow:
            self.behind = True
            return (f"the simulated world ran at {self.factor:.2f}× real time over the last {wall_s - wall0:.0f} s "
                    "(the physics is starved of CPU or blocked): every node on its clock slows with it")
        if self.behind and self.factor >= self.slow:
            self.behind = False
            return f"the simulated world runs at {self.factor:.2f}× real time again"
        return None

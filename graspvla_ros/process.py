"""Child-process helpers shared by the launcher (`bringup`) and the simulator (`sim.server`),
kept in the core so neither has to import the other."""
from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the runner dies, even by SIGKILL,
    so no node outlives an aborted demo or test run (Linux only; a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass

"""Language commands and episodes (pure core).

`parse(text)` turns an instruction into a command: "pick up the red cube" or a bare object
name → Pick("red cube"); "stop" → Stop; "home" → Home; empty, non-printable or over-long text
is refused (`Refused.reason`). The model reads the official prompt's task, "pick up {object}".

An `Episode` ends by itself on success (gripper commanded closed on something, i.e. the
measured width at least `min_grasp_width`, and the TCP lifted ≥ `lift_success` since the
close) or on a timeout; a new instruction, "stop" or "home" end it from outside. A lift with
the fingers closed on nothing is said in `reason` and the episode goes on (the policy may
open and try again).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from graspvla_ros.chunk import GRIPPER_CLOSE

MAX_INSTRUCTION_CHARS = 256
LIFT_SUCCESS_M = 0.10
MIN_GRASP_WIDTH_M = 0.005
_ARTICLES = re.compile(r"^(the|a|an)(\s+|$)")


@dataclass(frozen=True)
class Pick:
    target: str            # the object, as named ("red cube")

    @property
    def task(self) -> str:
        """What the model reads inside the official prompt."""
        return f"pick up {self.target}"


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Home:
    pass


@dataclass(frozen=True)
class Refused:
    reason: str            # empty | non_printable | too_long
    detail: str


def parse(text: str) -> Pick | Stop | Home | Refused:
    if len(text) > MAX_INSTRUCTION_CHARS:
        return Refused("too_long", f"{len(text)} characters (max {MAX_INSTRUCTION_CHARS})")
    if not text.strip():
        return Refused("empty", "the instruction is empty")
    if not text.isprintable():
        bad = sorted({repr(c) for c in text if not c.isprintable()})
        return Refused("non_printable", f"non-printable characters {', '.join(bad)}")
    words = " ".join(text.strip().lower().split()).rstrip(".!")
    if words in ("stop", "halt"):
        return Stop()
    if words == "home":
        return Home()
    for prefix in ("pick up ", "pick ", "grasp ", "grab "):
        if words.startswith(prefix):
            words = words[len(prefix):]
            break
    target = _ARTICLES.sub("", words).strip()
    if not target:
        return Refused("empty", f"no object named in {text!r}")
    return Pick(target)


@dataclass
class Episode:
    """One instruction's attempt; `phase` is running until it ends (succeeded | timeout |
    stopped | replaced | homed | link_lost)."""

    id: int
    target: str
    task: str
    start_ns: int
    timeout_s: float
    lift_success: float = LIFT_SUCCESS_M
    min_grasp_width: float = MIN_GRASP_WIDTH_M
    phase: str = "running"
    reason: str = ""
    cycles: int = 0
    closed_z: float | None = field(default=None, repr=False)
    lifted_empty: bool = field(default=False, repr=False)

    @property
    def running(self) -> bool:
        return self.phase == "running"

    def end(self, phase: str, reason: str) -> bool:
        """End it (once); True if this call ended it."""
        if not self.running:
            return False
        self.phase, self.reason = phase, reason
        return True

    def update(self, now_ns: int, tcp_z: float | None, gripper: float, width: float | None = None) -> bool:
        """Track the grasp from the TCP height, the commanded gripper state and the measured
        finger width (None: not known, not checked). Ends the episode on success or timeout.
        True if it ended now or its reason changed (a lift on an empty gripper)."""
        if not self.running:
            return False
        if gripper == GRIPPER_CLOSE and tcp_z is not None:
            if self.closed_z is None:
                self.closed_z = tcp_z
            elif tcp_z - self.closed_z >= self.lift_success:
                lifted = f"lifted {(tcp_z - self.closed_z) * 100:.1f} cm"
                if width is None or width >= self.min_grasp_width:
                    return self.end("succeeded", f"gripper closed and {lifted}")
                if not self.lifted_empty:
                    self.lifted_empty = True
                    self.reason = f"{lifted} with the gripper closed on nothing (width {width * 1000:.1f} mm)"
                    return True
        elif gripper != GRIPPER_CLOSE:
            self.closed_z, self.lifted_empty = None, False
        if (now_ns - self.start_ns) / 1e9 > self.timeout_s:
            return self.end("timeout", f"no successful grasp within {self.timeout_s:g} s")
        return False

    def status(self) -> dict:
        return {"episode": self.id, "instruction": self.task, "target": self.target, "phase": self.phase,
                "reason": self.reason, "cycles": self.cycles}

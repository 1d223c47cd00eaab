"""Results of the set-up checks (`graspvla doctor`): one `Check` per thing checked, with what was
found and, when it is not OK, what to do about it in one sentence. The checks themselves live
next to what they check (camera.checks, calibration.checks, control.checks, model.checks, dds)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"
STATUSES = (OK, WARN, FAIL)


@dataclass(frozen=True)
class Check:
    name: str     # what was checked ("front camera", "checkpoint")
    status: str   # OK, WARN or FAIL
    what: str     # what was found
    fix: str = ""  # what to do, one sentence (empty when OK)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.status != OK and not self.fix:
            raise ValueError(f"a {self.status} check needs a fix ({self.name}: {self.what})")


def ok(name: str, what: str) -> Check:
    return Check(name, OK, what)


def warn(name: str, what: str, fix: str) -> Check:
    return Check(name, WARN, what, fix)


def fail(name: str, what: str, fix: str) -> Check:
    return Check(name, FAIL, what, fix)


def guarded(name: str, run: Callable[[], Sequence[Check]]) -> list[Check]:
    """The checks `run` returns; a check that crashes is itself a FAIL line naming the error."""
    try:
        return list(run())
    except Exception as err:  # any crash: reported as a line, never as a stack trace
        text = str(err).strip().splitlines()
        return [fail(name, f"the check itself failed: {type(err).__name__}: {text[0] if text else ''}".rstrip(": "),
                     "fix what the error names; if it makes no sense, report it with this line")]

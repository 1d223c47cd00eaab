"""Writes one benchmark's results into its own section of BENCHMARKS.md.

Each benchmark owns the block between `<!-- BEGIN name -->` and `<!-- END name -->`, so
benchmarks can be re-run one at a time without disturbing the others' numbers.
"""
from __future__ import annotations

import datetime as _dt
import platform
import re
import subprocess
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Measured numbers only, each with the command that produced it. `make bench` re-runs all of\n"
    "them (inside the loopback-only network namespace); each section can be re-run alone.\n"
)


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo and its logical CPU count ("AMD EPYC × 2 logical CPUs")."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} × {len(names)} logical CPUs" if names else platform.processor() or platform.machine()


def machine_line() -> str:
    return f"{cpu_model()}, Python {platform.python_version()}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=BENCHMARKS_MD.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, markdown: str, command: str, machine: str | None = None) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md with `markdown`.

    `command` is the exact command that reproduces the numbers; it is recorded with the date,
    the machine (default: this one; give it for numbers measured elsewhere) and the commit.
    """
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- BEGIN {name} -->\n{markdown.strip()}\n\n"
        f"_Command: `{command}` — {stamp}, commit {_commit()}, {machine or machine_line()}._\n"
        f"<!-- END {name} -->"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)

"""Pieces shared by several test modules (fixtures and guards stay in conftest.py)."""
from __future__ import annotations

# The policy tests' simulated cameras: 2 Hz keeps the physics fed, 320×240 renders in a quarter
# of the CPU time (the policy crops the same field of view and resizes to 256 either way).
SIM_CAMERAS = {"camera_rate_hz": 2.0, "width": 320, "height": 240}


def doc_commands(path) -> list[tuple[str, bool]]:
    """(command, hardware_only) for every command in the fenced sh/bash blocks of a Markdown file:
    continuation lines joined, comment lines dropped; a block whose first line starts with
    `# hardware-only:` marks its commands as needing the robot, the cameras or the robot machine."""
    import re
    from pathlib import Path

    commands = []
    for block in re.findall(r"^```(?:sh|bash)\n(.*?)^```", Path(path).read_text(), re.M | re.S):
        hardware = block.startswith("# hardware-only:")
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append((command.strip(), hardware))
    return commands

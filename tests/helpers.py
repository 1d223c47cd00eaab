"""Pieces shared by several test modules (fixtures and guards stay in conftest.py)."""
from __future__ import annotations

# The policy tests' simulated cameras: 2 Hz keeps the physics fed, 320×240 renders in a quarter
# of the CPU time (the policy crops the same field of view and resizes to 256 either way).
SIM_CAMERAS = {"camera_rate_hz": 2.0, "width": 320, "height": 240}

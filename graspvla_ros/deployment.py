"""GraspVLA's deployment constants (the official real-robot client), for every layer to import."""
from __future__ import annotations

import math

# The reset pose, for the TCP described in docs/interfaces.md: where every episode starts.
HOME_POSITION = (0.36307, -0.00142, 0.48912)
HOME_RPY = (-math.pi, 0.0, math.pi / 4)

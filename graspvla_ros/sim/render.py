"""The simulated cameras, rendered in a process of their own.

Without a GPU MuJoCo rasterises on the CPU (llvmpipe, 30–90 ms a 640×480 frame); on a thread
beside the 1 kHz physics that time is taken from the physics under the GIL, and the arm slows
(BENCHMARKS.md, "Simulated cameras and physics real-time factor"). So the physics side only
copies a `Snapshot` (sim time + qpos, a few hundred bytes) under the lock; a child process
holding its own copy of the model (saved as MJB) rebuilds the scene from it and renders.
Both views of one snapshot share its sim time: the exposure stamp of the pair.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import mujoco
import numpy as np


class Snapshot(NamedTuple):
    """The simulated world at one instant: MuJoCo's time (s) and joint positions."""

    time: float
    qpos: np.ndarray


def save_model(model: mujoco.MjModel, path: Path) -> Path:
    """The compiled model as an MJB file, exact to the one that steps (scene, visual settings)."""
    mujoco.mj_saveModel(model, str(path))
    return path


class SnapshotRenderer:
    """Renders named cameras of a saved model at the poses of a `Snapshot` (one thread only:
    each `mujoco.Renderer` owns a GL context)."""

    def __init__(self, model_path: Path | str, cameras: Sequence[str], width: int, height: int):
        os.environ.setdefault("MUJOCO_GL", "egl")
        self.model = mujoco.MjModel.from_binary_path(str(model_path))
        self.data = mujoco.MjData(self.model)
        self._renderers = {name: mujoco.Renderer(self.model, height, width) for name in cameras}

    def render(self, snapshot: Snapshot) -> dict[str, np.ndarray]:
        """{camera: HxWx3 uint8 RGB} of the world as it was at `snapshot`."""
        self.data.qpos[:] = snapshot.qpos
        self.data.time = snapshot.time
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        frames = {}
        for name, renderer in self._renderers.items():
            renderer.update_scene(self.data, camera=name)
            frames[name] = renderer.render()
        return frames

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()

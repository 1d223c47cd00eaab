"""The backend protocol (like openpi-client's BasePolicy): `infer(observation) -> PolicyOutput`,
and the `graspvla` backend; `backends.create` makes one by name.

Every backend answers in GraspVLA's format: a bbox per view (224 px model input), the grasp
pose, and the 8×7 waypoints that the model's own post-processing makes of its raw 4×7 actions
(`postprocess`: gripper thresholds, 2× split).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from graspvla_ros.model.generate import quantize_gripper, split_actions
from graspvla_ros.policy.observation import Observation


def postprocess(actions: np.ndarray) -> np.ndarray:
    """Raw (A, 7) actions (Δxyz, Δeuler 'sxyz', gripper 0…1) → (2A, 7) waypoints, exactly the
    model's path: gripper < 0.4 → −1 close, > 0.6 → +1 open, else 0; each action in 2 halves."""
    return split_actions(quantize_gripper(np.asarray(actions, dtype=np.float64)))


@dataclass
class PolicyOutput:
    waypoints: np.ndarray          # (8, 7) Δxyz, Δrpy 'sxyz', gripper −1/0/+1
    bbox: np.ndarray               # (2, 4) x1 y1 x2 y2 per view (front, side), px of the 224×224 input
    grasp_xyz: np.ndarray          # (3,) base frame
    grasp_rpy: np.ndarray          # (3,) 'sxyz'
    timings: dict[str, float] = field(default_factory=dict)  # s, per stage
    seed: int | None = None        # the flow-noise seed it ran with (replay runs the cycle again with it)
    tokens: list[int] = field(default_factory=list)  # generated tokens (bbox, grasp goal), where the backend has them


class Backend(Protocol):
    name: str

    def infer(self, observation: Observation, seed: int | None = None) -> PolicyOutput:
        """One chunk for the observation; may raise observation.Skip with a reason. `seed`: the
        flow noise's for this cycle (replay passes the recorded one; None: the backend's own
        count); a backend without noise ignores it."""
        ...

    def reset(self) -> None:
        """A new episode starts (drop any per-episode state)."""
        ...


class GraspVLABackend:
    """`graspvla_ros.model` (torch / onnxruntime / tensorrt) on a checkpoint directory; with
    `tiny`, a tiny random checkpoint is generated first (the real code path, no weights).
    `model_options`: more keyword options for `graspvla_ros.model.load` (e.g. torch's device
    and dtype)."""

    name = "graspvla"

    def __init__(self, checkpoint: str = "", llm_dir: str = "", runtime: str = "torch", tiny: bool = False,
                 onnx_dir: str = "", seed: int = 0, work_dir: str | None = None, model_options: dict | None = None):
        from graspvla_ros.model import load

        self._tmp = None
        if tiny:
            import tempfile

            from graspvla_ros.model.tiny import make_tiny_checkpoint

            if work_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="graspvla-tiny-")
                work_dir = self._tmp.name
            checkpoint, llm_dir = (str(p) for p in make_tiny_checkpoint(work_dir, seed=seed))
        if not checkpoint:
            raise ValueError("the graspvla backend needs a checkpoint directory (or tiny)")
        options = {"onnx_dir": onnx_dir} if onnx_dir and runtime in ("onnxruntime", "tensorrt") else {}
        if runtime == "onnxruntime":
            options["threads"] = 1
        options.update(model_options or {})
        self.model = load(checkpoint, llm_dir or None, backend=runtime, **options)
        self.seed = seed
        self._cycle = 0

    def infer(self, observation: Observation, seed: int | None = None) -> PolicyOutput:
        """`seed`: the flow noise's (default: `seed` + the cycle's number in the episode); replay
        passes the recorded one."""
        start = time.perf_counter()
        self._cycle += 1
        seed = self.seed + self._cycle if seed is None else int(seed)
        p = self.model.predict(observation.front, observation.side, observation.instruction, observation.proprio,
                               seed=seed)
        return PolicyOutput(p.waypoints, p.bbox, p.grasp_xyz, p.grasp_rpy,
                            {"model": time.perf_counter() - start}, seed, [int(t) for t in p.token_ids])

    def reset(self) -> None:
        self._cycle = 0

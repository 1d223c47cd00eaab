"""The policy's backends by name: `create(name, **options)`, and the model options of a device.

A module apart from the protocol (`backend.py`), so that a backend imports the protocol and
nothing imports a backend back, and so that a node loads only the backend it runs: the expert
(it brings MuJoCo for the simulated cameras) is imported when it is created.
"""
from __future__ import annotations

import time

import numpy as np

from graspvla_ros.chunk import GRIPPER_OPEN, Pose
from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
from graspvla_ros.policy.backend import Backend, GraspVLABackend
from graspvla_ros.policy.observation import Observation, proprio_row
from graspvla_ros.policy.settings import BACKENDS


def create(name: str, **options) -> Backend:
    """The backend `name` with its options (GraspVLABackend's or ExpertBackend's arguments)."""
    if name == "graspvla":
        return GraspVLABackend(**options)
    if name == "expert":
        from graspvla_ros.policy.expert import ExpertBackend

        return ExpertBackend(**options)
    raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")


def model_options(runtime: str, device: str | None, dtype: str | None = None) -> dict:
    """The keyword options of `graspvla_ros.model.load` (GraspVLABackend's `model_options`) for
    running on `device`: `cuda` takes the fastest path the machine has (torch: bf16, static KV
    cache, CUDA graphs, torch.compile), `cpu` the official fp32 numerics; None keeps the
    backend's default. `dtype` ("float32", "bfloat16") overrides the precision."""
    if device is None and dtype is None:
        return {}
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device cuda: CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda or 'none'}); use cpu")
    if runtime != "torch" and device is not None:
        raise ValueError(f"device {device}: only the torch runtime takes a device (onnxruntime and tensorrt "
                         "use their own providers)")
    if runtime == "onnxruntime" and dtype not in (None, "float32"):
        raise ValueError(f"dtype {dtype}: the onnxruntime backend runs the float32 export")
    options: dict = {}
    if device is not None:
        from graspvla_ros.model.backends.torch_backend import fast_options

        options = fast_options(device)
    if dtype is not None:
        options["dtype"] = getattr(torch, dtype)
    return options


def warm_up(backend: Backend) -> float:
    """One inference on a black scene at the reset pose (a fast path captures and compiles its
    graphs on the first one); returns its seconds."""
    home = Pose.from_xyz_rpy(HOME_POSITION, HOME_RPY)
    black = np.zeros((256, 256, 3), np.uint8)
    start = time.perf_counter()
    backend.infer(Observation(0, "pick up banana", "banana", black, black, np.stack([proprio_row(home, GRIPPER_OPEN)] * 4),
                              home, GRIPPER_OPEN))
    return time.perf_counter() - start

"""GraspVLA: a checkpoint-compatible implementation (pure core, no rclpy).

``load(checkpoint_dir, llm_dir=None, dtype=None, backend="torch")`` → model;
``model.predict(front, side, instruction, proprio, seed=... | noise=...)`` → `Prediction`.
See docs/model.md.
"""
from importlib import import_module

_MODULES = {"BACKENDS": "backends", "GraspVLAModel": "api", "Prediction": "api", "load": "api"}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    """The names above load their module on first use: `graspvla_ros.model.backends` (the
    runtime names the policy's settings check) imports without torch or PIL."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)

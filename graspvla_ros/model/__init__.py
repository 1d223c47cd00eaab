"""GraspVLA: a checkpoint-compatible implementation (pure core, no rclpy).

``load(checkpoint_dir, llm_dir=None, dtype=None, backend="torch")`` → model;
``model.predict(front, side, instruction, proprio, seed=... | noise=...)`` → `Prediction`.
See docs/model.md.
"""
from graspvla_ros.model.api import BACKENDS, GraspVLAModel, Prediction, load

__all__ = ["BACKENDS", "GraspVLAModel", "Prediction", "load"]

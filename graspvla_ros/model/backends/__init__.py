"""Inference backends behind `graspvla_ros.model.load(..., backend=...)`: torch, onnxruntime, tensorrt.

Each module exposes ``create(checkpoint_dir, cfg, **options)`` returning `generate.Components`;
the registry is `graspvla_ros.model.api.BACKENDS`.
"""

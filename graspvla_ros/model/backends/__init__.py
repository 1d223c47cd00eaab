"""Inference backends behind `graspvla_ros.model.load(..., backend=...)`: torch, onnxruntime, tensorrt.

Each module exposes ``create(checkpoint_dir, cfg, **options)`` returning `generate.Components`;
`BACKENDS` is the registry (no backend is imported here: the policy's settings check a runtime
name against it, also where no torch is installed).
"""

BACKENDS = {
    "torch": "graspvla_ros.model.backends.torch_backend",
    "onnxruntime": "graspvla_ros.model.backends.onnxruntime_backend",
    "tensorrt": "graspvla_ros.model.backends.tensorrt_backend",
}

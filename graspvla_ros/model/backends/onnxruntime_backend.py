"""ONNX Runtime backend: the `graspvla export` graphs in ORT sessions (CPU, or CUDA when present).

``load(checkpoint_dir, backend="onnxruntime", onnx_dir=...)`` runs an existing export directory
(made from the same checkpoint: checked by the safetensors fingerprint in the manifest). Without
``onnx_dir`` the needed graphs are exported from the checkpoint into a temporary directory first
— convenient for small models and tests, but for the full model export once with
``graspvla export`` (minutes, tens of GB of RAM) and pass ``onnx_dir``.

Every call goes through I/O binding: outputs stay as OrtValues on the session's device, so the
image embeddings and the KV cache never cross to the host on CUDA; only logits and the action do.
Thread spinning is off (``session.intra_op.allow_spinning=0``): with it on, ORT's idle workers
keep cores busy and starve the ROS executors and torch sharing the machine.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from graspvla_ros.model.config import ModelConfig
from graspvla_ros.model.exported import RUNTIME_GRAPHS, ExportManifest, GraphComponents, read_export_for


def session_options(threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def default_device() -> str:
    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


class OnnxRuntimeComponents(GraphComponents):
    """One ORT session per graph of an export directory."""

    def __init__(self, export_dir: str | Path, *, threads: int | None = None, device: str | None = None,
                 graphs: Sequence[str] = RUNTIME_GRAPHS):
        export_dir = Path(export_dir)
        manifest = ExportManifest.read(export_dir)
        super().__init__(manifest)
        missing = [g for g in graphs if g not in manifest.graphs]
        if missing:
            raise FileNotFoundError(f"{export_dir} lacks the graphs {missing}: re-run `graspvla export` with them")
        self.device = device or default_device()
        if self.device == "cuda":
            providers: list = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif self.device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        self.export_dir: tempfile.TemporaryDirectory | None = None  # set when exported on the fly; removed with self
        so = session_options(threads)
        self.sessions = {g: ort.InferenceSession(str(export_dir / manifest.graphs[g].file), so, providers=providers)
                         for g in graphs}

    def _run(self, graph: str, feeds: Mapping[str, Any]) -> dict[str, ort.OrtValue]:
        session = self.sessions[graph]
        binding = session.io_binding()
        for name, value in feeds.items():
            if not isinstance(value, ort.OrtValue):
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, 0)
            binding.bind_ortvalue_input(name, value)
        names = [o.name for o in session.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs()))

    def _host(self, array: ort.OrtValue) -> np.ndarray:
        return array.numpy()


def create(checkpoint_dir: str | Path, cfg: ModelConfig, *, onnx_dir: str | Path | None = None,
           threads: int | None = None, device: str | None = None, dtype=None) -> OnnxRuntimeComponents:
    """Components for `load(..., backend="onnxruntime")`; see the module docstring."""
    if dtype is not None and str(dtype) not in ("torch.float32", "float32"):
        raise ValueError(f"the onnxruntime backend runs the fp32 export; dtype={dtype} is not supported")
    if onnx_dir is not None:
        read_export_for(onnx_dir, checkpoint_dir)
        return OnnxRuntimeComponents(onnx_dir, threads=threads, device=device)
    from graspvla_ros.model.export import export

    tmp = tempfile.TemporaryDirectory(prefix="graspvla-onnx-")
    export(checkpoint_dir, tmp.name, cfg=cfg, graphs=RUNTIME_GRAPHS)
    components = OnnxRuntimeComponents(tmp.name, threads=threads, device=device)
    components.export_dir = tmp
    return components

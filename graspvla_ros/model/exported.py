"""What an ONNX export directory holds, and how to read it back.

`graspvla export` writes one ONNX graph per model component, a stored reference input/output per
graph (``<graph>.reference.npz``) and ``manifest.json`` describing them. The ONNX Runtime and
TensorRT backends read the directory through `ExportManifest` and run it through
`GraphComponents` (the `generate.Components` protocol over named graphs, shared by both);
nothing here imports torch, onnxruntime or tensorrt.
"""
from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graspvla_ros.model.config import CHECKPOINT_FILE

FORMAT = "graspvla-onnx/1"
MANIFEST = "manifest.json"
# Every graph `graspvla export` writes, and those `GraphComponents` runs for a prediction
# (``expert_denoise`` is for per-step use).
GRAPHS = ("vision", "llm", "expert_denoise", "expert_flow")
RUNTIME_GRAPHS = ("vision", "llm", "expert_flow")
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; a str in `shape` names a dynamic axis (see `ExportManifest.dims`)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy dtype name

    def concrete(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with each dynamic axis replaced by its size in `sizes`."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class DimRange:
    """Allowed sizes of one dynamic axis; `opt` is the size engines are tuned for."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class GraphSpec:
    """One exported ONNX graph."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str  # of the .onnx file (with its external data file, if any)
    external_data: str | None = None
    reference: str = ""  # npz with "in.<name>" / "out.<name>" arrays

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Per tensor, axis index → dynamic axis name (the torch.onnx ``dynamic_axes`` form)."""
        out: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            axes = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if axes:
                out[t.name] = axes
        return out


@dataclass(frozen=True)
class ExportManifest:
    """``manifest.json`` of an export directory."""

    opset: int
    dtype: str
    checkpoint: dict[str, str | int]  # path, sha256, fingerprint, bytes of model.safetensors
    dims: dict[str, DimRange]
    graphs: dict[str, GraphSpec]
    config: dict = field(default_factory=dict)  # the model's config.json, for reference
    format: str = FORMAT

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> ExportManifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `graspvla export --checkpoint DIR --out {directory}` first")
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"{path}: format {raw.get('format')!r}, this code reads {FORMAT!r}; re-export")

        def tensors(items: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in items)

        graphs = {name: GraphSpec(g["name"], g["file"], tensors(g["inputs"]), tensors(g["outputs"]), g["sha256"],
                                  g.get("external_data"), g.get("reference", ""))
                  for name, g in raw["graphs"].items()}
        return cls(opset=raw["opset"], dtype=raw["dtype"], checkpoint=raw["checkpoint"],
                   dims={k: DimRange(**v) for k, v in raw["dims"].items()}, graphs=graphs,
                   config=raw.get("config", {}), format=raw["format"])


def save_reference(path: str | Path, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
    """Store one graph's reference input and output, for the load-time check of compiled engines."""
    np.savez(path, **{f"in.{k}": np.asarray(v) for k, v in inputs.items()},
             **{f"out.{k}": np.asarray(v) for k, v in outputs.items()})


def load_reference(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path) as z:
        ins = {k[3:]: z[k] for k in z.files if k.startswith("in.")}
        outs = {k[4:]: z[k] for k in z.files if k.startswith("out.")}
    return ins, outs


def file_sha256(*paths: str | Path) -> str:
    """sha256 over the concatenated contents of `paths` (streamed; fine for multi-GB files)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def safetensors_fingerprint(path: str | Path) -> str:
    """A cheap identity of a safetensors file: sha256 of its size and JSON header (names, shapes,
    dtypes, offsets). Checked when an export directory is used with a checkpoint, where hashing
    12.6 GB of weights on every start would cost tens of seconds; the full content hash is in the
    manifest too."""
    p = Path(path)
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n)
    return hashlib.sha256(str(p.stat().st_size).encode() + header).hexdigest()


def read_export_for(export_dir: str | Path, checkpoint_dir: str | Path) -> ExportManifest:
    """The manifest of `export_dir`, after checking it was exported from `checkpoint_dir`'s weights."""
    manifest = ExportManifest.read(export_dir)
    weights = Path(checkpoint_dir) / CHECKPOINT_FILE
    if manifest.checkpoint.get("fingerprint") != safetensors_fingerprint(weights):
        raise ValueError(f"{export_dir} was exported from {manifest.checkpoint.get('path')}, not from {weights}: "
                         f"re-run `graspvla export --checkpoint {checkpoint_dir} --out {export_dir}`")
    return manifest


@dataclass(frozen=True)
class KVCache:
    """The LLM cache between calls: backend arrays (kept on the backend's device) + its length."""

    k: Any
    v: Any
    length: int


class GraphComponents:
    """`generate.Components` over the exported graphs, shared by the ONNX Runtime and TensorRT
    backends. Subclasses provide `_run` (graph name, feeds of numpy or backend arrays → outputs by
    name, left on the device) and `_host` (a backend array → numpy)."""

    def __init__(self, manifest: ExportManifest):
        self.manifest = manifest
        llm = {t.name: t for t in manifest.graphs["llm"].inputs}
        self._empty_cache = np.zeros(llm["past_k"].concrete({"past": 0}), np.float32)
        self._no_image = np.zeros(llm["image_embeds"].concrete({"image": 0}), np.float32)
        self.image_tokens = manifest.dims["image"].max

    def _run(self, graph: str, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        raise NotImplementedError

    def _host(self, array: Any) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, front: np.ndarray, side: np.ndarray) -> Any:
        return self._run("vision", {"front": front, "side": side})["image_embeds"]

    def _llm(self, input_ids: np.ndarray, image_embeds: Any, k: Any, v: Any, length: int, image_rows: int):
        ids = np.asarray(input_ids, dtype=np.int64)
        out = self._run("llm", {"input_ids": ids[None], "image_embeds": image_embeds, "past_k": k, "past_v": v})
        return self._host(out["logits"])[0], KVCache(out["past_k_out"], out["past_v_out"], length + image_rows + len(ids))

    def prefill(self, input_ids: np.ndarray, image_embeds: Any) -> tuple[np.ndarray, KVCache]:
        return self._llm(input_ids, image_embeds, self._empty_cache, self._empty_cache, 0, self.image_tokens)

    def decode(self, input_ids: np.ndarray, cache: KVCache) -> tuple[np.ndarray, KVCache]:
        return self._llm(input_ids, self._no_image, cache.k, cache.v, cache.length, 0)

    def flow(self, noise: np.ndarray, proprio: np.ndarray, cache: KVCache) -> np.ndarray:
        out = self._run("expert_flow", {"noise": np.asarray(noise, np.float32), "proprio": np.asarray(proprio, np.float32),
                                        "prefix_k": cache.k, "prefix_v": cache.v})
        return self._host(out["action"])

    def denoise(self, x_t: np.ndarray, t: float, proprio: np.ndarray, cache: KVCache) -> np.ndarray:
        """One expert velocity evaluation (the ``expert_denoise`` graph)."""
        out = self._run("expert_denoise", {"x_t": np.asarray(x_t, np.float32), "t": np.array([t], np.float32),
                                           "proprio": np.asarray(proprio, np.float32),
                                           "prefix_k": cache.k, "prefix_v": cache.v})
        return self._host(out["velocity"])

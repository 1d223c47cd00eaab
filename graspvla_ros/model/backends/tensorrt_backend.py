"""TensorRT backend: engines built from the `graspvla export` ONNX graphs, cached per GPU.

Why this shape:

* Engines are specific to a GPU architecture and a TensorRT version, so they are cached under
  ``models/engines/<gpu-arch>/<trt-version>/`` and named after the graph, the precision and the
  hash of the ONNX they were built from: a re-export or a TensorRT upgrade builds new engines
  instead of silently loading stale ones.
* A reduced-precision engine can be wrong in ways that look plausible on a robot (an fp16
  overflow in a norm, a bad tactic). At load every engine is warmed up on the reference input
  stored by the export and compared with the stored reference output; on mismatch the backend
  refuses to run (`ReferenceMismatchError`) instead of driving the arm with a broken model.
* The KV cache lives on the GPU between calls (torch CUDA tensors handed to TensorRT by address):
  the decode and expert engines take it as explicit inputs and return the grown cache, so no
  cache ever crosses to the host.

``tensorrt`` is imported lazily: this module imports (and its pure logic is tested) where
TensorRT cannot be installed. Engine builds use the weakly typed ONNX path with the FP16/BF16
builder flags; TF32 is disabled for fp32 engines so they match the fp32 reference closely.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from graspvla_ros.model.config import ModelConfig
from graspvla_ros.model.exported import (RUNTIME_GRAPHS, DimRange, ExportManifest, GraphComponents, GraphSpec,
                                         load_reference, read_export_for)

if TYPE_CHECKING:  # only for annotations; torch (CUDA buffers) is imported lazily at run time
    import torch

UNAVAILABLE_REASON = "TensorRT cannot be installed here and no GPU is attached"
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_CACHE_ROOT = Path("models/engines")
DEFAULT_ONNX_DIR = Path("models/onnx")


@dataclass(frozen=True)
class Tolerance:
    """An engine output passes when ``max|out − ref| ≤ atol + rtol · max|ref|`` (per tensor)."""

    atol: float
    rtol: float

    def limit(self, reference: np.ndarray) -> float:
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        return self.atol + self.rtol * scale


# Starting points, not measured on a GPU (none was available): fp32 engines should agree with the
# fp32 reference to rounding; fp16 keeps ~11 mantissa bits and bf16 ~8 over 24 layers.
REFERENCE_TOLERANCE: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=1e-3, rtol=2e-2),
    "bf16": Tolerance(atol=1e-3, rtol=6e-2),
}


class ReferenceMismatchError(RuntimeError):
    """An engine's output on the stored reference input differs from the stored reference output."""


def reference_problems(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                       tolerance: Tolerance) -> list[str]:
    """What is wrong with `outputs` compared with `reference` (empty when they agree)."""
    problems = []
    for name, ref in reference.items():
        if name not in outputs:
            problems.append(f"output {name!r} missing")
            continue
        out = np.asarray(outputs[name])
        if out.shape != ref.shape:
            problems.append(f"output {name!r} has shape {out.shape}, reference {ref.shape}")
            continue
        if not np.all(np.isfinite(out)):
            problems.append(f"output {name!r} has {int(np.sum(~np.isfinite(out)))} non-finite values")
            continue
        if np.issubdtype(ref.dtype, np.integer):
            if not np.array_equal(out, ref):
                problems.append(f"output {name!r}: {int(np.sum(out != ref))} integer values differ")
            continue
        err = float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
        limit = tolerance.limit(ref)
        if not err <= limit:
            problems.append(f"output {name!r}: max abs error {err:.3g} > allowed {limit:.3g}")
    return problems


def check_reference(graph: str, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    precision: str, tolerance: Tolerance | None = None) -> None:
    """Raise `ReferenceMismatchError` naming every problem; return quietly when the engine agrees."""
    tol = tolerance or REFERENCE_TOLERANCE[precision]
    problems = reference_problems(outputs, reference, tol)
    if problems:
        raise ReferenceMismatchError(
            f"TensorRT {precision} engine for {graph!r} disagrees with the exported reference output "
            f"(atol {tol.atol:g}, rtol {tol.rtol:g}): " + "; ".join(problems)
            + ". Refusing to run it: rebuild in a higher precision (e.g. precision='fp32'), or re-export.")


def gpu_arch(capability: tuple[int, int]) -> str:
    """Directory name of a CUDA compute capability, e.g. (8, 9) → 'sm_89' (L40S, RTX 4090)."""
    major, minor = capability
    return f"sm_{major}{minor}"


def engine_path(cache_root: str | Path, graph: GraphSpec, precision: str, arch: str, trt_version: str) -> Path:
    """``<cache_root>/<arch>/<trt_version>/<graph>.<precision>.<onnx hash prefix>.engine``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not graph.sha256:
        raise ValueError(f"graph {graph.name!r} has no ONNX hash in the manifest; re-export")
    return Path(cache_root) / arch / trt_version / f"{graph.name}.{precision}.{graph.sha256[:16]}.engine"


def profile_shapes(graph: GraphSpec, dims: Mapping[str, DimRange]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every input with a dynamic axis, for a TensorRT optimisation profile."""
    out = {}
    for t in graph.inputs:
        names = [d for d in t.shape if isinstance(d, str)]
        if not names:
            continue
        missing = [d for d in names if d not in dims]
        if missing:
            raise ValueError(f"graph {graph.name!r} input {t.name!r}: no size range for axes {missing} in the manifest")
        out[t.name] = tuple(t.concrete({d: getattr(dims[d], which) for d in names}) for which in ("min", "opt", "max"))
    return out


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeError(
            "backend 'tensorrt' needs the tensorrt Python package (pip install tensorrt, from NVIDIA's "
            "index) and a CUDA GPU; use backend='onnxruntime' or 'torch' otherwise") from e
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise RuntimeError(f"backend 'tensorrt' needs TensorRT ≥ 10 (named-tensor API), found {tensorrt.__version__}")
    return tensorrt


def build_engine(onnx_path: str | Path, graph: GraphSpec, dims: Mapping[str, DimRange], precision: str,
                 workspace_bytes: int = 4 << 30) -> bytes:
    """Parse one ONNX graph (external data is found next to it) and build a serialized engine."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    else:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    shapes = profile_shapes(graph, dims)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine for {onnx_path} (see the log above)")
    return bytes(engine)


class TrtGraph:
    """One deserialized engine with an execution context; runs on torch CUDA tensors."""

    def __init__(self, name: str, engine_bytes: bytes, device: torch.device):
        trt = _import_tensorrt()
        import torch

        self.name = name
        self._torch = torch
        self._device = device
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise RuntimeError(f"could not deserialize the TensorRT engine for {name!r}; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        self._placeholder = torch.empty(64, dtype=torch.uint8, device=device)
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._dtypes: dict[str, torch.dtype] = {}
        for i in range(self._engine.num_io_tensors):
            t = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(t)
            np_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(t)))
            self._dtypes[t] = torch.from_numpy(np.empty(0, np_dtype)).dtype

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Execute on the current CUDA stream; inputs are cast/copied to the engine's dtype as needed."""
        torch = self._torch
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ValueError(f"engine {self.name!r}: missing inputs {missing}")
        keep = []  # the converted inputs must live until the engine has run
        for n in self.inputs:
            x = feeds[n].to(device=self._device, dtype=self._dtypes[n]).contiguous()
            keep.append(x)
            if not self._context.set_input_shape(n, tuple(x.shape)):
                raise ValueError(f"engine {self.name!r}: input {n!r} shape {tuple(x.shape)} outside the built profile")
            # an empty tensor (the prefill's cache, a decode step's image) still gets a valid address
            self._context.set_tensor_address(n, x.data_ptr() if x.numel() else self._placeholder.data_ptr())
        out = {}
        for n in self.outputs:
            y = torch.empty(tuple(self._context.get_tensor_shape(n)), dtype=self._dtypes[n], device=self._device)
            out[n] = y
            self._context.set_tensor_address(n, y.data_ptr())
        stream = torch.cuda.current_stream(self._device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.name!r} failed")
        stream.synchronize()
        return out


def load_engines(export_dir: str | Path, precision: str = "bf16", cache_root: str | Path = DEFAULT_CACHE_ROOT,
                 device: str = "cuda", warmup: int = 3, tolerance: Tolerance | None = None,
                 graphs: Sequence[str] = RUNTIME_GRAPHS) -> tuple[ExportManifest, dict[str, TrtGraph]]:
    """Build (once, cached) and load an engine per graph in `graphs`, warm each up and check it
    against the export's reference output; raises `ReferenceMismatchError` on disagreement."""
    trt = _import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("backend 'tensorrt' needs a CUDA GPU; none is visible to torch")
    export_dir = Path(export_dir)
    manifest = ExportManifest.read(export_dir)
    dev = torch.device(device)
    arch = gpu_arch(torch.cuda.get_device_capability(dev))
    missing = [g for g in graphs if g not in manifest.graphs]
    if missing:
        raise FileNotFoundError(f"{export_dir} lacks the graphs {missing}: re-run `graspvla export` with them")
    engines = {}
    for name in graphs:
        spec = manifest.graphs[name]
        path = engine_path(cache_root, spec, precision, arch, trt.__version__)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            data = build_engine(export_dir / spec.file, spec, manifest.dims, precision)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated engine behind
        graph = TrtGraph(name, path.read_bytes(), dev)
        ref_in, ref_out = load_reference(export_dir / spec.reference)
        feeds = {k: torch.from_numpy(v) for k, v in ref_in.items()}
        for _ in range(max(1, warmup)):
            out = graph.run(feeds)
        check_reference(name, {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                               for k, v in out.items()}, ref_out, precision, tolerance)
        engines[name] = graph
    return manifest, engines


class TensorRTComponents(GraphComponents):
    """`generate.Components` over checked TensorRT engines; caches stay on the GPU."""

    def __init__(self, export_dir: str | Path, precision: str = "bf16", cache_root: str | Path = DEFAULT_CACHE_ROOT,
                 device: str = "cuda", warmup: int = 3, tolerance: Tolerance | None = None):
        manifest, self.engines = load_engines(export_dir, precision, cache_root, device, warmup, tolerance)
        super().__init__(manifest)

    def _run(self, graph: str, feeds: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        import torch

        return self.engines[graph].run({k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                                        for k, v in feeds.items()})

    def _host(self, array: torch.Tensor) -> np.ndarray:
        return array.float().cpu().numpy()


_DTYPE_PRECISION = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def create(checkpoint_dir: str | Path, cfg: ModelConfig, *, onnx_dir: str | Path = DEFAULT_ONNX_DIR,
           precision: str | None = None, dtype=None, cache_root: str | Path = DEFAULT_CACHE_ROOT,
           device: str = "cuda", warmup: int = 3) -> TensorRTComponents:
    """Components for `load(..., backend="tensorrt")`: engines built from the export in `onnx_dir`
    (which must come from this checkpoint). precision: 'fp32' | 'fp16' | 'bf16' (default bf16, or
    from dtype=torch.float32/float16/bfloat16)."""
    if precision is None and dtype is not None:
        if str(dtype) not in _DTYPE_PRECISION:
            raise ValueError(f"dtype {dtype} has no TensorRT precision (use torch.float32/float16/bfloat16)")
        precision = _DTYPE_PRECISION[str(dtype)]
    read_export_for(onnx_dir, checkpoint_dir)
    return TensorRTComponents(onnx_dir, precision or "bf16", cache_root, device, warmup)

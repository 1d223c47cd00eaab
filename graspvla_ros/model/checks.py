"""Set-up checks of the model (`graspvla doctor`), cheap enough to run before every session: the
checkpoint as the strict loader would see it (config.json, preprocessor.npz, and the safetensors
header against the model's tensors, names and shapes, and the file's size against what the
header promises; no weight is read), the tokenizer, and whether the chosen runtime can run it
here fast enough (GPU memory, exported graphs and engines, or the CPU's speed)."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from graspvla_ros.checks import Check, fail, ok, warn
from graspvla_ros.model.config import CHECKPOINT_FILE, PREPROCESSOR_FILE, ModelConfig, Normalizer, load_config

# BENCHMARKS.md, "Model", the mid-size model (11.8 GFLOP per inference): end-to-end predict,
# median ms on 2 logical CPUs, fp32. A full-size inference on a CPU is estimated from these by
# its FLOPs (graspvla_ros.model.flops): ~2,556 GFLOP, so ~45 s with torch.
CPU_BENCH_GFLOP = 11.8
CPU_BENCH_MS = {"torch": 206.49, "onnxruntime": 143.31}
CUDA_CONTEXT_BYTES = 0.5 * 2 ** 30  # what a framework adds on the GPU (BENCHMARKS.md, bf16 memory)
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def safetensors_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """{tensor: shape} and {tensor: dtype} from a safetensors file's header, after checking that
    the file holds every byte the header describes. Raises ValueError saying what is wrong."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is {size} bytes long: truncated before its header")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ValueError(f"{path} is truncated: {_gb(size)}, shorter than its own header ({_gb(n)})")
        try:
            header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            shapes = {k: tuple(int(d) for d in t["shape"]) for k, t in header.items()}
            dtypes = {k: str(t["dtype"]) for k, t in header.items()}
            spans = {k: tuple(int(o) for o in t["data_offsets"]) for k, t in header.items()}
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{path} is not a safetensors file (its header does not parse)") from None
    for k, (begin, end) in spans.items():
        if dtypes[k] not in SAFETENSORS_BYTES or end - begin != math.prod(shapes[k]) * SAFETENSORS_BYTES[dtypes[k]]:
            raise ValueError(f"{path}: tensor {k} ({dtypes[k]} {list(shapes[k])}) does not fit its "
                             f"{end - begin} bytes: the file is damaged")
    data = max((end for _, end in spans.values()), default=0)
    if 8 + n + data > size:
        raise ValueError(f"{path} is truncated: {_gb(size)} of the {_gb(8 + n + data)} its header describes")
    if 8 + n + data < size:
        raise ValueError(f"{path} has {size - 8 - n - data} bytes after its last tensor: not a complete safetensors "
                         "file as written")
    return shapes, dtypes


def _normalizer_problem(path: Path, cfg: ModelConfig) -> str:
    """What is wrong with preprocessor.npz for `cfg` ("" if nothing)."""
    n = Normalizer.load(path)
    for name, want in (("min_proprio", cfg.proprio_dim), ("max_proprio", cfg.proprio_dim),
                       ("min_action", cfg.action_dim), ("max_action", cfg.action_dim)):
        value = getattr(n, name)
        if value.shape != (want,) or not np.all(np.isfinite(value)):
            return f"{path}: {name} has shape {list(value.shape)} (expected [{want}], finite)"
    return ""


def _weights_check(root: Path, cfg: ModelConfig) -> tuple[Check, dict[str, tuple[int, ...]] | None]:
    """preprocessor.npz and model.safetensors against the model `cfg` describes."""
    from graspvla_ros.model.checkpoint import mismatches
    from graspvla_ros.model.modeling import build_model

    again = "copy the checkpoint again (config.json, preprocessor.npz, checkpoint/model.safetensors: models/README.md)"
    weights = root / CHECKPOINT_FILE
    try:
        problem = _normalizer_problem(root / PREPROCESSOR_FILE, cfg)
        if problem:
            raise ValueError(problem)
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
        shapes, dtypes = safetensors_shapes(weights)
    except (OSError, ValueError) as err:  # ConfigError is a ValueError
        return fail("checkpoint", str(err), again), None
    expected = {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}
    problems = mismatches(expected, shapes)
    if problems:
        return fail("checkpoint", f"{weights} does not match the model its config.json describes: "
                    + "; ".join(problems), again + " (a checkpoint of another model does not load)"), None
    params = sum(math.prod(s) for s in shapes.values())
    count = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.2f} M"
    kinds = ", ".join(sorted(set(dtypes.values())))
    return ok("checkpoint", f"{root}: {count} parameters ({kinds}, {_gb(weights.stat().st_size)}) match the model, "
              "with config.json and preprocessor.npz"), shapes


def _tokenizer_check(root: Path, llm_dir: str, cfg: ModelConfig) -> Check:
    from graspvla_ros.model.tokenizer import PromptTokenizer, find_tokenizer

    try:
        path = find_tokenizer(root, llm_dir or None)
        tokenizer = PromptTokenizer(path)
    except (OSError, ValueError, RuntimeError) as err:  # sentencepiece raises RuntimeError/OSError on a bad file
        return fail("tokenizer", str(err), "pass llm_dir:=<directory with internlm2-1_8b's config.json and "
                    "tokenizer.model> (models/README.md)")
    if tokenizer.vocab_size != cfg.llm.vocab_size:
        return fail("tokenizer", f"{path} has {tokenizer.vocab_size} pieces, the LLM config {cfg.llm.vocab_size}",
                    "use the tokenizer.model of the LLM the checkpoint was trained on (internlm2-1_8b) in llm_dir")
    return ok("tokenizer", f"{path}: {tokenizer.vocab_size} pieces, as the LLM config says")


def checkpoint_checks(checkpoint: str, llm_dir: str) -> tuple[list[Check], dict[str, tuple[int, ...]] | None]:
    """The checkpoint and tokenizer checks, and the checkpoint's {tensor: shape} when it is sound."""
    if not checkpoint:
        return [fail("checkpoint", "no checkpoint given", "pass checkpoint:=<official checkpoint directory>")], None
    root = Path(checkpoint)
    try:
        cfg = load_config(root, llm_dir or None)
    except (OSError, ValueError) as err:  # ConfigError is a ValueError
        return [fail("checkpoint", str(err), "pass checkpoint:=<the directory of the release's config.json> and "
                     "llm_dir:=<internlm2-1_8b's directory> (models/README.md)")], None
    weights, shapes = _weights_check(root, cfg)
    return [weights, _tokenizer_check(root, llm_dir, cfg)], shapes


def cpu_seconds(shapes: dict[str, tuple[int, ...]], runtime: str) -> tuple[float, float]:
    """(estimated s per inference on a 2-core CPU, GFLOP per inference) of the model with these
    tensor shapes, scaled by FLOPs from the mid-size model's measurement in BENCHMARKS.md."""
    from graspvla_ros.model.flops import ModelDims, stages

    gflop = sum(s.flops for s in stages(ModelDims.from_shapes(shapes))) / 1e9
    return gflop / CPU_BENCH_GFLOP * CPU_BENCH_MS[runtime] / 1e3, gflop


def _cpu_check(shapes, runtime: str, rate_hz: float, max_chunk_age: float) -> Check:
    secs, gflop = cpu_seconds(shapes, runtime)
    what = (f"{runtime} runs on the CPU: ~{secs:.2g} s per inference ({gflop:,.{0 if gflop >= 10 else 1}f} GFLOP; "
            "BENCHMARKS.md measured "
            f"{CPU_BENCH_GFLOP / CPU_BENCH_MS[runtime] * 1e3:.0f} GFLOP/s on 2 cores)")
    fix = "run the policy on a CUDA GPU with ≥ 8 GB (docs/model.md; another host of the stack will do)"
    if secs > max_chunk_age:
        return fail("runtime", f"{what}: every chunk would be older than the controller's max_chunk_age "
                    f"({max_chunk_age:g} s) and refused", fix)
    if secs > 1.0 / rate_hz:
        return warn("runtime", f"{what}: slower than rate_hz {rate_hz:g} asks for", fix)
    return ok("runtime", what)


def _export_problem(onnx_dir: str, checkpoint: str) -> str:
    from graspvla_ros.model.exported import read_export_for

    try:
        read_export_for(onnx_dir, checkpoint)
    except (OSError, ValueError) as err:
        return str(err)
    return ""


def runtime_check(runtime: str, checkpoint: str, onnx_dir: str, shapes: dict[str, tuple[int, ...]],
                  rate_hz: float, max_chunk_age: float) -> Check:
    """Can `runtime` run this checkpoint here, and how fast: a GPU with room for it, the exported
    graphs and TensorRT engines it needs, or the CPU's estimated time per inference."""
    from graspvla_ros.model.flops import ModelDims, memory_estimate

    export = f"graspvla export --checkpoint {checkpoint} --out models/onnx, then set the policy's onnx_dir"
    if runtime == "torch":
        import torch

        if not torch.cuda.is_available():
            return _cpu_check(shapes, runtime, rate_hz, max_chunk_age)
        props = torch.cuda.get_device_properties(0)
        need = memory_estimate(ModelDims.from_shapes(shapes)).total + CUDA_CONTEXT_BYTES
        what = f"torch on {props.name} ({props.total_memory / 2 ** 30:.0f} GiB; bf16 needs ~{need / 2 ** 30:.1f} GiB)"
        if props.total_memory < need:
            return fail("runtime", what, "use a GPU with more memory")
        return ok("runtime", what)
    if runtime == "onnxruntime":
        from graspvla_ros.model.backends.onnxruntime_backend import default_device

        if not onnx_dir:
            return warn("runtime", "onnxruntime without onnx_dir: the graphs are exported at every start (minutes "
                        "and tens of GB of RAM for the full model)", export)
        problem = _export_problem(onnx_dir, checkpoint)
        if problem:
            return fail("runtime", problem, export)
        if default_device() == "cpu":
            return _cpu_check(shapes, runtime, rate_hz, max_chunk_age)
        return ok("runtime", f"onnxruntime on CUDA with the export in {onnx_dir}")
    if runtime == "tensorrt":
        from graspvla_ros.model.backends import tensorrt_backend as trt_backend

        try:
            trt = trt_backend._import_tensorrt()
        except RuntimeError as err:
            return fail("runtime", str(err), "install TensorRT ≥ 10 from NVIDIA's index, or set the policy's runtime "
                        "to torch")
        import torch

        if not torch.cuda.is_available():
            return fail("runtime", "tensorrt needs a CUDA GPU; torch sees none", "run the policy on a CUDA GPU, or "
                        "set its runtime to torch or onnxruntime")
        onnx_dir = onnx_dir or str(trt_backend.DEFAULT_ONNX_DIR)
        problem = _export_problem(onnx_dir, checkpoint)
        if problem:
            return fail("runtime", problem, export)
        from graspvla_ros.model.exported import RUNTIME_GRAPHS, ExportManifest

        manifest = ExportManifest.read(onnx_dir)
        arch = trt_backend.gpu_arch(torch.cuda.get_device_capability(0))
        engines = [trt_backend.engine_path(trt_backend.DEFAULT_CACHE_ROOT, manifest.graphs[g], "bf16", arch,
                                           trt.__version__) for g in RUNTIME_GRAPHS]
        missing = [str(p) for p in engines if not p.is_file()]
        if missing:
            return warn("runtime", f"no TensorRT {trt.__version__} engines for {arch} yet ({', '.join(missing)})",
                        "start the policy once before the robot session: it builds and checks them (minutes)")
        return ok("runtime", f"TensorRT {trt.__version__} bf16 engines for {arch} in {engines[0].parent}")
    return fail("runtime", f"unknown runtime {runtime!r}", "set the policy's runtime to torch, onnxruntime or tensorrt")


def model_checks(backend: str, checkpoint: str, llm_dir: str, runtime: str, onnx_dir: str, rate_hz: float,
                 max_chunk_age: float) -> list[Check]:
    """Every model check of the policy as configured (its backend, checkpoint, tokenizer, runtime)."""
    if backend != "graspvla":
        return [fail("policy", f"backend {backend!r}: it runs only in simulation (scripted grasps from the "
                     "simulator's ground truth)", "pass backend:=graspvla checkpoint:=<dir> llm_dir:=<dir>")]
    checks, shapes = checkpoint_checks(checkpoint, llm_dir)
    if shapes is not None:
        checks.append(runtime_check(runtime, checkpoint, onnx_dir, shapes, rate_hz, max_chunk_age))
    return checks

"""TensorRT backend: the logic that runs without TensorRT (engine cache layout, optimisation
profiles, the reference check that refuses a wrong engine) and the export manifest it reads."""
from __future__ import annotations

import numpy as np
import pytest

from graspvla_ros.model.backends.tensorrt_backend import (
    REFERENCE_TOLERANCE,
    UNAVAILABLE_REASON,
    ReferenceMismatchError,
    Tolerance,
    check_reference,
    engine_path,
    gpu_arch,
    profile_shapes,
    reference_problems,
)
from graspvla_ros.model.exported import (
    RUNTIME_GRAPHS,
    DimRange,
    ExportManifest,
    GraphSpec,
    TensorSpec,
    load_reference,
    save_reference,
)

LLM_GRAPH = GraphSpec(
    name="llm", file="llm.onnx", sha256="ab" * 32, reference="llm.reference.npz",
    inputs=(TensorSpec("input_ids", (1, "new"), "int64"), TensorSpec("past_k", (2, 1, 1, "past", 32), "float32")),
    outputs=(TensorSpec("logits", (1, "new", 100), "float32"),),
)
DIMS = {"new": DimRange(1, 1, 16), "past": DimRange(1, 560, 1024)}


def test_engine_cache_path_is_per_arch_trt_version_precision_and_onnx_hash(tmp_path):
    p = engine_path(tmp_path, LLM_GRAPH, "bf16", gpu_arch((8, 9)), "10.3.0")
    assert p == tmp_path / "sm_89" / "10.3.0" / f"llm.bf16.{'ab' * 8}.engine"
    other = GraphSpec(**{**LLM_GRAPH.__dict__, "sha256": "cd" * 32})
    assert engine_path(tmp_path, other, "bf16", "sm_89", "10.3.0") != p  # a re-export rebuilds
    assert gpu_arch((9, 0)) == "sm_90"
    with pytest.raises(ValueError, match="precision"):
        engine_path(tmp_path, LLM_GRAPH, "int8", "sm_89", "10.3.0")
    with pytest.raises(ValueError, match="re-export"):
        engine_path(tmp_path, GraphSpec(**{**LLM_GRAPH.__dict__, "sha256": ""}), "fp16", "sm_89", "10.3.0")


def test_optimisation_profile_covers_the_dynamic_axes():
    shapes = profile_shapes(LLM_GRAPH, DIMS)
    assert shapes["input_ids"] == ((1, 1), (1, 1), (1, 16))
    assert shapes["past_k"] == ((2, 1, 1, 1, 32), (2, 1, 1, 560, 32), (2, 1, 1, 1024, 32))
    with pytest.raises(ValueError, match="past"):
        profile_shapes(LLM_GRAPH, {"new": DIMS["new"]})


def test_reference_check_accepts_an_engine_within_tolerance():
    rng = np.random.default_rng(0)
    ref = {"logits": rng.standard_normal((1, 3, 100)).astype(np.float32), "ids": np.arange(4)}
    close = {"logits": ref["logits"] + 1e-3, "ids": np.arange(4)}
    check_reference("llm", close, ref, "fp16")
    assert reference_problems(close, ref, REFERENCE_TOLERANCE["fp16"]) == []


@pytest.mark.parametrize("bad, reason", [
    (lambda r: {**r, "logits": r["logits"] + 1.0}, "max abs error"),
    (lambda r: {**r, "logits": r["logits"][:, :2]}, "shape"),
    (lambda r: {**r, "logits": np.where(r["logits"] > 0, np.nan, r["logits"])}, "non-finite"),
    (lambda r: {"ids": r["ids"]}, "missing"),
    (lambda r: {**r, "ids": r["ids"] + 1}, "integer values differ"),
])
def test_reference_check_refuses_a_wrong_engine(bad, reason):
    rng = np.random.default_rng(1)
    ref = {"logits": rng.standard_normal((1, 3, 100)).astype(np.float32), "ids": np.arange(4)}
    with pytest.raises(ReferenceMismatchError, match=reason) as e:
        check_reference("llm", bad(ref), ref, "bf16")
    assert "'llm'" in str(e.value) and "Refusing to run" in str(e.value)


def test_tolerance_scales_with_the_reference_magnitude():
    tol = Tolerance(atol=1e-3, rtol=1e-2)
    assert tol.limit(np.array([-50.0, 10.0])) == pytest.approx(1e-3 + 0.5)


def test_manifest_and_reference_round_trip(tmp_path):
    m = ExportManifest(opset=17, dtype="float32", checkpoint={"sha256": "x"}, dims=DIMS,
                       graphs={"llm": LLM_GRAPH})
    m.write(tmp_path)
    back = ExportManifest.read(tmp_path)
    assert back == m
    assert back.graphs["llm"].dynamic_axes == {"input_ids": {1: "new"}, "past_k": {3: "past"},
                                                      "logits": {1: "new"}}
    save_reference(tmp_path / "r.npz", {"input_ids": np.array([[3]])}, {"logits": np.ones((1, 1, 2), np.float32)})
    ins, outs = load_reference(tmp_path / "r.npz")
    assert ins["input_ids"].tolist() == [[3]] and outs["logits"].shape == (1, 1, 2)


def test_missing_manifest_names_the_export_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="graspvla export"):
        ExportManifest.read(tmp_path)


def _tensorrt_and_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    import torch

    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(not _tensorrt_and_gpu(), reason=UNAVAILABLE_REASON)
VIEWS = (np.full((480, 640, 3), 90, np.uint8), np.full((256, 256, 3), 160, np.uint8))
PROPRIO = np.tile([0.45, 0.02, 0.3, 3.1, -0.05, 0.8, 1.0], (4, 1))


@needs_tensorrt
def test_fp32_engines_are_cached_checked_and_agree_with_ort(tiny_checkpoint, tiny_onnx, tmp_path):
    from graspvla_ros.model import load

    trt_model = load(*tiny_checkpoint, backend="tensorrt", onnx_dir=tiny_onnx, precision="fp32", cache_root=tmp_path)
    engines = sorted(tmp_path.glob("sm_*/*/*.engine"))
    assert len(engines) == len(RUNTIME_GRAPHS)
    ort_model = load(*tiny_checkpoint, backend="onnxruntime", onnx_dir=tiny_onnx)
    a = ort_model.predict(*VIEWS, "pick up banana", PROPRIO, seed=5)
    b = trt_model.predict(*VIEWS, "pick up banana", PROPRIO, seed=5)
    assert b.token_ids == a.token_ids
    assert np.max(np.abs(b.action - a.action)) <= 1e-3
    stamps = [p.stat().st_mtime_ns for p in engines]
    load(*tiny_checkpoint, backend="tensorrt", onnx_dir=tiny_onnx, precision="fp32", cache_root=tmp_path)
    assert [p.stat().st_mtime_ns for p in engines] == stamps  # reused, not rebuilt


@needs_tensorrt
def test_an_engine_that_disagrees_with_the_reference_is_refused(tiny_checkpoint, tiny_onnx, tmp_path):
    import shutil

    from graspvla_ros.model import load

    copy = shutil.copytree(tiny_onnx, tmp_path / "onnx")
    ref = copy / "expert_flow.reference.npz"
    ins, outs = load_reference(ref)
    save_reference(ref, ins, {k: v + 1.0 for k, v in outs.items()})
    with pytest.raises(ReferenceMismatchError, match="expert_flow"):
        load(*tiny_checkpoint, backend="tensorrt", onnx_dir=copy, precision="fp32", cache_root=tmp_path / "engines")

"""benchmarks.gpu, the one-shot GPU benchmark, runs on CPU with the tiny model (so it cannot rot)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_report import markdown

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("vision", "prefill", "decode", "flow", "end_to_end")


@pytest.fixture(scope="module")
def check_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "gpu.json"
    before = (ROOT / "BENCHMARKS.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (ROOT / "BENCHMARKS.md").read_text() == before  # only --write-benchmarks writes it
    return json.loads(out.read_text()), proc.stdout


def test_cpu_tiny_run_measures_every_configuration_it_can(check_run):
    results, stdout = check_run
    env, configs = results["env"], results["configs"]
    assert env["device"] == "cpu" and env["size"] == "tiny" and env["torch"] and env["device_name"].startswith("CPU")
    assert list(configs) == ["fp32", "fp32-static", "bf16", "bf16-static", "bf16-compile"]
    for key in ("fp32", "fp32-static", "bf16", "bf16-static"):
        c = configs[key]
        assert c["status"] == "ok", c
        assert c["repeats"] >= 3 and c["decode_calls"] == 15 and c["repeatable"]
        assert all(0 < c["stages_ms"][s]["min"] <= c["stages_ms"][s]["median"] for s in STAGES)
        assert sum(c["stages_ms"][s]["min"] for s in STAGES[:4]) <= c["stages_ms"]["end_to_end"]["median"]
        assert len(c["token_ids"]) == 15 and len(c["waypoints"]) == 8
    # on CPU the CUDA-graph configurations say so, and compile is skipped with a reason
    assert configs["bf16-static"]["label"] == "bf16 + static cache (no CUDA graphs on CPU)"
    assert not configs["bf16-static"]["cuda_graphs"] and configs["bf16-static"]["static_cache"]
    assert configs["bf16-compile"]["status"] == "skipped" and "CPU" in configs["bf16-compile"]["reason"]
    # the static-cache path agrees with the eager path: identical tokens in fp32, waypoints ≤ 1e-5
    a = results["agreement"]["fp32-static vs fp32"]
    assert a["tokens_equal"] == a["tokens"] == 15 and a["first_difference"] is None
    assert a["waypoints_max_abs"] <= 1e-5 and a["action_max_abs"] <= 1e-5
    # bf16 is reported, not required to agree: rounding differs between the paths and random
    # weights give close logits
    assert {"bf16 vs fp32", "bf16-static vs fp32", "bf16-static vs bf16"} <= set(results["agreement"])
    for b in (results["agreement"][k] for k in ("bf16 vs fp32", "bf16-static vs fp32", "bf16-static vs bf16")):
        assert 0 <= b["tokens_equal"] <= b["tokens"] == 15 and 0 <= b["waypoints_max_abs"] < 10
    # what the run needed: nothing a plain PyTorch GPU machine may lack
    assert {"torch", "numpy", "timm"} <= set(results["packages_loaded"])
    assert not {"cv2", "sentencepiece", "scipy", "onnxruntime", "rclpy", "transforms3d"} & set(results["packages_loaded"])
    # progress lines with elapsed time, and the table with its honest label
    assert "] fp32: first call" in stdout and "] bf16-static: 3 runs" in stdout
    assert "GPU numbers: unmeasured" in stdout and "| bf16 + static cache (no CUDA graphs on CPU) |" in stdout


def test_a_gpu_run_with_a_failed_configuration_renders_what_it_measured(check_run):
    """What a lent machine brings back (--out) renders into the BENCHMARKS.md section, errors included."""
    results = copy.deepcopy(check_run[0])
    results["env"].update(device="cuda", device_name="NVIDIA H200", capability="9.0", device_memory_gib=139.8)
    results["configs"]["bf16"]["peak_memory_bytes"] = 7 * 2**30
    results["configs"]["bf16-compile"] = {"label": "bf16 + static cache + torch.compile + CUDA graphs",
                                          "status": "error", "error": "BackendCompilerFailed: no C compiler"}
    md = markdown(results)
    assert "**NVIDIA H200**" in md and "GPU numbers: unmeasured" not in md
    assert "| bf16 eager |" in md and "7.00 GiB" in md
    assert "`bf16-compile` error: BackendCompilerFailed: no C compiler" in md


def test_time_budget_skips_instead_of_overrunning(tmp_path):
    from benchmarks.gpu import main

    out = tmp_path / "gpu.json"
    assert main(["--check", "--budget-s", "0", "--out", str(out)]) == 0
    configs = json.loads(out.read_text())["configs"]
    assert {c["status"] for c in configs.values()} == {"skipped"}
    assert "time budget" in configs["fp32"]["reason"]


def test_model_path_imports_nothing_a_plain_pytorch_gpu_box_may_lack():
    """benchmarks.gpu runs on a machine with only torch, numpy, timm (PIL via torchvision)."""
    code = ("import sys, graspvla_ros.model, graspvla_ros.model.backends.torch_backend, "
            "graspvla_ros.model.backends.torch_static, graspvla_ros.model.random_model, benchmarks.gpu; "
            "print(sorted(m for m in ('cv2', 'sentencepiece', 'scipy', 'safetensors', 'onnxruntime', 'onnx', "
            "'transforms3d', 'rclpy', 'zmq', 'pyrealsense2', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_gpu_run_builds_the_released_structure():
    """benchmarks.gpu's full size is the official tree (tests/fixtures/full_manifest.json), on the meta device."""
    from graspvla_ros.model.modeling import build_model
    from graspvla_ros.model.random_model import FixedTokenizer, full_config

    manifest = json.loads((ROOT / "tests" / "fixtures" / "full_manifest.json").read_text())
    cfg = full_config()
    model = build_model(cfg, device="meta")
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == [e[:2] for e in manifest["entries"]]
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]
    ids = FixedTokenizer(cfg.llm.vocab_size).encode_prompt("pick up banana")
    assert ids[0] == 1 and 15 <= len(ids) <= 25 and all(3 <= i < cfg.llm.vocab_size - 256 for i in ids[1:])

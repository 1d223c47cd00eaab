"""ONNX export and the ONNX Runtime backend against the torch implementation (tiny random model, fp32)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from graspvla_ros.model import load
from graspvla_ros.model.cli import main as cli_main
from graspvla_ros.model.config import CHECKPOINT_FILE, load_config
from graspvla_ros.model.export import GRAPHS, export, graph_modules, load_fp32_model
from graspvla_ros.model.exported import ExportManifest, file_sha256, load_reference

TOL = 1e-4


@pytest.fixture(scope="module")
def manifest(tiny_onnx) -> ExportManifest:
    return ExportManifest.read(tiny_onnx)


@pytest.fixture(scope="module")
def torch_graphs(tiny_checkpoint):
    ckpt, llm = tiny_checkpoint
    return graph_modules(load_fp32_model(ckpt, load_config(ckpt, llm)))


def _session(directory, manifest, graph) -> ort.InferenceSession:
    return ort.InferenceSession(str(directory / manifest.graphs[graph].file), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def views():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)


PROPRIO = np.tile([0.45, 0.02, 0.3, 3.1, -0.05, 0.8, 1.0], (4, 1))


def test_export_writes_checked_graphs_and_a_manifest(tiny_onnx, tiny_checkpoint, manifest):
    assert list(manifest.graphs) == list(GRAPHS)
    assert manifest.opset == 17 and manifest.dtype == "float32"
    assert manifest.checkpoint["sha256"] == file_sha256(tiny_checkpoint[0] / CHECKPOINT_FILE)
    for g in manifest.graphs.values():
        path = tiny_onnx / g.file
        onnx.checker.check_model(str(path))
        assert g.external_data is None and file_sha256(path) == g.sha256
        model = onnx.load(str(path), load_external_data=False)
        assert model.opset_import[0].version == 17
        assert [i.name for i in model.graph.input] == [t.name for t in g.inputs]
        for t, vi in zip(g.inputs, model.graph.input):
            dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            assert dims == list(t.shape), t.name
    decode = manifest.graphs["llm_decode"].dynamic_axes
    assert decode["past_k"] == {3: "past"} and decode["input_ids"] == {1: "new"}
    assert "vision" not in {n for n, g in manifest.graphs.items() if g.dynamic_axes}
    assert json.loads((tiny_onnx / "manifest.json").read_text())["format"] == "graspvla-onnx/1"


@pytest.mark.parametrize("graph", GRAPHS)
def test_ort_matches_the_stored_torch_reference(tiny_onnx, manifest, graph):
    ins, outs = load_reference(tiny_onnx / manifest.graphs[graph].reference)
    got = _session(tiny_onnx, manifest, graph).run(None, ins)
    for spec, value in zip(manifest.graphs[graph].outputs, got):
        assert value.shape == outs[spec.name].shape
        assert np.max(np.abs(value - outs[spec.name])) <= TOL, spec.name


def test_dynamic_axes_follow_other_lengths(tiny_onnx, manifest, torch_graphs):
    """Shorter prompt, 1- and 15-token decode steps, a longer expert prefix: ORT == torch."""
    ins, _ = load_reference(tiny_onnx / manifest.graphs["llm_prefill"].reference)
    pre = {"input_ids": ins["input_ids"][:, :6], "image_embeds": ins["image_embeds"]}
    logits, k, v = _session(tiny_onnx, manifest, "llm_prefill").run(None, pre)
    with torch.no_grad():
        ref = torch_graphs["llm_prefill"](*(torch.from_numpy(pre[n]) for n in pre))
    assert k.shape[3] == 6 + pre["image_embeds"].shape[1]
    for a, b in zip((logits, k, v), ref):
        assert np.max(np.abs(a - b.numpy())) <= TOL
    decode = _session(tiny_onnx, manifest, "llm_decode")
    rng = np.random.default_rng(0)
    for n in (1, 15):
        p = k.shape[3]
        feeds = {"input_ids": rng.integers(3, 600, (1, n)), "position_ids": np.arange(p, p + n)[None],
                 "past_k": k, "past_v": v}
        out = decode.run(None, feeds)
        with torch.no_grad():
            ref = torch_graphs["llm_decode"](*(torch.from_numpy(feeds[t]) for t in feeds))
        for a, b in zip(out, ref):
            assert np.max(np.abs(a - b.numpy())) <= TOL
        k, v = out[1], out[2]
    flow_in = {"noise": rng.standard_normal((1, 4, 7)).astype(np.float32),
               "proprio": rng.uniform(-1, 1, (1, 2, 7)).astype(np.float32), "prefix_k": k, "prefix_v": v}
    (action,) = _session(tiny_onnx, manifest, "expert_flow").run(None, flow_in)
    with torch.no_grad():
        ref = torch_graphs["expert_flow"](*(torch.from_numpy(flow_in[t]) for t in flow_in))
    assert np.max(np.abs(action - ref.numpy())) <= TOL


def test_ort_backend_gives_torchs_tokens_and_chunk(tiny_checkpoint, tiny_onnx, views):
    a = load(*tiny_checkpoint).predict(*views, "pick up banana", PROPRIO, seed=3, keep_logits=True)
    b = load(*tiny_checkpoint, backend="onnxruntime", onnx_dir=tiny_onnx, threads=1).predict(
        *views, "pick up banana", PROPRIO, seed=3, keep_logits=True)
    assert b.token_ids == a.token_ids
    assert max(np.max(np.abs(x - y)) for x, y in zip(a.step_logits, b.step_logits)) <= TOL
    assert np.max(np.abs(b.action - a.action)) <= TOL
    assert np.max(np.abs(b.waypoints - a.waypoints)) <= TOL
    np.testing.assert_array_equal(b.bbox, a.bbox)


def test_ort_backend_exports_on_the_fly_and_is_seed_deterministic(tiny_checkpoint, views):
    model = load(*tiny_checkpoint, backend="onnxruntime", threads=1)
    first = model.predict(*views, "pick up the carrot", PROPRIO, seed=11)
    again = model.predict(*views, "pick up the carrot", PROPRIO, seed=11)
    other = model.predict(*views, "pick up the carrot", PROPRIO, seed=12)
    np.testing.assert_array_equal(first.action, again.action)
    np.testing.assert_array_equal(first.waypoints, again.waypoints)
    assert first.token_ids == again.token_ids
    assert not np.array_equal(first.action, other.action)


def test_ort_backend_refuses_an_export_of_another_checkpoint(tiny_checkpoint, tiny_onnx, tmp_path):
    copy = shutil.copytree(tiny_onnx, tmp_path / "onnx")
    raw = json.loads((copy / "manifest.json").read_text())
    raw["checkpoint"]["fingerprint"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="re-run `graspvla export"):
        load(*tiny_checkpoint, backend="onnxruntime", onnx_dir=copy)
    with pytest.raises(ValueError, match="fp32"):
        load(*tiny_checkpoint, backend="onnxruntime", onnx_dir=tiny_onnx, dtype=torch.bfloat16)


def test_external_data_and_the_cli(tiny_checkpoint, tmp_path, capsys):
    ckpt, llm = tiny_checkpoint
    m = export(ckpt, tmp_path / "ext", llm_dir=llm, graphs=["expert_denoise"], external_threshold=0)
    g = m.graphs["expert_denoise"]
    assert g.external_data == "expert_denoise.onnx.data" and (tmp_path / "ext" / g.external_data).stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == [
        "expert_denoise.onnx", "expert_denoise.onnx.data", "expert_denoise.reference.npz", "manifest.json"]
    ins, outs = load_reference(tmp_path / "ext" / g.reference)
    (velocity,) = _session(tmp_path / "ext", m, "expert_denoise").run(None, ins)
    assert np.max(np.abs(velocity - outs["velocity"])) <= TOL

    assert cli_main(["export", "--checkpoint", str(ckpt), "--llm-dir", str(llm), "--out", str(tmp_path / "cli"),
                     "--graphs", "vision"]) == 0
    assert "vision: " in capsys.readouterr().out and (tmp_path / "cli" / "vision.onnx").is_file()
    assert cli_main(["export", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "config.json not found" in capsys.readouterr().err

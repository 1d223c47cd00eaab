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
from graspvla_ros.cli import main as cli_main
from graspvla_ros.model.components import ExpertFlow, LLMDecode, LLMPrefill, TokenEmbedding, insert_image_embeddings
from graspvla_ros.model.config import CHECKPOINT_FILE, load_config
from graspvla_ros.model.export import GRAPHS, export, load_fp32_model
from graspvla_ros.model.exported import ExportManifest, file_sha256, load_reference

TOL = 1e-4


@pytest.fixture(scope="module")
def manifest(tiny_onnx) -> ExportManifest:
    return ExportManifest.read(tiny_onnx)


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    ckpt, llm = tiny_checkpoint
    return load_fp32_model(ckpt, load_config(ckpt, llm))


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
    llm = manifest.graphs["llm"].dynamic_axes
    assert llm == {"input_ids": {1: "new"}, "image_embeds": {1: "image"}, "past_k": {3: "past"}, "past_v": {3: "past"},
                   "past_k_out": {3: "total"}, "past_v_out": {3: "total"}}
    assert "vision" not in {n for n, g in manifest.graphs.items() if g.dynamic_axes}
    assert json.loads((tiny_onnx / "manifest.json").read_text())["format"] == "graspvla-onnx/1"


@pytest.mark.parametrize("graph", GRAPHS)
def test_ort_matches_the_stored_torch_reference(tiny_onnx, manifest, graph):
    ins, outs = load_reference(tiny_onnx / manifest.graphs[graph].reference)
    got = _session(tiny_onnx, manifest, graph).run(None, ins)
    for spec, value in zip(manifest.graphs[graph].outputs, got):
        assert value.shape == outs[spec.name].shape
        assert np.max(np.abs(value - outs[spec.name])) <= TOL, spec.name


def test_llm_graph_is_the_prefill_and_the_decode_step(tiny_onnx, manifest, torch_model):
    """`llm` with an empty cache = LLMPrefill on [BOS, image, prompt]; with the cache and no image =
    LLMDecode's last position, for 1- and 15-token steps; `expert_flow` on the grown cache = ExpertFlow."""
    cfg = torch_model.cfg
    step = _session(tiny_onnx, manifest, "llm")
    vision_in, _ = load_reference(tiny_onnx / manifest.graphs["vision"].reference)
    (image,) = _session(tiny_onnx, manifest, "vision").run(None, vision_in)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.llm.vocab_size, (1, 6))
    empty = np.zeros((cfg.llm.num_layers, 1, cfg.llm.num_kv_heads, 0, cfg.llm.head_dim), np.float32)
    logits, k, v = step.run(None, {"input_ids": ids, "image_embeds": image, "past_k": empty, "past_v": empty})
    with torch.no_grad():
        embeds = insert_image_embeddings(TokenEmbedding(torch_model)(torch.from_numpy(ids)), torch.from_numpy(image))
        ref = LLMPrefill(torch_model)(embeds, torch.arange(embeds.shape[1])[None])
    assert k.shape[3] == 6 + image.shape[1]
    for a, b in zip((logits, k, v), ref):
        assert np.max(np.abs(a - b.numpy())) <= TOL
    no_image = np.zeros((1, 0, cfg.llm.hidden_size), np.float32)
    for n in (1, 15):
        p = k.shape[3]
        new = rng.integers(3, cfg.llm.vocab_size, (1, n))
        logits, k2, v2 = step.run(None, {"input_ids": new, "image_embeds": no_image, "past_k": k, "past_v": v})
        with torch.no_grad():
            ref_logits, ref_k, ref_v = LLMDecode(torch_model)(
                torch.from_numpy(new), torch.arange(p, p + n)[None], torch.from_numpy(k), torch.from_numpy(v))
        assert np.max(np.abs(logits - ref_logits[:, -1].numpy())) <= TOL
        assert np.max(np.abs(k2 - ref_k.numpy())) <= TOL and np.max(np.abs(v2 - ref_v.numpy())) <= TOL
        k, v = k2, v2
    flow_in = {"noise": rng.standard_normal((1, 4, 7)).astype(np.float32),
               "proprio": rng.uniform(-1, 1, (1, 2, 7)).astype(np.float32), "prefix_k": k, "prefix_v": v}
    (action,) = _session(tiny_onnx, manifest, "expert_flow").run(None, flow_in)
    with torch.no_grad():
        ref = ExpertFlow(torch_model)(*(torch.from_numpy(flow_in[t]) for t in flow_in))
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

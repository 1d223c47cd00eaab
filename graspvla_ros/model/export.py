"""``graspvla export``: the inference components of a checkpoint as ONNX graphs.

Graphs (fp32, built from `graspvla_ros.model.components`; "dyn" marks dynamic axes, named as in
the manifest's ``dims``):

==============  ====================================================  ===================================
graph           inputs                                                outputs
==============  ====================================================  ===================================
vision          front, side (1, 3, 224, 224) f32 in [0, 1]            image_embeds (1, 512, H)
llm_prefill     input_ids (1, prompt dyn) int64 [BOS, prompt]         logits (1, V) last position
                image_embeds (1, 512, H)                              past_k, past_v (L, 1, KV, prefill, D)
llm_decode      input_ids, position_ids (1, new dyn) int64            logits (1, new, V)
                past_k, past_v (L, 1, KV, past dyn, D)                past_k_out, past_v_out (…, past+new, D)
expert_denoise  x_t (1, A, 7), t (1,), proprio (1, 2, 7)              velocity (1, A, 7)
                prefix_k, prefix_v (L, 1, KV, prefix dyn, D)
expert_flow     noise (1, A, 7), proprio (1, 2, 7), prefix_k/v        action (1, A, 7) normalised
==============  ====================================================  ===================================

``llm_prefill`` takes token ids and the vision output and does the embedding lookup and the image
insertion itself ([BOS, image, prompt], positions 0…S−1), so neither the embedding table nor the
image embeddings pass through the host. ``expert_flow`` is the 10-step Euler loop unrolled (one
call per chunk); ``expert_denoise`` is one step (for engines that loop on the host, and for
per-step benchmarks).

Each graph is checked with ``onnx.checker`` and run once on a reference input; that input and the
torch output are stored as ``<graph>.reference.npz`` (the references chain: the prefill reference
uses the vision reference output, decode and expert use the prefill cache). Graphs whose weights
exceed 2 GB (protobuf's limit) keep them in one external file ``<graph>.onnx.data`` next to the
graph. ``manifest.json`` records shapes, dynamic axes and their size ranges, opset, dtype and the
source checkpoint's hashes.

Uses the TorchScript-based ``torch.onnx`` exporter (the dynamo exporter needs onnxscript, which is
not a dependency); its deprecation warning is silenced.
"""
from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graspvla_ros.model.checkpoint import load_weights
from graspvla_ros.model.components import (ExpertDenoise, ExpertFlow, LLMDecode, LLMPrefill, TokenEmbedding,
                                           VisionEncoder, insert_image_embeddings)
from graspvla_ros.model.config import CHECKPOINT_FILE, ModelConfig, load_config
from graspvla_ros.model.exported import (DimRange, ExportManifest, GraphSpec, TensorSpec, file_sha256,
                                         safetensors_fingerprint, save_reference)
from graspvla_ros.model.modeling import GraspVLA, build_model

GRAPHS = ("vision", "llm_prefill", "llm_decode", "expert_denoise", "expert_flow")
DEFAULT_OPSET = 17
PROTOBUF_LIMIT = 2 * 1024 ** 3
MAX_NEW_TOKENS = 32  # tokens one decode call may feed (the official schedule feeds at most 15)
REFERENCE_PROMPT_TOKENS = 20  # prompt length of the stored reference (a typical instruction)


class PrefillFromIds(nn.Module):
    """[BOS, image, prompt] from token ids and the vision output → `LLMPrefill`."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.embed = TokenEmbedding(model)
        self.prefill = LLMPrefill(model)

    def forward(self, input_ids: torch.Tensor, image_embeds: torch.Tensor):
        x = insert_image_embeddings(self.embed(input_ids), image_embeds)
        position_ids = torch.arange(x.shape[1], device=x.device)[None]
        return self.prefill(x, position_ids)


def graph_modules(model: GraspVLA) -> dict[str, nn.Module]:
    """The torch module each graph is exported from (and compared with)."""
    return {"vision": VisionEncoder(model), "llm_prefill": PrefillFromIds(model), "llm_decode": LLMDecode(model),
            "expert_denoise": ExpertDenoise(model), "expert_flow": ExpertFlow(model)}


def graph_io(cfg: ModelConfig) -> dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]:
    """Input and output specs of every graph for `cfg`."""
    h, v, a = cfg.llm.hidden_size, cfg.embedding_rows, cfg.action_len
    s = cfg.vision.image_size

    def kv(name: str, axis: str) -> TensorSpec:
        return TensorSpec(name, (cfg.llm.num_layers, 1, cfg.llm.num_kv_heads, axis, cfg.llm.head_dim), "float32")

    f32, i64 = "float32", "int64"
    image = TensorSpec("image_embeds", (1, cfg.image_tokens, h), f32)
    suffix = (TensorSpec("proprio", (1, cfg.proprio_len, cfg.proprio_dim), f32), kv("prefix_k", "prefix"),
              kv("prefix_v", "prefix"))
    action = (1, a, cfg.action_dim)
    return {
        "vision": ((TensorSpec("front", (1, 3, s, s), f32), TensorSpec("side", (1, 3, s, s), f32)), (image,)),
        "llm_prefill": ((TensorSpec("input_ids", (1, "prompt"), i64), image),
                        (TensorSpec("logits", (1, v), f32), kv("past_k", "prefill"), kv("past_v", "prefill"))),
        "llm_decode": ((TensorSpec("input_ids", (1, "new"), i64), TensorSpec("position_ids", (1, "new"), i64),
                        kv("past_k", "past"), kv("past_v", "past")),
                       (TensorSpec("logits", (1, "new", v), f32), kv("past_k_out", "past_plus_new"),
                        kv("past_v_out", "past_plus_new"))),
        "expert_denoise": ((TensorSpec("x_t", action, f32), TensorSpec("t", (1,), f32), *suffix),
                           (TensorSpec("velocity", action, f32),)),
        "expert_flow": ((TensorSpec("noise", action, f32), *suffix), (TensorSpec("action", action, f32),)),
    }


def dim_ranges(cfg: ModelConfig) -> dict[str, DimRange]:
    """Size ranges of the dynamic axes (TensorRT optimisation profiles; `opt` = a typical request)."""
    max_len = int(cfg.raw.get("model", {}).get("llm", {}).get("max_len", 2048))
    prompt = 1 + REFERENCE_PROMPT_TOKENS
    prefix = prompt + cfg.image_tokens
    return {"prompt": DimRange(1, prompt, max_len - cfg.image_tokens),
            "prefill": DimRange(1 + cfg.image_tokens, prefix, max_len),
            "new": DimRange(1, 1, MAX_NEW_TOKENS),
            "past": DimRange(1, prefix, max_len),
            "past_plus_new": DimRange(2, prefix + 1, max_len + MAX_NEW_TOKENS),
            "prefix": DimRange(1, prefix + 29, max_len)}


@torch.no_grad()
def reference_inputs(model: GraspVLA, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A consistent example input per graph: random views, a prompt of typical length, the cache
    the prefill produces, a 3-token decode step, seeded noise and proprio."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    views = {"front": torch.rand((1, 3, s, s), generator=g), "side": torch.rand((1, 3, s, s), generator=g)}
    image = VisionEncoder(model)(**views)
    ids = torch.randint(3, cfg.llm.vocab_size, (1, 1 + REFERENCE_PROMPT_TOKENS), generator=g)
    ids[0, 0] = cfg.llm.bos_token_id
    _, past_k, past_v = PrefillFromIds(model)(ids, image)
    p = past_k.shape[3]
    new = torch.randint(3, cfg.llm.vocab_size, (1, 3), generator=g)
    proprio = torch.rand((1, cfg.proprio_len, cfg.proprio_dim), generator=g) * 2 - 1
    action = (1, cfg.action_len, cfg.action_dim)
    suffix = {"proprio": proprio, "prefix_k": past_k, "prefix_v": past_v}
    return {
        "vision": views,
        "llm_prefill": {"input_ids": ids, "image_embeds": image},
        "llm_decode": {"input_ids": new, "position_ids": torch.arange(p, p + 3)[None], "past_k": past_k,
                       "past_v": past_v},
        "expert_denoise": {"x_t": torch.randn(action, generator=g), "t": torch.tensor([0.7]), **suffix},
        "expert_flow": {"noise": torch.randn(action, generator=g), **suffix},
    }


def load_fp32_model(checkpoint_dir: str | Path, cfg: ModelConfig) -> GraspVLA:
    model = build_model(cfg, device="meta")
    return load_weights(model, Path(checkpoint_dir) / CHECKPOINT_FILE, "cpu", torch.float32)


def _write_onnx(module: nn.Module, inputs: dict[str, torch.Tensor], inputs_spec: Sequence[TensorSpec],
                outputs_spec: Sequence[TensorSpec], path: Path, opset: int, external_threshold: int) -> str | None:
    """Export `module`, re-save with one external data file when its weights exceed the threshold,
    check the result. Returns the external data file name (or None)."""
    import onnx

    dynamic_axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
                    for t in (*inputs_spec, *outputs_spec)}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / path.name  # the exporter may scatter one file per tensor beside a >2 GB graph
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, tuple(inputs[t.name] for t in inputs_spec), str(raw), dynamo=False,
                              input_names=[t.name for t in inputs_spec],
                              output_names=[t.name for t in outputs_spec],
                              dynamic_axes={k: v for k, v in dynamic_axes.items() if v}, opset_version=opset,
                              do_constant_folding=True)
        proto = onnx.load(str(raw))
    weights = sum(np.prod(t.dims, dtype=np.int64) * _ONNX_ITEM_BYTES.get(t.data_type, 4)
                  for t in proto.graph.initializer)
    external = f"{path.name}.data" if weights > external_threshold else None
    for stale in (path, path.with_name(f"{path.name}.data")):
        stale.unlink(missing_ok=True)
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))
    return external


_ONNX_ITEM_BYTES = {1: 4, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # float, int32, int64, bool, f16, double, bf16


def export(checkpoint_dir: str | Path, out_dir: str | Path, llm_dir: str | Path | None = None,
           cfg: ModelConfig | None = None, opset: int = DEFAULT_OPSET, graphs: Sequence[str] = GRAPHS,
           external_threshold: int = PROTOBUF_LIMIT, seed: int = 0) -> ExportManifest:
    """Export `graphs` of the checkpoint to `out_dir` (created) and write the manifest.
    `external_threshold`: weight bytes above which a graph's weights go to an external file."""
    unknown = sorted(set(graphs) - set(GRAPHS))
    if unknown:
        raise ValueError(f"unknown graphs {unknown} (known: {list(GRAPHS)})")
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    cfg = cfg or load_config(checkpoint_dir, llm_dir)
    model = load_fp32_model(checkpoint_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    modules, io, refs = graph_modules(model), graph_io(cfg), reference_inputs(model, seed)
    specs = {}
    for name in graphs:
        inputs_spec, outputs_spec = io[name]
        path = out_dir / f"{name}.onnx"
        external = _write_onnx(modules[name], refs[name], inputs_spec, outputs_spec, path, opset, external_threshold)
        with torch.no_grad():
            out = modules[name](*(refs[name][t.name] for t in inputs_spec))
        out = out if isinstance(out, tuple) else (out,)
        reference = f"{name}.reference.npz"
        save_reference(out_dir / reference, {k: v.numpy() for k, v in refs[name].items()},
                       {t.name: o.numpy() for t, o in zip(outputs_spec, out)})
        files = [path] + ([out_dir / external] if external else [])
        specs[name] = GraphSpec(name, path.name, inputs_spec, outputs_spec, file_sha256(*files), external, reference)
    weights = checkpoint_dir / CHECKPOINT_FILE
    manifest = ExportManifest(
        opset=opset, dtype="float32",
        checkpoint={"path": str(weights.resolve()), "sha256": file_sha256(weights),
                    "fingerprint": safetensors_fingerprint(weights), "bytes": weights.stat().st_size},
        dims=dim_ranges(cfg), graphs=specs, config=cfg.raw)
    manifest.write(out_dir)
    return manifest

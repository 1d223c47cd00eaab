"""``graspvla export``: the inference components of a checkpoint as ONNX graphs.

Graphs (fp32, built from `graspvla_ros.model.components`; "dyn" marks dynamic axes, named as in
the manifest's ``dims``):

==============  ====================================================  ===================================
graph           inputs                                                outputs
==============  ====================================================  ===================================
vision          front, side (1, 3, 224, 224) f32 in [0, 1]            image_embeds (1, 512, H)
llm             input_ids (1, new dyn) int64                          logits (1, V) last position
                image_embeds (1, image dyn, H): 512 or 0              past_k_out, past_v_out
                past_k, past_v (L, 1, KV, past dyn, D): 0 or more       (L, 1, KV, past+image+new, D)
expert_denoise  x_t (1, A, 7), t (1,), proprio (1, 2, 7)              velocity (1, A, 7)
                prefix_k, prefix_v (L, 1, KV, prefix dyn, D)
expert_flow     noise (1, A, 7), proprio (1, 2, 7), prefix_k/v        action (1, A, 7) normalised
==============  ====================================================  ===================================

``llm`` is the LLM prefill and the decode step in one graph (`LLMStep`): the prefill is a call
with an empty cache and the image ([BOS, image, prompt], positions 0…S−1, = `LLMPrefill`), a decode
step one with the cache and no image (positions continue, = `LLMDecode`'s last position). One graph
means one copy of the LLM weights in a runtime (two graphs cannot share weights: separate
prefill/decode graphs double the LLM's memory, and with it the 8 GB budget). It embeds the token
ids itself, so neither the embedding table nor the image embeddings pass through the host.
``expert_flow`` is the 10-step Euler loop unrolled (one call per chunk); ``expert_denoise`` is one
step (for engines that loop on the host, and for per-step benchmarks).

Each graph is checked with ``onnx.checker`` and run once on a reference input; that input and the
torch output are stored as ``<graph>.reference.npz`` (the references chain: the ``llm`` reference
is a decode step on the cache the prefill of the vision reference output gives; the expert graphs
use that cache). Graphs whose weights
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
from graspvla_ros.model.components import (ExpertDenoise, ExpertFlow, TokenEmbedding, VisionEncoder, causal_mask,
                                           insert_image_embeddings)
from graspvla_ros.model.config import CHECKPOINT_FILE, ModelConfig, load_config
from graspvla_ros.model.exported import (DEFAULT_OPSET, GRAPHS, DimRange, ExportManifest, GraphSpec, TensorSpec,
                                         file_sha256, safetensors_fingerprint, save_reference)
from graspvla_ros.model.modeling import GraspVLA, build_model

PROTOBUF_LIMIT = 2 * 1024 ** 3
MAX_NEW_TOKENS = 32  # tokens one decode call may feed (the official schedule feeds at most 15)
REFERENCE_PROMPT_TOKENS = 20  # prompt length of the stored reference (a typical instruction)
ONNX_ITEM_BYTES = {1: 4, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # float, int32, int64, bool, f16, double, bf16


class LLMStep(nn.Module):
    """Prefill (empty cache, with the image) or decode step (cache, empty image) of the LLM:
    [first token, image, other tokens] appended after the cache; logits of the last position."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.embed = TokenEmbedding(model)
        self.llm = model.llm.llm

    def forward(self, input_ids: torch.Tensor, image_embeds: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor):
        x = insert_image_embeddings(self.embed(input_ids), image_embeds)
        n_past = past_k.shape[3]
        position_ids = torch.arange(x.shape[1], device=x.device)[None] + n_past
        mask = causal_mask(x.shape[1], n_past, x.dtype, x.device)
        hidden, k, v = self.llm.run_layers(x, position_ids, mask, past_k, past_v)
        return self.llm.logits(hidden[:, -1]), torch.cat((past_k, k), dim=3), torch.cat((past_v, v), dim=3)


def empty_cache(cfg: ModelConfig) -> torch.Tensor:
    return torch.zeros((cfg.llm.num_layers, 1, cfg.llm.num_kv_heads, 0, cfg.llm.head_dim))


def graph_modules(model: GraspVLA) -> dict[str, nn.Module]:
    """The torch module each graph is exported from (and compared with)."""
    return {"vision": VisionEncoder(model), "llm": LLMStep(model), "expert_denoise": ExpertDenoise(model),
            "expert_flow": ExpertFlow(model)}


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
        "llm": ((TensorSpec("input_ids", (1, "new"), i64), TensorSpec("image_embeds", (1, "image", h), f32),
                 kv("past_k", "past"), kv("past_v", "past")),
                (TensorSpec("logits", (1, v), f32), kv("past_k_out", "total"), kv("past_v_out", "total"))),
        "expert_denoise": ((TensorSpec("x_t", action, f32), TensorSpec("t", (1,), f32), *suffix),
                           (TensorSpec("velocity", action, f32),)),
        "expert_flow": ((TensorSpec("noise", action, f32), *suffix), (TensorSpec("action", action, f32),)),
    }


def dim_ranges(cfg: ModelConfig) -> dict[str, DimRange]:
    """Size ranges of the dynamic axes for TensorRT's optimisation profile; `opt` is a decode step
    of a typical request (15 of the 16 ``llm`` calls of a chunk are decode steps)."""
    max_len = int(cfg.raw.get("model", {}).get("llm", {}).get("max_len", 2048))
    prefix = 1 + cfg.image_tokens + REFERENCE_PROMPT_TOKENS
    return {"new": DimRange(1, 1, max_len - cfg.image_tokens),
            "image": DimRange(0, 0, cfg.image_tokens),
            "past": DimRange(0, prefix, max_len),
            "total": DimRange(1, prefix + 1, max_len),
            "prefix": DimRange(1, prefix + 29, max_len)}


@torch.no_grad()
def reference_inputs(model: GraspVLA, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A consistent example input per graph: random views, the cache the prefill of a typical
    prompt gives, a decode step on it, seeded noise and proprio."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    views = {"front": torch.rand((1, 3, s, s), generator=g), "side": torch.rand((1, 3, s, s), generator=g)}
    image = VisionEncoder(model)(**views)
    ids = torch.randint(3, cfg.llm.vocab_size, (1, 1 + REFERENCE_PROMPT_TOKENS), generator=g)
    ids[0, 0] = cfg.llm.bos_token_id
    step = LLMStep(model)
    _, past_k, past_v = step(ids, image, empty_cache(cfg), empty_cache(cfg))
    new = torch.randint(3, cfg.llm.vocab_size, (1, 3), generator=g)
    proprio = torch.rand((1, cfg.proprio_len, cfg.proprio_dim), generator=g) * 2 - 1
    action = (1, cfg.action_len, cfg.action_dim)
    suffix = {"proprio": proprio, "prefix_k": past_k, "prefix_v": past_v}
    return {
        "vision": views,
        # a 3-token step with 2 image rows: every dynamic axis > 1, so tracing cannot specialise one
        "llm": {"input_ids": new, "image_embeds": image[:, :2], "past_k": past_k, "past_v": past_v},
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
    weights = sum(np.prod(t.dims, dtype=np.int64) * ONNX_ITEM_BYTES.get(t.data_type, 4)
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

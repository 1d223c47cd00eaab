"""The eager PyTorch backend: `graspvla_ros.model.components` on a loaded `GraspVLA`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from graspvla_ros.model.checkpoint import load_weights
from graspvla_ros.model.components import (ExpertFlow, LLMDecode, LLMPrefill, TokenEmbedding, VisionEncoder,
                                           insert_image_embeddings)
from graspvla_ros.model.config import CHECKPOINT_FILE, ModelConfig
from graspvla_ros.model.modeling import GraspVLA, build_model


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the official inference runs under bf16 autocast), fp32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class TorchComponents:
    """`generate.Components` over torch modules; the cache is (past_k, past_v) on the device."""

    def __init__(self, model: GraspVLA, compile: bool = False):
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.vision, self.embed = VisionEncoder(model), TokenEmbedding(model)
        self.prefill_graph, self.decode_graph, self.flow_graph = LLMPrefill(model), LLMDecode(model), ExpertFlow(model)
        if compile:
            self.vision = torch.compile(self.vision)
            self.prefill_graph = torch.compile(self.prefill_graph, dynamic=True)
            self.decode_graph = torch.compile(self.decode_graph, dynamic=True)
            self.flow_graph = torch.compile(self.flow_graph, dynamic=True)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _positions(self, start: int, n: int) -> torch.Tensor:
        return torch.arange(start, start + n, device=self.device)[None]

    @torch.inference_mode()
    def encode_images(self, front: np.ndarray, side: np.ndarray) -> torch.Tensor:
        return self.vision(self._tensor(front), self._tensor(side))

    @torch.inference_mode()
    def prefill(self, input_ids: np.ndarray, image_embeds: torch.Tensor):
        embeds = insert_image_embeddings(self.embed(self._tensor(input_ids)[None]), image_embeds)
        logits, k, v = self.prefill_graph(embeds, self._positions(0, embeds.shape[1]))
        return logits[0].float().cpu().numpy(), (k, v)

    @torch.inference_mode()
    def decode(self, input_ids: np.ndarray, cache):
        k, v = cache
        logits, k, v = self.decode_graph(self._tensor(input_ids)[None], self._positions(k.shape[3], len(input_ids)), k, v)
        return logits[0, -1].float().cpu().numpy(), (k, v)

    @torch.inference_mode()
    def flow(self, noise: np.ndarray, proprio: np.ndarray, cache) -> np.ndarray:
        k, v = cache
        return self.flow_graph(self._tensor(noise), self._tensor(proprio), k, v).float().cpu().numpy()


def fast_options(device: str | torch.device | None = None) -> dict:
    """The fastest torch options for `device` (default: CUDA if available): on CUDA bf16 with a
    static KV cache, CUDA graphs and torch.compile; elsewhere {} (fp32 eager, the default)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return {"device": str(device)}
    return {"device": str(device), "dtype": torch.bfloat16, "static_cache": True, "cuda_graphs": True, "compile": True}


def create(checkpoint_dir: str | Path, cfg: ModelConfig, *, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None, compile: bool = False, static_cache: bool = False,
           cuda_graphs: bool = False) -> TorchComponents:
    """Eager components by default (the official numerics); `static_cache` / `cuda_graphs` select
    `torch_static.StaticTorchComponents` (cuda_graphs implies static_cache and needs CUDA);
    `compile` compiles each eager component, or the static path's decode and denoise steps."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device, got device={device}")
    model = build_model(cfg, device="meta")
    load_weights(model, Path(checkpoint_dir) / CHECKPOINT_FILE, device, dtype or default_dtype(device))
    return components_for(model, compile=compile, static_cache=static_cache, cuda_graphs=cuda_graphs)


def components_for(model: GraspVLA, *, compile: bool = False, static_cache: bool = False,
                   cuda_graphs: bool = False) -> TorchComponents:
    """Components over an already built and filled model (see `create`)."""
    if static_cache or cuda_graphs:
        from graspvla_ros.model.backends.torch_static import StaticTorchComponents

        return StaticTorchComponents(model, compile=compile, cuda_graphs=cuda_graphs)
    return TorchComponents(model, compile=compile)

"""The inference graphs of GraspVLA as plain-tensor nn.Modules: the contract between the torch
implementation and the exported backends (ONNX Runtime, TensorRT).

Each module takes and returns tensors only (no cache objects, no Python state), builds its
attention mask from input shapes, and runs in fp32 (or the dtype the model was cast to). They share
parameters with the `GraspVLA` module tree they are built from.

Shapes (H = LLM hidden, He = expert hidden, V = LLM embedding rows, L = layers, KV = kv heads,
D = head_dim, A = action_len, S/T/P = sequence lengths; "dyn" marks dynamic axes):

=================  ==============================================  =========================================
module             inputs                                          outputs
=================  ==============================================  =========================================
VisionEncoder      front (1,3,224,224) f32 RGB in [0,1]            image_embeds (1, 512, H)
                   side  (1,3,224,224)
TokenEmbedding     input_ids (1, T dyn) int64                      embeds (1, T, H)
LLMPrefill         inputs_embeds (1, S dyn, H)                     logits (1, V) f32 — last position only
                   position_ids (1, S dyn) int64                   past_k, past_v (L, 1, KV, S, D)
LLMDecode          input_ids (1, T dyn) int64                      logits (1, T, V) f32
                   position_ids (1, T dyn) int64                   past_k, past_v (L, 1, KV, S+T, D)
                   past_k, past_v (L, 1, KV, S dyn, D)
ExpertDenoise      x_t (1, A, 7), t (1,) f32                       velocity (1, A, 7)
                   proprio (1, 2, 7) normalised to [-1, 1]
                   prefix_k, prefix_v (L, 1, KV, P dyn, D)
ExpertFlow         noise (1, A, 7), proprio (1, 2, 7)              action (1, A, 7) normalised
                   prefix_k, prefix_v (L, 1, KV, P dyn, D)
=================  ==============================================  =========================================

Semantics that decide parity with the official code:

* The prefill sequence is [BOS, 512 image tokens, prompt tokens] (`insert_image_embeddings`);
  position ids are 0..S−1 and continue by one per token in decode. The official code left-pads the
  prefix with masked zero embeddings to a multiple of 16 and keeps the real tokens' positions, so
  this unpadded form computes the same attention.
* LLM masks are causal: query i of a decode call (absolute position P+i) sees keys 0..P+i.
* The expert's suffix is [2 proprio tokens, A action tokens] at positions P..P+1+A (P = prefix
  length); every suffix token sees the whole prefix, proprio tokens see each other, action tokens
  see the whole suffix. Each expert layer attends to the LLM's keys/values of the same layer.
* ExpertFlow: 10 Euler steps, t = linspace(1, 0.1, 10) float32, x ← x − 0.1·v (x starts as noise).
"""
from __future__ import annotations

import torch
from torch import nn

from graspvla_ros.model.modeling import FlowModule, GraspVLA, InternLM2CausalLM, additive_mask


def insert_image_embeddings(token_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
    """[BOS embedding, image embeddings, rest of the prompt] along the sequence axis."""
    return torch.cat((token_embeds[:, :1], image_embeds.to(token_embeds.dtype), token_embeds[:, 1:]), dim=1)


def causal_mask(n_query: int | torch.Tensor, n_past: int | torch.Tensor, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """Additive (Q, P+Q) mask: query i (absolute position P+i) sees keys 0..P+i."""
    keys = torch.arange(n_past + n_query, device=device)
    queries = torch.arange(n_query, device=device) + n_past
    return additive_mask(keys[None, :] <= queries[:, None], dtype)


def expert_mask(n_prefix: int | torch.Tensor, n_proprio: int, n_action: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """Additive (n_proprio+n_action, P+n_proprio+n_action) block mask of the expert's suffix."""
    block = torch.cat((torch.zeros(n_proprio, dtype=torch.int64, device=device),
                       torch.ones(n_action, dtype=torch.int64, device=device)))
    suffix = block[None, :] <= block[:, None]
    prefix = torch.ones((n_proprio + n_action, n_prefix), dtype=torch.bool, device=device)
    return additive_mask(torch.cat((prefix, suffix), dim=1), dtype)


class VisionEncoder(nn.Module):
    """Both views → projected image embeddings (front view's patches first)."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.backbone = model.backbone_2d
        self.projector = model.projector

    def forward(self, front: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(torch.cat((front, side), dim=0)))


class TokenEmbedding(nn.Module):
    def __init__(self, model: GraspVLA):
        super().__init__()
        self.embeddings = model.llm.llm.model.tok_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)


class LLMPrefill(nn.Module):
    def __init__(self, model: GraspVLA):
        super().__init__()
        self.llm: InternLM2CausalLM = model.llm.llm

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor):
        mask = causal_mask(inputs_embeds.shape[1], 0, inputs_embeds.dtype, inputs_embeds.device)
        hidden, past_k, past_v = self.llm.run_layers(inputs_embeds, position_ids, mask)
        return self.llm.logits(hidden[:, -1]), past_k, past_v


class LLMDecode(nn.Module):
    def __init__(self, model: GraspVLA):
        super().__init__()
        self.llm: InternLM2CausalLM = model.llm.llm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor):
        x = self.llm.model.tok_embeddings(input_ids)
        mask = causal_mask(x.shape[1], past_k.shape[3], x.dtype, x.device)
        hidden, k, v = self.llm.run_layers(x, position_ids, mask, past_k, past_v)
        return self.llm.logits(hidden), torch.cat((past_k, k), dim=3), torch.cat((past_v, v), dim=3)


class ExpertDenoise(nn.Module):
    """One velocity evaluation of the action expert."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.expert: InternLM2CausalLM = model.action_expert
        self.flow: FlowModule = model.flow_module

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, proprio: torch.Tensor, prefix_k: torch.Tensor,
                prefix_v: torch.Tensor) -> torch.Tensor:
        dtype = prefix_k.dtype
        suffix = torch.cat((self.flow.proprior_proj(proprio.to(dtype)),
                            self.flow.action_embeddings(x_t.to(dtype), t.to(dtype))), dim=1)
        n_prefix, n_proprio, n_action = prefix_k.shape[3], proprio.shape[1], x_t.shape[1]
        position_ids = (torch.arange(n_proprio + n_action, device=suffix.device) + n_prefix)[None]
        mask = expert_mask(n_prefix, n_proprio, n_action, dtype, suffix.device)
        hidden, _, _ = self.expert.run_layers(suffix, position_ids, mask, prefix_k, prefix_v)
        return self.flow.action_out_proj(hidden[:, -n_action:])


class ExpertFlow(nn.Module):
    """The whole Euler integration from noise (t = 1) to the normalised action, unrolled."""

    def __init__(self, model: GraspVLA, steps: int | None = None):
        super().__init__()
        self.denoise = ExpertDenoise(model)
        self.steps = steps or model.cfg.flow_steps

    def forward(self, noise: torch.Tensor, proprio: torch.Tensor, prefix_k: torch.Tensor,
                prefix_v: torch.Tensor) -> torch.Tensor:
        dt = 1.0 / self.steps
        times = torch.linspace(1.0, dt, self.steps, dtype=torch.float32, device=noise.device)
        x = noise.to(prefix_k.dtype)
        for i in range(self.steps):
            v = self.denoise(x, times[i:i + 1], proprio, prefix_k, prefix_v)
            x = x + (-dt) * v
        return x

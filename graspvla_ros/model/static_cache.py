"""Fixed-shape inference graphs over a preallocated KV cache (the torch backend's fast path).

The eager `LLMDecode` grows the KV cache by concatenation, so every decode step has new shapes:
nothing can be captured as a CUDA graph, and torch.compile would recompile per length. Here the
cache is a pair of buffers (L, 1, KV, C, D) allocated once per capacity C (a multiple of 64 that
holds the prefix and every token generation appends). A step attends to the cache's C slots
(those ≥ its valid length masked) and to its own new keys, as two score blocks under one softmax
(`split_attention`: neither the concatenation nor the repeated KV heads are materialised, so a
step reads the cache once and copies none of it), then its keys/values are written at their
positions with one ``index_copy_`` for all layers (`decode_into`). The valid length and the
positions travel as device tensors, never as Python ints, so one captured or compiled step serves
every position.

Numerics: the operations of `components.LLMDecode` / `ExpertFlow` with the same masks (masked
slots get the dtype's minimum, exact zeros in the softmax); the reductions run over C masked slots
plus the new ones in two matmuls instead of P+T slots in one, i.e. last-bit differences (tests:
fp32 tokens identical, waypoints within 1e-5 of the eager path).

Buffers must start zeroed: a masked slot holding NaN/inf from uninitialised memory would poison
the softmax (0 · NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from graspvla_ros.model.modeling import (FlowModule, GraspVLA, InternLM2Attention, InternLM2CausalLM, additive_mask,
                                         rotary_cos_sin)

BUCKET = 64        # capacities are multiples of this (few distinct shapes: few graphs/compilations)
DECODE_ROOM = 32   # slots reserved after the prefix: generate() appends 29 tokens


def capacity_for(n_tokens: int) -> int:
    """Capacity for a prefix of `n_tokens` plus the tokens generation appends."""
    return -(-(n_tokens + DECODE_ROOM) // BUCKET) * BUCKET


@dataclass(frozen=True)
class StaticCache:
    """A view of a preallocated KV cache: slots 0..length−1 are valid.

    Caches of one backend share buffers: a decode on a cache of length P writes slots P…, which
    invalidates any longer cache derived from the same prefill; a new prefill of the same capacity
    invalidates all earlier caches. `generate` only ever extends the latest cache."""

    k: torch.Tensor   # (L, 1, KV, C, D)
    v: torch.Tensor
    length: int

    @property
    def capacity(self) -> int:
        return self.k.shape[3]


def new_buffers(llm: InternLM2CausalLM, capacity: int, dtype: torch.dtype, device: torch.device):
    d = llm.dims
    shape = (d.num_layers, 1, d.num_kv_heads, capacity, d.head_dim)
    return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)


def split_attention(attention: InternLM2Attention, q: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
                    past_mask: torch.Tensor, k: torch.Tensor, v: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
    """`InternLM2Attention.attend` over [cache slots ; this call's keys] without materialising
    either the concatenation or the repeated KV heads: q (B, heads, Q, D); past_k/v (B, KV, C, D)
    with past_mask (Q, C); k, v (B, KV, T, D) with new_mask (Q, T) → (B, Q, H). Query head h·g+i
    uses KV head h, so q is viewed as (B, KV, g·Q, D) and the masks are tiled g times."""
    b, _, n_q, d = q.shape
    kv, g = attention.num_kv_heads, attention.groups
    qg = q.reshape(b, kv, g * n_q, d)
    scale = math.sqrt(attention.head_dim)
    scores = torch.cat((torch.matmul(qg, past_k.transpose(2, 3)) / scale + past_mask.repeat(g, 1),
                        torch.matmul(qg, k.transpose(2, 3)) / scale + new_mask.repeat(g, 1)), dim=-1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    n_past = past_k.shape[2]
    out = torch.matmul(probs[..., :n_past], past_v) + torch.matmul(probs[..., n_past:], v)
    out = out.reshape(b, kv * g, n_q, d).transpose(1, 2).reshape(b, n_q, kv * g * d)
    return attention.wo(out)


def run_layers_split(lm: InternLM2CausalLM, x: torch.Tensor, position_ids: torch.Tensor, past_k: torch.Tensor,
                     past_v: torch.Tensor, past_mask: torch.Tensor, new_mask: torch.Tensor, keep_kv: bool = True):
    """`InternLM2CausalLM.run_layers` with `split_attention`: past_k/v (L, B, KV, C, D) are read,
    never copied. Returns the final-normed hidden states and this call's k, v (L, B, KV, T, D)."""
    cos, sin = rotary_cos_sin(lm.inv_freq, position_ids, x.dtype)
    new_k, new_v = [], []
    for i, layer in enumerate(lm.model.layers):
        q, k, v = layer.attention.project(layer.attention_norm(x), cos, sin)
        x = x + split_attention(layer.attention, q, past_k[i], past_v[i], past_mask, k, v, new_mask)
        x = x + layer.feed_forward(layer.ffn_norm(x))
        if keep_kv:
            new_k.append(k)
            new_v.append(v)
    hidden = lm.model.norm(x)
    return (hidden, torch.stack(new_k), torch.stack(new_v)) if keep_kv else (hidden, None, None)


class StaticDecode(nn.Module):
    """T new tokens after the cache's valid slots, as a pure function (no cache update; compiled
    code then holds no copy of the cache): input_ids (1, T) int64, position_ids (1, T) int64
    (consecutive, starting at the cache's valid length P), cache_k/v (L, 1, KV, C, D) of which
    slots < P are read → logits (1, V) f32 of the last position, and the new k, v (L, 1, KV, T, D)
    for `decode_into` to write at slots P…P+T−1."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.llm: InternLM2CausalLM = model.llm.llm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache_k: torch.Tensor,
                cache_v: torch.Tensor):
        llm = self.llm
        x = llm.model.tok_embeddings(input_ids)
        index = position_ids[0]
        slots = torch.arange(cache_k.shape[3], device=x.device)
        past_mask = additive_mask((slots < index[0])[None, :].expand(index.shape[0], -1), x.dtype)
        new_mask = additive_mask(index[None, :] <= index[:, None], x.dtype)
        hidden, k, v = run_layers_split(llm, x, position_ids, cache_k, cache_v, past_mask, new_mask)
        return llm.logits(hidden[:, -1:])[:, 0], k, v


def decode_into(step, input_ids: torch.Tensor, position_ids: torch.Tensor, cache_k: torch.Tensor,
                cache_v: torch.Tensor) -> torch.Tensor:
    """One decode step (`StaticDecode`, possibly compiled) and its keys/values written into the
    cache at their positions, for all layers at once → logits (1, V)."""
    logits, k, v = step(input_ids, position_ids, cache_k, cache_v)
    cache_k.index_copy_(3, position_ids[0], k)
    cache_v.index_copy_(3, position_ids[0], v)
    return logits


class StaticExpertDenoise(nn.Module):
    """`components.ExpertDenoise` over a preallocated cache whose first `prefix_len` slots are the
    prefix: x_t (1, A, 7), t (1,) f32, proprio (1, 2, 7), prefix_k/v (L, 1, KV, C, D), prefix_len
    () int64 → velocity (1, A, 7)."""

    def __init__(self, model: GraspVLA):
        super().__init__()
        self.expert: InternLM2CausalLM = model.action_expert
        self.flow: FlowModule = model.flow_module

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, proprio: torch.Tensor, prefix_k: torch.Tensor,
                prefix_v: torch.Tensor, prefix_len: torch.Tensor) -> torch.Tensor:
        dtype, device = prefix_k.dtype, prefix_k.device
        suffix = torch.cat((self.flow.proprior_proj(proprio.to(dtype)),
                            self.flow.action_embeddings(x_t.to(dtype), t.to(dtype))), dim=1)
        n_proprio, n_action = proprio.shape[1], x_t.shape[1]
        n = n_proprio + n_action
        position_ids = (torch.arange(n, device=device) + prefix_len)[None]
        block = torch.cat((torch.zeros(n_proprio, dtype=torch.int64, device=device),
                           torch.ones(n_action, dtype=torch.int64, device=device)))
        past_mask = additive_mask((torch.arange(prefix_k.shape[3], device=device) < prefix_len)[None, :].expand(n, -1),
                                  dtype)
        new_mask = additive_mask(block[None, :] <= block[:, None], dtype)
        hidden, _, _ = run_layers_split(self.expert, suffix, position_ids, prefix_k, prefix_v, past_mask, new_mask,
                                        keep_kv=False)
        return self.flow.action_out_proj(hidden[:, -n_action:])


def euler_flow(denoise, noise: torch.Tensor, proprio: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor,
               prefix_len: torch.Tensor, steps: int) -> torch.Tensor:
    """`components.ExpertFlow`'s integration with a (possibly compiled) `StaticExpertDenoise`."""
    dt = 1.0 / steps
    times = torch.linspace(1.0, dt, steps, dtype=torch.float32, device=noise.device)
    x = noise.to(prefix_k.dtype)
    for i in range(steps):
        t = times[i:i + 1].clone()  # a tensor of its own: a compiled step is not re-specialised per offset
        x = x + (-dt) * denoise(x, t, proprio, prefix_k, prefix_v, prefix_len)
    return x

"""GraspVLA module tree with the official parameter names and shapes.

The released ``model.safetensors`` is one flat state dict of the official ``VLA`` module; this tree
reproduces its names, shapes and order exactly so it loads strictly:

* ``backbone_2d.dino.model`` / ``backbone_2d.siglip.model``: timm ViTs (DINOv2-L/14 with 4
  registers, SigLIP-so400m/14), built without pretrained weights;
* ``llm.llm``: InternLM2 causal LM (``model.tok_embeddings``, ``model.layers.N``, ``model.norm``,
  ``output``) with InternLM2's packed ``wqkv`` projection;
* ``action_expert``: a second, narrower InternLM2 causal LM (its embeddings and LM head exist in the
  checkpoint but are unused at inference);
* ``projector.projector``: 2176 → 8704 → GELU → 2048 → GELU → 2048;
* ``flow_module``: proprio / action / time embeddings and the velocity head.

Forward code here is per block (attention with an explicit additive mask and an explicit KV
cache); `graspvla_ros.model.components` assembles the inference graphs from it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graspvla_ros.model.config import VIT_ARCHS, VIT_MEAN_STD, LLMDims, ModelConfig


class RMSNorm(nn.Module):
    """InternLM2 RMSNorm: statistics in float32, gain applied in the input dtype."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rotary_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype):
    """cos/sin (B, S, head_dim) for int64 positions (B, S), computed in float32."""
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq.to(torch.float32)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, S, D); cos/sin (B, S, D)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + _rotate_half(x) * sin


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool "may attend" (..., Q, K) → additive mask: 0 where allowed, the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


class InternLM2Attention(nn.Module):
    """Grouped-query attention with InternLM2's packed projection.

    ``wqkv`` rows are laid out per KV head h as [q_{h,0} … q_{h,g−1}, k_h, v_h] (g = heads / kv heads,
    each head_dim rows), so query head h·g+i uses KV head h.
    """

    def __init__(self, dims: LLMDims):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = dims.num_heads, dims.num_kv_heads, dims.head_dim
        self.groups = dims.kv_groups
        self.wqkv = nn.Linear(dims.hidden_size, (dims.num_heads + 2 * dims.num_kv_heads) * dims.head_dim, bias=False)
        self.wo = nn.Linear(dims.num_heads * dims.head_dim, dims.hidden_size, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, S, H) → q (B, heads, S, D), k and v (B, kv_heads, S, D), rotary applied to q and k."""
        b, s, _ = x.shape
        qkv = self.wqkv(x).view(b, s, self.num_kv_heads, self.groups + 2, self.head_dim)
        q = qkv[..., : self.groups, :].reshape(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = qkv[..., -2, :].transpose(1, 2)
        v = qkv[..., -1, :].transpose(1, 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (B, heads, Q, D); k, v (B, kv_heads, K, D) incl. any cache; mask additive (Q, K) → (B, Q, H)."""
        b, _, n_q, _ = q.shape
        if self.groups > 1:
            k = k.repeat_interleave(self.groups, dim=1)
            v = v.repeat_interleave(self.groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n_q, self.num_heads * self.head_dim)
        return self.wo(out)


class InternLM2MLP(nn.Module):
    def __init__(self, dims: LLMDims):
        super().__init__()
        self.w1 = nn.Linear(dims.hidden_size, dims.intermediate_size, bias=False)
        self.w3 = nn.Linear(dims.hidden_size, dims.intermediate_size, bias=False)
        self.w2 = nn.Linear(dims.intermediate_size, dims.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class InternLM2Layer(nn.Module):
    def __init__(self, dims: LLMDims):
        super().__init__()
        self.attention = InternLM2Attention(dims)
        self.feed_forward = InternLM2MLP(dims)
        self.attention_norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.ffn_norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        """One pre-norm block. past_k/v (B, kv_heads, P, D) are keys/values of earlier positions
        (possibly of another model: the action expert attends to the LLM's cache).
        Returns the new hidden states and this call's own k, v (without the past)."""
        q, k, v = self.attention.project(self.attention_norm(x), cos, sin)
        keys = k if past_k is None else torch.cat((past_k, k), dim=2)
        values = v if past_v is None else torch.cat((past_v, v), dim=2)
        x = x + self.attention.attend(q, keys, values, mask)
        x = x + self.feed_forward(self.ffn_norm(x))
        return x, k, v


class InternLM2Model(nn.Module):
    def __init__(self, dims: LLMDims, embedding_rows: int, pad_token_id: int):
        super().__init__()
        self.tok_embeddings = nn.Embedding(embedding_rows, dims.hidden_size, pad_token_id)
        self.layers = nn.ModuleList(InternLM2Layer(dims) for _ in range(dims.num_layers))
        self.norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)


class InternLM2CausalLM(nn.Module):
    """``model`` + ``output`` (LM head), as InternLM2ForCausalLM names them."""

    def __init__(self, dims: LLMDims, embedding_rows: int, pad_token_id: int):
        super().__init__()
        self.dims = dims
        self.model = InternLM2Model(dims, embedding_rows, pad_token_id)
        self.output = nn.Linear(dims.hidden_size, embedding_rows, bias=False)
        self.register_buffer("inv_freq", rotary_inv_freq(dims.head_dim, dims.rope_theta), persistent=False)

    def run_layers(self, x, position_ids, mask, past_k=None, past_v=None):
        """x (B, S, H) through every layer; past_k/v (L, B, kv_heads, P, D) or None.
        Returns the final-normed hidden states and the new k, v stacked (L, B, kv_heads, S, D)."""
        cos, sin = rotary_cos_sin(self.inv_freq, position_ids, x.dtype)
        new_k, new_v = [], []
        for i, layer in enumerate(self.model.layers):
            x, k, v = layer(x, cos, sin, mask,
                            None if past_k is None else past_k[i], None if past_v is None else past_v[i])
            new_k.append(k)
            new_v.append(v)
        return self.model.norm(x), torch.stack(new_k), torch.stack(new_v)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden).float()


class LLMBackbone(nn.Module):
    """The official ``llm`` wrapper: only holds ``llm``."""

    def __init__(self, dims: LLMDims, embedding_rows: int, pad_token_id: int):
        super().__init__()
        self.llm = InternLM2CausalLM(dims, embedding_rows, pad_token_id)


class ViT(nn.Module):
    """A timm ViT (``model``) whose features are the tokens after the second-to-last block,
    without the final norm and without prefix (cls/register) tokens — timm's
    ``get_intermediate_layers(x, n={depth − 2})`` as the official backbone calls it."""

    def __init__(self, arch: str, image_size: int, mean, std, **timm_kwargs):
        import timm

        super().__init__()
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size, **timm_kwargs)
        self.feature_block = len(self.model.blocks) - 2
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, 3, S, S) RGB in [0, 1] → (N, patches, embed_dim)."""
        x = ((pixels - self.mean) / self.std).to(self.model.patch_embed.proj.weight.dtype)
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for block in m.blocks[: self.feature_block + 1]:
            x = block(x)
        return x[:, m.num_prefix_tokens:]


class DinoSigLIP(nn.Module):
    def __init__(self, image_size: int, timm_kwargs: dict):
        super().__init__()
        for name in ("dino", "siglip"):
            mean, std = VIT_MEAN_STD[name]
            setattr(self, name, ViT(VIT_ARCHS[name], image_size, mean, std, **timm_kwargs.get(name, {})))

    @property
    def feature_dim(self) -> int:
        return self.dino.embed_dim + self.siglip.embed_dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (V, 3, S, S) for V views → (1, V·patches, dino ‖ siglip)."""
        feats = torch.cat((self.dino(pixels), self.siglip(pixels)), dim=-1)
        return feats.reshape(1, -1, feats.shape[-1])


class Projector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(vision_dim, 4 * vision_dim), nn.GELU(),
            nn.Linear(4 * vision_dim, llm_dim), nn.GELU(),
            nn.Linear(llm_dim, llm_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(x)


def sincos_time_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """(B,) flow times → (B, dim): [sin | cos] of t·2π/period, periods log-spaced min…max."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=t.dtype)
    period = min_period * (max_period / min_period) ** fraction
    angles = t[:, None] * (1.0 / period * 2 * math.pi)[None, :]
    return torch.cat((torch.sin(angles), torch.cos(angles)), dim=-1)


class FlowModule(nn.Module):
    """Suffix embeddings of the action expert and its velocity head (official names)."""

    def __init__(self, action_dim: int, proprio_dim: int, dim: int, action_len: int):
        super().__init__()
        self.action_len, self.dim = action_len, dim
        self.proprior_proj = nn.Linear(proprio_dim, dim)
        self.action_in_proj = nn.Linear(action_dim, dim)
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.action_out_proj = nn.Linear(dim, action_dim)

    def action_embeddings(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, A, action_dim), t (B,) → (B, A, dim)."""
        time = sincos_time_embedding(t, self.dim)[:, None, :].expand(-1, x_t.shape[1], -1)
        return self.action_time_mlp(torch.cat((self.action_in_proj(x_t), time), dim=-1))


class GraspVLA(nn.Module):
    """The official ``VLA`` module tree (registration order = state-dict order)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone_2d = DinoSigLIP(cfg.vision.image_size, cfg.vision.timm_kwargs)
        self.llm = LLMBackbone(cfg.llm, cfg.embedding_rows, cfg.pad_token_id)
        self.action_expert = InternLM2CausalLM(cfg.expert, cfg.embedding_rows, cfg.pad_token_id)
        self.projector = Projector(self.backbone_2d.feature_dim, cfg.llm.hidden_size)
        self.flow_module = FlowModule(cfg.action_dim, cfg.proprio_dim, cfg.expert.hidden_size, cfg.action_len)


def build_model(cfg: ModelConfig, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> GraspVLA:
    """The module tree with uninitialised (``device="meta"``: unallocated) parameters."""
    with torch.device(device or "cpu"):
        model = GraspVLA(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)

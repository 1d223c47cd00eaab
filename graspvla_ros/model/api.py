"""Python API: ``load(checkpoint_dir, ...)`` → `GraspVLAModel`; ``model.predict(...)`` → `Prediction`.

Backends implement `graspvla_ros.model.generate.Components` and are created by
``<module>.create(checkpoint_dir, cfg, **options)``; ``options`` are backend-specific (torch:
device, dtype, compile, static_cache, cuda_graphs; `torch_backend.fast_options()` picks the
fastest for the machine).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graspvla_ros.model.backends import BACKENDS
from graspvla_ros.model.config import PREPROCESSOR_FILE, ModelConfig, Normalizer, load_config
from graspvla_ros.model.generate import (Components, RobotCodec, generate, official_proprio_rows, quantize_gripper,
                                         split_actions)
from graspvla_ros.model.tokenizer import PromptTokenizer, find_tokenizer
from graspvla_ros.preprocess import letterbox_to_model


@dataclass
class Prediction:
    token_ids: list[int]        # generated: 8 bbox, 6 goal, the EOS slot
    prompt_ids: list[int]       # BOS + prompt pieces (the image tokens go after BOS)
    proprio_ids: list[int]      # the 14 proprio tokens fed (history row, current row)
    bbox: np.ndarray            # (views, 4) x1 y1 x2 y2, pixels of the 224×224 model input
    grasp_xyz: np.ndarray       # (3,) predicted grasp position
    grasp_rpy: np.ndarray       # (3,) predicted grasp orientation, Euler 'sxyz'
    action: np.ndarray          # (action_len, 7) raw un-normalised expert output
    waypoints: np.ndarray       # (2·action_len, 7) Δxyz, Δrpy, gripper −1 close / +1 open / 0 keep
    noise: np.ndarray           # (1, action_len, 7) float32 initial flow noise
    step_logits: list[np.ndarray] | None = None


def seeded_noise(seed: int, action_len: int, action_dim: int = 7) -> np.ndarray:
    """torch.randn((1, A, 7)) from a generator seeded with `seed` (the official code draws the
    same call from the global generator)."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, action_len, action_dim), generator=g, dtype=torch.float32).numpy()


def model_view(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 RGB of any size → float32 (1, 3, size, size) in [0, 1], letterboxed as the
    official server does."""
    boxed = letterbox_to_model(np.asarray(image), size)
    return (boxed.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None].copy()


class GraspVLAModel:
    def __init__(self, cfg: ModelConfig, components: Components, tokenizer: PromptTokenizer, normalizer: Normalizer):
        self.cfg, self.components, self.tokenizer = cfg, components, tokenizer
        if tokenizer.vocab_size != cfg.llm.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces, the LLM config says {cfg.llm.vocab_size}")
        self.codec = RobotCodec(tokenizer.vocab_size, normalizer, cfg.action_token_num, cfg.vision.image_size)

    def predict(self, front: np.ndarray, side: np.ndarray, instruction: str, proprio, seed: int | None = None,
                noise: np.ndarray | None = None, keep_logits: bool = False) -> Prediction:
        """One action chunk. front/side: uint8 HxWx3 RGB; proprio: (N ≥ 2, 7) history of xyz, rpy,
        gripper (+1 open / −1 closed), oldest first (the official client sends 4 rows); exactly one of
        seed / noise ((1 or none, action_len, 7)) gives the flow's initial noise."""
        a_len, a_dim = self.cfg.action_len, self.cfg.action_dim
        if (seed is None) == (noise is None):
            raise ValueError("give exactly one of seed or noise")
        if noise is None:
            noise = seeded_noise(seed, a_len, a_dim)
        noise = np.asarray(noise, dtype=np.float32)
        if noise.size != a_len * a_dim:
            raise ValueError(f"noise must hold {a_len}×{a_dim} values, got shape {noise.shape}")
        noise = noise.reshape(1, a_len, a_dim)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        rows = official_proprio_rows(proprio)
        size = self.cfg.vision.image_size
        prompt_ids = self.tokenizer.encode_prompt(instruction)
        gen = generate(self.components, self.cfg, self.codec, prompt_ids, model_view(front, size),
                       model_view(side, size), rows, noise, keep_logits=keep_logits)
        action = self.codec.unnormalize_action(gen.action_normalized)
        goal = self.codec.goal(gen.goal_ids)
        return Prediction(
            token_ids=gen.token_ids, prompt_ids=prompt_ids,
            proprio_ids=[int(i) for i in self.codec.proprio_tokens(rows)],
            bbox=self.codec.bbox(gen.bbox_ids), grasp_xyz=goal[:3], grasp_rpy=goal[3:6], action=action,
            waypoints=split_actions(quantize_gripper(action)), noise=noise, step_logits=gen.step_logits)


def load(checkpoint_dir: str | Path, llm_dir: str | Path | None = None, dtype=None, backend: str = "torch",
         **options) -> GraspVLAModel:
    """A ready model from an official checkpoint directory (config.json, preprocessor.npz,
    checkpoint/model.safetensors). llm_dir: Hugging Face layout directory with the LLM's
    config.json and tokenizer.model (default: built-in internlm2-1_8b dimensions, tokenizer.model
    next to config.json). dtype: torch dtype for the torch backend (default bf16 on CUDA, fp32 on CPU)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {sorted(BACKENDS)})")
    checkpoint_dir = Path(checkpoint_dir)
    cfg = load_config(checkpoint_dir, llm_dir)
    tokenizer = PromptTokenizer(find_tokenizer(checkpoint_dir, llm_dir))
    normalizer = Normalizer.load(checkpoint_dir / PREPROCESSOR_FILE)
    if dtype is not None:
        options["dtype"] = dtype
    components = importlib.import_module(BACKENDS[backend]).create(checkpoint_dir, cfg, **options)
    return GraspVLAModel(cfg, components, tokenizer, normalizer)

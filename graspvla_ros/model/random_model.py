"""Random-weight GraspVLA models built in memory, on any device: no checkpoint file, no tokenizer file.

For benchmarks of the full-size structure where the weights cannot be (or must not be) fetched:
``random_model(full_config(), "cuda", torch.bfloat16)`` builds the module tree on the meta device,
allocates it directly on the target device in the target dtype and fills it there with
`tiny.randomize` (3.16 B parameters in seconds on a GPU; the same seed gives a bf16 model whose
weights are the fp32 one's rounded). `FixedTokenizer` stands in for InternLM2's sentencepiece model:
deterministic ids of the right vocabulary size and a realistic prompt length, so `GraspVLAModel`
runs end to end without ``sentencepiece`` or a ``tokenizer.model``.
"""
from __future__ import annotations

import json
import re
import tempfile
import zlib
from pathlib import Path

import torch

from graspvla_ros.model.checkpoint import restore_buffers
from graspvla_ros.model.config import CONFIG_FILE, ModelConfig, parse_config
from graspvla_ros.model.modeling import GraspVLA, build_model
from graspvla_ros.model.tiny import TinySize, hf_llm_config, official_config, randomize
from graspvla_ros.model.tokenizer import prompt_text

# The released config.json's fields that shape the module tree (LLM dims: built-in internlm2-1_8b).
FULL_CONFIG = {
    "data": {"action_len": 4, "proprio_len": 2, "action_token_num": 256, "img_key": ["front", "side"],
             "img_steps": 1, "use_bbox": 1, "robot_rep": "xyz_rpy", "goal_rep": "xyz_rpy",
             "tokenizer_type": "ratio_min_max_uniform"},
    "model": {"backbone_2d": {"name": "dinosiglip", "image_size": 224},
              "llm": {"name": "internlm/internlm2-1_8b", "special_tokens": [], "pad_multiple_of": 64,
                      "attn_implementation": "flex_attention"},
              "pred": "cot_flow_matching", "action_expert": 1,
              "action_expert_cfg": {"hidden_size_scale": 2, "intermediate_size_scale": 4}},
}


def full_config() -> ModelConfig:
    """The released model's structure (3.16 B parameters; tests/fixtures/full_manifest.json)."""
    return parse_config(FULL_CONFIG)


def small_config(size: TinySize) -> ModelConfig:
    """A `tiny` size's structure (its LLM dimensions go through a temporary HF config.json)."""
    with tempfile.TemporaryDirectory(prefix="graspvla-llm-") as d:
        (Path(d) / CONFIG_FILE).write_text(json.dumps(hf_llm_config(size)))
        return parse_config(official_config(size), d)


def random_model(cfg: ModelConfig, device: str | torch.device, dtype: torch.dtype = torch.float32, seed: int = 0,
                 robot_head: bool = True) -> GraspVLA:
    """The module tree of `cfg` with random weights (`tiny.randomize`), allocated on `device` in
    `dtype`; the rotary frequencies and pixel statistics are computed in float32 as after a load."""
    device = torch.device(device)
    model = build_model(cfg, device="meta", dtype=dtype).to_empty(device=device)
    randomize(model, seed, robot_head, cfg.llm.vocab_size, cfg.action_token_num)
    restore_buffers(model, device)
    return model.eval().requires_grad_(False)


def cast_model(model: GraspVLA, dtype: torch.dtype) -> GraspVLA:
    """`model` converted in place to `dtype`, keeping the float32 buffers float32 (as a load does)."""
    model.to(dtype)
    restore_buffers(model, next(model.parameters()).device)
    return model


class FixedTokenizer:
    """Deterministic prompt ids without a tokenizer model: BOS, then one id per word, punctuation
    mark or newline of the official prompt (~17 ids for "pick up banana"; InternLM2's gives ~20),
    drawn from the ids between the special ones and the 256 robot ids by CRC-32 (stable across processes)."""

    WORDS = re.compile(r"\w+|[^\w\s]|\n")

    def __init__(self, vocab_size: int, bos_id: int = 1, eos_id: int = 2, first_id: int = 3, robot_ids: int = 256):
        self.vocab_size, self.bos_id, self.eos_id = vocab_size, bos_id, eos_id
        self.first_id, self.span = first_id, vocab_size - robot_ids - first_id
        if self.span <= 0:
            raise ValueError(f"vocab_size {vocab_size} leaves no text ids above {first_id}")

    def encode(self, text: str) -> list[int]:
        return [self.bos_id, *(self.first_id + zlib.crc32(w.encode()) % self.span for w in self.WORDS.findall(text))]

    def encode_prompt(self, instruction: str) -> list[int]:
        return self.encode(prompt_text(instruction))

"""Make a tiny random GraspVLA checkpoint in the official layout, for tests and benchmarks.

``make_tiny_checkpoint(root)`` writes::

    root/checkpoint_dir/config.json, preprocessor.npz, checkpoint/model.safetensors
    root/llm/config.json, tokenizer.model      (Hugging Face layout; pass as llm_dir)

The structure is the released model's (both ViT families, InternLM2 LLM and expert, projector,
flow head); only widths and depths shrink. The sentencepiece tokenizer is trained here on a small
generated corpus (BPE with byte fallback, like InternLM2's). Weights are random with unit-offset
norm gains and layer scales (1 + noise), so every output depends on every input: plain small
random weights would hide bugs. With ``robot_head=True`` the LM head's rows outside the 256
robot-token ids are zero, so greedy decoding lands in the robot range (as the trained model's does).
"""
from __future__ import annotations

import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graspvla_ros.model.checkpoint import save_weights
from graspvla_ros.model.config import CHECKPOINT_FILE, CONFIG_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE, Normalizer, parse_config
from graspvla_ros.model.modeling import build_model

OBJECTS = ["banana", "carrot", "bottle", "box", "garlic", "tape", "strawberry", "pepper", "toothpaste", "pen",
           "screwdriver", "pliers", "mushroom", "spoon", "fork", "orange", "bread", "towel", "glue", "stapler",
           "grape", "eggplant", "flashlight", "lemon", "potato", "soccer ball", "toy car", "elephant"]


@dataclass(frozen=True)
class TinySize:
    vocab: int = 700
    llm_hidden: int = 64
    llm_intermediate: int = 128
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    dino: tuple[int, int, int] = (3, 32, 2)     # depth, width, heads
    siglip: tuple[int, int, int] = (3, 48, 2)


TINY = TinySize()
# A mid-size configuration for benchmarks: same structure, ~1/8 of the full widths.
MID = TinySize(vocab=2000, llm_hidden=256, llm_intermediate=1024, llm_layers=6, llm_heads=4, llm_kv_heads=2,
               dino=(6, 128, 2), siglip=(6, 144, 2))


def official_config(size: TinySize) -> dict:
    """A config.json with every field the official code requires, shaped for `size`."""
    timm_kwargs = {name: {"depth": d, "embed_dim": w, "num_heads": h}
                   for name, (d, w, h) in (("dino", size.dino), ("siglip", size.siglip))}
    return {
        "data": {"exp_name": "tiny", "robot": "franka", "proprio_len": 2, "action_len": 4, "action_dim": 7,
                 "goal_dim": 6, "action_rel_len": 0, "dt_steps": 1, "action_token_num": 256, "img_steps": 1,
                 "img_key": ["front", "side"], "image_size": 224, "anything_prob": 0.0, "robot_rep": "xyz_rpy",
                 "goal_rep": "xyz_rpy", "tokenizer_type": "ratio_min_max_uniform", "tokenizer_ratio_limit": 0.01,
                 "count_num": 1000, "trans_noise": 0.0, "rot_noise": 0.0, "brightness_img": "none",
                 "brightness_threshold": 0.0, "crop_mode": {}, "proprio_dim": 7, "use_bbox": 1},
        "model": {"backbone_2d": {"name": "dinosiglip", "image_size": 224, "timm_kwargs": timm_kwargs},
                  "llm": {"name": "internlm/internlm2-1_8b", "max_len": 2048, "special_tokens": [],
                          "pad_multiple_of": 64, "attn_implementation": "flex_attention"},
                  "ckpt": "", "pred": "cot_flow_matching", "action_len": 4, "action_dim": 7, "proprio_dim": 7,
                  "action_expert": 1, "action_expert_cfg": {"hidden_size_scale": 2, "intermediate_size_scale": 4},
                  "flow_matching_cfg": {"beta_alpha": 1.5, "beta_beta": 1.0, "time_min": 0.001, "time_max": 1.0}},
    }


def hf_llm_config(size: TinySize) -> dict:
    return {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "vocab_size": size.vocab,
            "hidden_size": size.llm_hidden, "intermediate_size": size.llm_intermediate,
            "num_hidden_layers": size.llm_layers, "num_attention_heads": size.llm_heads,
            "num_key_value_heads": size.llm_kv_heads, "hidden_act": "silu", "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5, "rope_theta": 1000000, "rope_scaling": {"type": "dynamic", "factor": 2.0},
            "bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "tie_word_embeddings": False,
            "torch_dtype": "float32"}


def train_tokenizer(path: Path, vocab: int, seed: int = 0) -> None:
    """A BPE sentencepiece model (byte fallback; <unk>=0, <s>=1, </s>=2) on generated robot prompts."""
    import sentencepiece

    rng = random.Random(seed)
    verbs = ["pick up", "grasp", "lift", "grab", "take", "move", "place", "push"]
    adjectives = ["red", "blue", "small", "large", "green", "yellow", "wooden", "metal", "soft", "round"]
    lines = []
    for _ in range(3000):
        words = [rng.choice(verbs), *rng.sample(adjectives, rng.randint(0, 2)), rng.choice(OBJECTS)]
        lines.append(f"In: What action should the robot take to {' '.join(words)}?\nOut: ")
        lines.append(" ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
                              for _ in range(rng.randint(3, 12))))
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab, model_type="bpe", byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_by_whitespace=True, character_coverage=1.0,
        max_sentence_length=4096, num_threads=1, minloglevel=2)
    path.write_bytes(model.getvalue())


def randomize(model: torch.nn.Module, seed: int, robot_head: bool, vocab: int, robot_bins: int = 256) -> None:
    """Fill every parameter in place (on its device, drawn in float32 there and cast to its dtype:
    a bf16 model gets the rounded values of the fp32 one drawn on the same device)."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, device=device, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and (name.endswith(".weight") or name.endswith(".gamma")):
                p.copy_(1 + 0.1 * randn(p.shape))      # norm gains, layer scales
            elif p.ndim == 1:
                p.copy_(0.02 * randn(p.shape))         # biases
            else:
                fan_in = math.prod(p.shape[1:]) if not name.endswith("tok_embeddings.weight") else 1
                p.copy_(randn(p.shape) / math.sqrt(fan_in))
        if robot_head:
            head = model.llm.llm.output.weight
            keep = torch.zeros(head.shape[0], dtype=torch.bool, device=device)
            keep[vocab - robot_bins: vocab] = True
            head[~keep] = 0


def tiny_normalizer() -> Normalizer:
    """Plausible ranges (float64, as the released preprocessor.npz): proprio xyz m, rpy rad,
    gripper 0…1; action Δxyz m, Δrpy rad, gripper 0…1."""
    return Normalizer(
        min_proprio=np.array([0.2, -0.35, -0.05, -math.pi, -0.6, -math.pi, 0.0]),
        max_proprio=np.array([0.8, 0.35, 0.6, math.pi, 0.6, math.pi, 1.0]),
        min_action=np.array([-0.02, -0.02, -0.02, -0.06, -0.06, -0.06, 0.0]),
        max_action=np.array([0.02, 0.02, 0.02, 0.06, 0.06, 0.06, 1.0]))


def make_tiny_checkpoint(root: str | Path, seed: int = 0, size: TinySize = TINY,
                         robot_head: bool = True) -> tuple[Path, Path]:
    """Write a random checkpoint + LLM dir under `root`; returns (checkpoint_dir, llm_dir)."""
    root = Path(root)
    ckpt_dir, llm_dir = root / "checkpoint_dir", root / "llm"
    llm_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (llm_dir / CONFIG_FILE).write_text(json.dumps(hf_llm_config(size), indent=1))
    train_tokenizer(llm_dir / TOKENIZER_FILE, size.vocab, seed)
    raw = official_config(size)
    (ckpt_dir / CONFIG_FILE).write_text(json.dumps(raw, indent=1))
    tiny_normalizer().save(ckpt_dir / PREPROCESSOR_FILE)
    model = build_model(parse_config(raw, llm_dir))
    randomize(model, seed, robot_head, size.vocab)
    save_weights(model, ckpt_dir / CHECKPOINT_FILE)
    return ckpt_dir, llm_dir

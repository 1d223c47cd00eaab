"""GraspVLA configuration: the official checkpoint's config.json and preprocessor.npz, plus the LLM's
own dimensions.

A released checkpoint directory looks like::

    <dir>/config.json            {"data": {...}, "model": {...}}
    <dir>/preprocessor.npz       min_proprio, max_proprio, min_action, max_action
    <dir>/checkpoint/model.safetensors

The official code takes the LLM's dimensions and tokenizer from the Hugging Face hub entry named by
``model.llm.name``. Nothing is downloaded here: ``internlm/internlm2-1_8b`` has a built-in table
(`INTERNLM2_1_8B`), and a local directory in Hugging Face layout (``config.json`` +
``tokenizer.model``) overrides it; tests use the same mechanism to build tiny models.

``model.backbone_2d`` may carry an extra ``timm_kwargs`` mapping ({"dino": {...}, "siglip": {...}})
passed to ``timm.create_model`` on top of the official architectures; only tiny test checkpoints
use it (the official config has none, and the official code ignores unknown keys).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

CHECKPOINT_FILE = Path("checkpoint") / "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor.npz"
TOKENIZER_FILE = "tokenizer.model"
PAD_TOKEN = "<PAD>"

# timm architectures of the official "dinosiglip" backbone at 224 px (weights come from the checkpoint).
VIT_ARCHS = {"dino": "vit_large_patch14_reg4_dinov2", "siglip": "vit_so400m_patch14_siglip_224"}
# Per-backbone pixel normalisation (timm's data config of each pretrained tag).
VIT_MEAN_STD = {
    "dino": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class ConfigError(ValueError):
    """A checkpoint directory or config this implementation cannot run, with the reason."""


@dataclass(frozen=True)
class LLMDims:
    """Dimensions of an InternLM2 decoder (the LLM, or the action expert derived from it)."""

    vocab_size: int            # tokenizer vocabulary (sentencepiece pieces), robot ids count down from it
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    bos_token_id: int = 1
    eos_token_id: int = 2

    @property
    def kv_groups(self) -> int:
        return self.num_heads // self.num_kv_heads


# internlm/internlm2-1_8b (its hub config.json); head_dim = hidden / heads.
INTERNLM2_1_8B = LLMDims(vocab_size=92544, hidden_size=2048, intermediate_size=8192, num_layers=24,
                         num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0,
                         rms_norm_eps=1e-5, max_position_embeddings=32768)
BUILTIN_LLMS = {"internlm/internlm2-1_8b": INTERNLM2_1_8B}


def llm_dims_from_hf_config(raw: dict) -> LLMDims:
    """LLMDims from a Hugging Face InternLM2 config.json (vocab_size there is the tokenizer's)."""
    try:
        hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        return LLMDims(
            vocab_size=int(raw["vocab_size"]), hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]), num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads, num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads), rope_theta=float(raw.get("rope_theta", 10000)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            bos_token_id=int(raw.get("bos_token_id", 1)), eos_token_id=int(raw.get("eos_token_id", 2)))
    except KeyError as e:
        raise ConfigError(f"LLM config.json lacks {e.args[0]!r}") from None


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    views: tuple[str, ...] = ("front", "side")
    timm_kwargs: dict = field(default_factory=dict)  # {"dino": {...}, "siglip": {...}} overrides


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the module tree and run inference."""

    llm: LLMDims
    expert: LLMDims
    vision: VisionConfig
    embedding_rows: int        # LLM vocabulary after adding special tokens + <PAD>, padded to a multiple
    pad_token_id: int
    special_tokens: tuple[str, ...]
    action_len: int = 4
    action_dim: int = 7
    proprio_dim: int = 7
    goal_dim: int = 6
    proprio_len: int = 2       # history step + current step
    action_token_num: int = 256
    use_bbox: bool = True
    flow_steps: int = 10
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def image_tokens(self) -> int:
        return len(self.vision.views) * (self.vision.image_size // 14) ** 2

    @property
    def bbox_tokens(self) -> int:
        return 4 * len(self.vision.views) if self.use_bbox else 0


def _pad_to_multiple(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple else n


def load_llm_dims(name: str, llm_dir: str | Path | None) -> LLMDims:
    if llm_dir is not None:
        path = Path(llm_dir) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{path} not found: llm_dir must be a Hugging Face layout directory "
                              f"(config.json + {TOKENIZER_FILE})")
        return llm_dims_from_hf_config(json.loads(path.read_text()))
    if name not in BUILTIN_LLMS:
        raise ConfigError(f"no built-in dimensions for LLM {name!r} (known: {sorted(BUILTIN_LLMS)}); "
                          "pass llm_dir=<Hugging Face layout directory>")
    return BUILTIN_LLMS[name]


def parse_config(raw: dict, llm_dir: str | Path | None = None) -> ModelConfig:
    """ModelConfig from the official config.json contents ({"data": ..., "model": ...})."""
    try:
        data, model = raw["data"], raw["model"]
        llm_cfg, b2d = model["llm"], model["backbone_2d"]
    except KeyError as e:
        raise ConfigError(f"config.json lacks {e.args[0]!r} (expected the official {{'data', 'model'}} layout)") from None
    if model.get("pred") != "cot_flow_matching" or not model.get("action_expert"):
        raise ConfigError(f"only pred='cot_flow_matching' with an action expert is supported, got pred={model.get('pred')!r}")
    if b2d.get("name") != "dinosiglip" or int(b2d.get("image_size", 0)) != 224:
        raise ConfigError(f"only the 224 px 'dinosiglip' backbone is supported, got {b2d}")
    if data.get("img_steps", 1) != 1:
        raise ConfigError(f"img_steps={data['img_steps']} is not supported (the released model uses 1)")
    for key, want in (("robot_rep", "xyz_rpy"), ("goal_rep", "xyz_rpy"), ("tokenizer_type", "ratio_min_max_uniform")):
        if key in data and data[key] != want:
            raise ConfigError(f"data.{key}={data[key]!r} is not supported (expected {want!r})")

    llm = load_llm_dims(llm_cfg["name"], llm_dir)
    special = tuple(llm_cfg.get("special_tokens", []))
    n_tokens = llm.vocab_size + len(special) + 1  # + <PAD>
    rows = _pad_to_multiple(n_tokens, int(llm_cfg.get("pad_multiple_of", 64)))
    scales = model.get("action_expert_cfg") or {}
    h_scale, i_scale = int(scales.get("hidden_size_scale") or 1), int(scales.get("intermediate_size_scale") or 1)
    expert = replace(llm, hidden_size=llm.hidden_size // h_scale,
                     intermediate_size=llm.intermediate_size // i_scale)
    vision = VisionConfig(image_size=int(b2d["image_size"]), views=tuple(data.get("img_key") or ("front", "side")),
                          timm_kwargs=dict(b2d.get("timm_kwargs") or {}))
    return ModelConfig(
        llm=llm, expert=expert, vision=vision, embedding_rows=rows, pad_token_id=llm.vocab_size + len(special),
        special_tokens=special,
        action_len=int(model.get("action_len") or data["action_len"]),
        action_dim=int(model.get("action_dim") or data.get("action_dim") or 7),
        proprio_dim=int(model.get("proprio_dim") or data.get("proprio_dim") or 7),
        proprio_len=int(data.get("proprio_len", 2)),
        action_token_num=int(data.get("action_token_num", 256)),
        use_bbox=bool(data.get("use_bbox", 1)), raw=raw)


def load_config(checkpoint_dir: str | Path, llm_dir: str | Path | None = None) -> ModelConfig:
    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: checkpoint_dir must hold config.json, {PREPROCESSOR_FILE} "
                          f"and {CHECKPOINT_FILE}")
    return parse_config(json.loads(path.read_text()), llm_dir)


@dataclass(frozen=True)
class Normalizer:
    """preprocessor.npz: min/max of proprio (7: xyz, rpy, gripper) and action (7)."""

    min_proprio: np.ndarray
    max_proprio: np.ndarray
    min_action: np.ndarray
    max_action: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path} not found")
        with np.load(path) as z:
            missing = [k for k in ("min_proprio", "max_proprio", "min_action", "max_action") if k not in z.files]
            if missing:
                raise ConfigError(f"{path} lacks {missing}")
            return cls(*(np.array(z[k]) for k in ("min_proprio", "max_proprio", "min_action", "max_action")))

    def save(self, path: str | Path) -> None:
        np.savez(path, min_proprio=self.min_proprio, max_proprio=self.max_proprio,
                 min_action=self.min_action, max_action=self.max_action)

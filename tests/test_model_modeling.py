"""The module tree matches the official checkpoint's state dict exactly."""
from __future__ import annotations

import json
from pathlib import Path

from graspvla_ros.model.config import parse_config
from graspvla_ros.model.modeling import build_model

FIXTURES = Path(__file__).parent / "fixtures"

# The released config.json's fields that shape the module tree.
OFFICIAL_CONFIG = {
    "data": {"action_len": 4, "proprio_len": 2, "action_token_num": 256, "img_key": ["front", "side"],
             "img_steps": 1, "use_bbox": 1, "robot_rep": "xyz_rpy", "goal_rep": "xyz_rpy",
             "tokenizer_type": "ratio_min_max_uniform"},
    "model": {"backbone_2d": {"name": "dinosiglip", "image_size": 224},
              "llm": {"name": "internlm/internlm2-1_8b", "special_tokens": [], "pad_multiple_of": 64,
                      "attn_implementation": "flex_attention"},
              "pred": "cot_flow_matching", "action_expert": 1,
              "action_expert_cfg": {"hidden_size_scale": 2, "intermediate_size_scale": 4}},
}


def test_full_size_tree_equals_the_official_manifest():
    manifest = json.loads((FIXTURES / "full_manifest.json").read_text())
    model = build_model(parse_config(OFFICIAL_CONFIG), device="meta")
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert len(ours) == manifest["num_tensors"]
    assert ours == manifest["entries"]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["total_params"]

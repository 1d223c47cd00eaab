"""The module tree matches the official checkpoint's state dict exactly."""
from __future__ import annotations

import json
from pathlib import Path

from graspvla_ros.model.config import parse_config
from graspvla_ros.model.modeling import build_model
from graspvla_ros.model.random_model import FULL_CONFIG  # the released config.json's shaping fields

FIXTURES = Path(__file__).parent / "fixtures"


def test_full_size_tree_equals_the_official_manifest():
    manifest = json.loads((FIXTURES / "full_manifest.json").read_text())
    model = build_model(parse_config(FULL_CONFIG), device="meta")
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert len(ours) == manifest["num_tensors"]
    assert ours == manifest["entries"]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["total_params"]

"""GraspVLA torch implementation on a tiny random checkpoint: loading, generation, numerics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graspvla_ros.model import load
from graspvla_ros.model.checkpoint import CheckpointMismatchError
from graspvla_ros.model.components import causal_mask, expert_mask
from graspvla_ros.model.config import CHECKPOINT_FILE
from graspvla_ros.model.generate import (RobotCodec, official_proprio_rows, quantize_gripper, split_actions)
from graspvla_ros.model.tiny import tiny_normalizer
from graspvla_ros.model.tokenizer import PromptTokenizer


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load(*tiny_checkpoint)


@pytest.fixture(scope="module")
def views():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


PROPRIO = np.array([[0.45, 0.02, 0.30, -3.0, 0.1, 0.8, 1.0]] * 3 + [[0.47, 0.0, 0.28, -3.0, 0.1, 0.7, -1.0]])


def test_load_is_strict_and_fills_every_tensor(model):
    tensors = list(model.components.model.parameters()) + list(model.components.model.buffers())
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def test_predict_shapes_and_ranges(model, views):
    p = model.predict(*views, "pick up banana", PROPRIO, seed=0)
    cfg, codec = model.cfg, model.codec
    assert len(p.token_ids) == cfg.bbox_tokens + cfg.goal_dim + 1
    lo, hi = codec.id_range
    assert all(lo <= t <= hi for t in p.token_ids)  # the tiny LM head only scores robot ids
    assert p.bbox.shape == (2, 4) and np.all((p.bbox >= 0) & (p.bbox <= 224))
    n = tiny_normalizer()
    assert np.all(p.grasp_xyz >= n.min_proprio[:3]) and np.all(p.grasp_xyz <= n.max_proprio[:3])
    assert p.action.shape == (4, 7) and p.waypoints.shape == (8, 7) and p.noise.shape == (1, 4, 7)
    assert np.all(np.isfinite(p.waypoints))
    assert set(np.unique(p.waypoints[:, 6])) <= {-1.0, 0.0, 1.0}
    assert np.all(p.waypoints[0::2, 6] == 0)
    np.testing.assert_allclose(p.waypoints[0::2, :3] * 2, p.action[:, :3], atol=1e-12)


def test_seed_reproduces_and_differs(model, views):
    a = model.predict(*views, "pick up banana", PROPRIO, seed=3)
    b = model.predict(*views, "pick up banana", PROPRIO, seed=3)
    c = model.predict(*views, "pick up banana", PROPRIO, seed=4)
    assert np.array_equal(a.waypoints, b.waypoints) and np.array_equal(a.action, b.action)
    assert np.abs(a.action - c.action).max() > 1e-4
    d = model.predict(*views, "pick up banana", PROPRIO, noise=a.noise)
    assert np.array_equal(a.action, d.action)


def test_outputs_depend_on_inputs(model, views):
    base = model.predict(*views, "pick up banana", PROPRIO, seed=0, keep_logits=True)
    other_image = model.predict(views[0][::-1].copy(), views[1], "pick up banana", PROPRIO, seed=0, keep_logits=True)
    other_text = model.predict(*views, "grasp the red toy car", PROPRIO, seed=0, keep_logits=True)
    for other in (other_image, other_text):
        assert np.abs(base.step_logits[0] - other.step_logits[0]).max() > 1e-3


def test_prompt_tokens(model, tiny_checkpoint):
    tok = PromptTokenizer(tiny_checkpoint[1] / "tokenizer.model")
    ids = tok.encode_prompt("pick up banana")
    assert ids[0] == tok.bos_id and tok.eos_id not in ids
    assert tok.decode(ids) == "In: What action should the robot take to pick up banana?\nOut: "


def test_robot_codec_round_trip():
    codec = RobotCodec(92544, tiny_normalizer())
    values = np.linspace(-1, 1, 1001)
    ids = codec.tokenize(values)
    assert ids.min() == 92544 - 256 and ids.max() == 92544 - 1
    # decoding at the bin centre is within half a bin of the value (clipped at the ends)
    assert np.abs(codec.detokenize(ids) - values).max() <= 1 / 255 + 1e-12
    assert np.array_equal(codec.tokenize(codec.detokenize(ids)), ids)
    assert codec.tokenize([-5.0])[0] == 92544 - 1 and codec.tokenize([5.0])[0] == 92544 - 256
    np.testing.assert_allclose(codec.bbox(codec.tokenize(np.array([-1, -1, 1, 1]) * 0.999)), [[0.439, 0.439, 223.56, 223.56]],
                               atol=0.01)


def test_proprio_rows_follow_the_official_server():
    rows = official_proprio_rows(PROPRIO)
    np.testing.assert_array_equal(rows[0, :6], PROPRIO[0, :6])
    np.testing.assert_array_equal(rows[1, :6], PROPRIO[-1, :6])
    assert rows[0, 6] == 1.0 and rows[1, 6] == 0.0  # gripper −1/+1 → 0/1
    assert np.array_equal(official_proprio_rows(PROPRIO[-2:]), np.array([[*PROPRIO[-2, :6], 1.0], [*PROPRIO[-1, :6], 0.0]]))
    for bad in (PROPRIO[:1], PROPRIO[:, :6], np.full((4, 7), np.nan)):
        with pytest.raises(ValueError):
            official_proprio_rows(bad)


def test_gripper_thresholds():
    a = np.zeros((5, 7))
    a[:, 6] = [0.0, 0.39, 0.4, 0.6, 0.61]
    assert quantize_gripper(a)[:, 6].tolist() == [-1, -1, 0, 0, 1]


def test_split_actions_halves_rotation_about_its_axis():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    actions = np.concatenate([rng.normal(0, 0.02, (6, 3)), rng.normal(0, 0.3, (6, 3)), np.ones((6, 1))], axis=1)
    out = split_actions(actions)
    for a, (s1, s2) in zip(actions, out.reshape(-1, 2, 7)):
        np.testing.assert_allclose(s1[:3] + s2[:3], a[:3])
        half = Rotation.from_euler("xyz", s1[3:6])
        np.testing.assert_allclose((half * half).as_matrix(), Rotation.from_euler("xyz", a[3:6]).as_matrix(), atol=1e-12)
        assert s1[6] == 0 and s2[6] == a[6]
    # a rotation by more than π (quaternion w < 0) is halved the long way round, as transforms3d does
    big = split_actions(np.array([[0, 0, 0, 0, 0, 3.5, 0]]))
    assert math.isclose(big[0, 5], 1.75)


def test_masks():
    c = causal_mask(3, 2, torch.float32, torch.device("cpu"))
    assert c.shape == (3, 5) and ((c == 0) == torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()).all()
    e = expert_mask(3, 2, 4, torch.float32, torch.device("cpu")) == 0
    assert e.shape == (6, 9) and e[:, :3].all()
    assert e[:2, 3:5].all() and not e[:2, 5:].any()      # proprio: itself only
    assert e[2:, 3:].all()                                # actions: the whole suffix


def test_corrupted_checkpoint_is_refused_with_the_differences(tiny_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    ckpt, llm = tiny_checkpoint
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    state = load_file(bad / CHECKPOINT_FILE)
    state["projector.projector.0.weights"] = state.pop("projector.projector.0.weight")
    state["flow_module.action_out_proj.bias"] = torch.zeros(8)
    save_file(state, bad / CHECKPOINT_FILE)
    with pytest.raises(CheckpointMismatchError) as err:
        load(bad, llm)
    msg = str(err.value)
    assert "1 missing: projector.projector.0.weight" in msg
    assert "1 unexpected: projector.projector.0.weights" in msg
    assert "flow_module.action_out_proj.bias: checkpoint [8], model [7]" in msg


def test_bad_requests_are_refused(model, views):
    with pytest.raises(ValueError, match="exactly one"):
        model.predict(*views, "pick up banana", PROPRIO)
    with pytest.raises(ValueError, match="noise"):
        model.predict(*views, "pick up banana", PROPRIO, noise=np.zeros(5))
    with pytest.raises(ValueError):
        model.predict(views[0].astype(np.float32), views[1], "pick up banana", PROPRIO, seed=0)
    with pytest.raises(ValueError, match="backend"):
        load("/nonexistent", backend="tflite")

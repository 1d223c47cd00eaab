"""The torch backend's static-KV-cache path (CUDA graphs / compile option) agrees with the eager path."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from graspvla_ros.model import load
from graspvla_ros.model.backends.torch_backend import fast_options
from graspvla_ros.model.static_cache import DECODE_ROOM, StaticCache, capacity_for

PROPRIO = np.array([[0.45, 0.02, 0.30, -3.0, 0.1, 0.8, 1.0]] * 3 + [[0.47, 0.0, 0.28, -3.0, 0.1, 0.7, -1.0]])


@pytest.fixture(scope="module")
def eager(tiny_checkpoint):
    return load(*tiny_checkpoint)


@pytest.fixture(scope="module")
def static(tiny_checkpoint):
    return load(*tiny_checkpoint, static_cache=True)


@pytest.fixture(scope="module")
def views():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed, instruction", [(0, "pick up banana"), (7, "grasp the red toy car")])
def test_static_cache_matches_eager_fp32(eager, static, views, seed, instruction):
    a = eager.predict(*views, instruction, PROPRIO, seed=seed, keep_logits=True)
    b = static.predict(*views, instruction, PROPRIO, seed=seed, keep_logits=True)
    assert b.token_ids == a.token_ids and b.proprio_ids == a.proprio_ids
    assert np.abs(b.waypoints - a.waypoints).max() <= 1e-5
    assert np.abs(b.action - a.action).max() <= 1e-5
    assert max(np.abs(x - y).max() for x, y in zip(a.step_logits, b.step_logits)) <= 1e-5
    np.testing.assert_array_equal(b.bbox, a.bbox)
    # the backend really took the static path: a preallocated cache of one bucketed capacity
    comps = static.components
    assert type(comps).__name__ == "StaticTorchComponents"
    assert capacity_for(len(a.prompt_ids) + static.cfg.image_tokens) in comps.buffers


def test_decode_past_the_planned_capacity_grows_the_cache(eager, static):
    """More decode steps than a generation needs: the static cache moves to a larger buffer and
    every step's logits still match the eager cache's."""
    ce, cs = eager.components, static.components
    rng = np.random.default_rng(1)
    front, side = (rng.random((1, 3, 224, 224), dtype=np.float32) for _ in range(2))
    ids = np.asarray(eager.tokenizer.encode_prompt("pick up pen"), np.int64)
    la, cache_a = ce.prefill(ids, ce.encode_images(front, side))
    lb, cache_b = cs.prefill(ids, cs.encode_images(front, side))
    first_capacity = cache_b.capacity
    np.testing.assert_allclose(lb, la, atol=1e-5, rtol=0)
    tokens = rng.integers(3, eager.cfg.llm.vocab_size, first_capacity + 5 - cache_b.length)
    for i, t in enumerate(tokens):
        step = np.asarray([t] * (15 if i == 3 else 1), np.int64)  # one multi-token step, as the proprio feed
        la, cache_a = ce.decode(step, cache_a)
        lb, cache_b = cs.decode(step, cache_b)
        np.testing.assert_allclose(lb, la, atol=1e-5, rtol=0)
    assert isinstance(cache_b, StaticCache) and cache_b.length == cache_a[0].shape[3]
    assert first_capacity < cache_b.capacity and cache_b.length <= cache_b.capacity
    noise = rng.standard_normal((1, 4, 7)).astype(np.float32)
    proprio = rng.uniform(-1, 1, (1, 2, 7)).astype(np.float32)
    np.testing.assert_allclose(cs.flow(noise, proprio, cache_b), ce.flow(noise, proprio, cache_a), atol=1e-5, rtol=0)


def test_a_cache_can_be_extended_again_from_the_same_point(static):
    """Like the eager cache, a StaticCache is a value: decoding from it twice gives the same step."""
    c = static.components
    rng = np.random.default_rng(2)
    front, side = (rng.random((1, 3, 224, 224), dtype=np.float32) for _ in range(2))
    _, cache = c.prefill(np.asarray(static.tokenizer.encode_prompt("pick up pen"), np.int64), c.encode_images(front, side))
    l1, c1 = c.decode(np.asarray([500], np.int64), cache)
    c.decode(np.asarray([501, 502], np.int64), c1)
    l2, c2 = c.decode(np.asarray([500], np.int64), cache)
    np.testing.assert_array_equal(l1, l2)
    assert (cache.length, c1.length, c2.length) == (cache.length, cache.length + 1, cache.length + 1)
    assert DECODE_ROOM >= 29  # generate() appends 29 tokens after the prefill


def test_options_are_checked_and_the_fast_path_is_chosen_by_device(tiny_checkpoint):
    with pytest.raises(ValueError, match="CUDA"):
        load(*tiny_checkpoint, device="cpu", cuda_graphs=True)
    assert fast_options("cpu") == {"device": "cpu"}
    assert fast_options("cuda") == {"device": "cuda", "dtype": torch.bfloat16, "static_cache": True,
                                    "cuda_graphs": True, "compile": True}


class ReplayOnStaticInputs:
    """CPU stand-in for `CapturedCall` with a CUDA graph's replay contract: replay() runs the
    function captured at first use on the SAME static input tensors (whatever the caller wrote into
    them since) and returns one persistent output tensor, overwritten each time. It checks the
    static-input bookkeeping of the graph path (copies, keys, cache buffers), not CUDA itself."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self.out = fn(*args).clone()

    def replay(self):
        self.out.copy_(self.fn(*self.args))
        return self.out


def test_graph_path_bookkeeping_matches_eager(eager, views):
    from graspvla_ros.model.api import GraspVLAModel
    from graspvla_ros.model.backends.torch_static import StaticTorchComponents

    class Emulated(StaticTorchComponents):
        graph_runner = ReplayOnStaticInputs

    comps = Emulated(eager.components.model, cuda_graphs=True)
    graphed = GraspVLAModel(eager.cfg, comps, eager.tokenizer, eager.codec.norm)
    for seed, instruction in ((0, "pick up banana"), (3, "pick up the small orange")):
        a = eager.predict(*views, instruction, PROPRIO, seed=seed, keep_logits=True)
        b = graphed.predict(*views, instruction, PROPRIO, seed=seed, keep_logits=True)
        assert b.token_ids == a.token_ids
        assert np.abs(b.waypoints - a.waypoints).max() <= 1e-5
        assert max(np.abs(x - y).max() for x, y in zip(a.step_logits, b.step_logits)) <= 1e-5
    kinds = sorted((k[0], k[2]) if k[0] == "decode" else (k[0],) for k in comps.graphs)
    assert kinds == [("decode", 1), ("decode", 15), ("flow",), ("vision",)]  # one graph per shape, reused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: CUDA graphs cannot run here")
def test_cuda_graphs_match_eager_fp32_on_gpu(tiny_checkpoint, views):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    a = load(*tiny_checkpoint, device="cuda", dtype=torch.float32)
    b = load(*tiny_checkpoint, device="cuda", dtype=torch.float32, cuda_graphs=True)
    for seed in (0, 1):
        pa = a.predict(*views, "pick up banana", PROPRIO, seed=seed)
        pb = b.predict(*views, "pick up banana", PROPRIO, seed=seed)
        assert pb.token_ids == pa.token_ids
        assert np.abs(pb.waypoints - pa.waypoints).max() <= 1e-5

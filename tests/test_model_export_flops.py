"""The FLOP/byte cost model: dimensions read off shapes, the official pass schedule, the roofline."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from graspvla_ros.model.flops import GPUS, Gpu, ModelDims, Pass, Workload, memory_estimate, roofline_markdown, stages


def _decoder(prefix: str, layers: int, hidden: int, q: int, kv: int, mlp: int, vocab: int) -> dict:
    shapes = {f"{prefix}model.tok_embeddings.weight": (vocab, hidden), f"{prefix}output.weight": (vocab, hidden),
              f"{prefix}model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"{prefix}model.layers.{i}."
        shapes |= {p + "attention.wqkv.weight": (q + 2 * kv, hidden), p + "attention.wo.weight": (hidden, q),
                   p + "feed_forward.w1.weight": (mlp, hidden), p + "feed_forward.w3.weight": (mlp, hidden),
                   p + "feed_forward.w2.weight": (hidden, mlp), p + "attention_norm.weight": (hidden,),
                   p + "ffn_norm.weight": (hidden,)}
    return shapes


def _vit(name: str, blocks: int, width: int, mlp: int, prefix_tokens: int) -> dict:
    p = f"backbone_2d.{name}.model."
    shapes = {p + "pos_embed": (1, 4, width), p + "patch_embed.proj.weight": (width, 3, 2, 2),
              p + "patch_embed.proj.bias": (width,), p + "norm.weight": (width,)}
    if prefix_tokens:
        shapes |= {p + "cls_token": (1, 1, width), p + "reg_token": (1, prefix_tokens - 1, width)}
    for i in range(blocks):
        b = f"{p}blocks.{i}."
        shapes |= {b + "attn.qkv.weight": (3 * width, width), b + "attn.proj.weight": (width, width),
                   b + "mlp.fc1.weight": (mlp, width), b + "mlp.fc2.weight": (width, mlp)}
    return shapes


@pytest.fixture
def shapes() -> dict:
    return {
        **_vit("dino", 3, 8, 16, 5), **_vit("siglip", 4, 12, 20, 0),
        "projector.projector.0.weight": (24, 20), "projector.projector.2.weight": (16, 24),
        "projector.projector.4.weight": (16, 16),
        **_decoder("llm.llm.", 2, 16, 16, 8, 32, 40), **_decoder("action_expert.", 2, 8, 16, 8, 16, 40),
        "flow_module.proprior_proj.weight": (8, 7), "flow_module.action_in_proj.weight": (8, 7),
        "flow_module.action_time_mlp.0.weight": (8, 16), "flow_module.action_time_mlp.2.weight": (8, 8),
        "flow_module.action_out_proj.weight": (7, 8),
    }


def test_dimensions_are_read_off_the_shapes(shapes):
    d = ModelDims.from_shapes(shapes)
    dino, siglip = d.vits
    assert (dino.name, dino.width, dino.mlp, dino.blocks_run, dino.tokens, dino.patches) == ("dino", 8, 16, 2, 9, 4)
    assert (siglip.blocks_run, siglip.tokens, siglip.patch_pixels) == (3, 4, 12)
    assert d.projector == ((20, 24), (24, 16), (16, 16))
    assert (d.llm.layers, d.llm.hidden, d.llm.q_dim, d.llm.kv_dim, d.llm.mlp, d.llm.vocab) == (2, 16, 16, 8, 32, 40)
    assert (d.expert.hidden, d.expert.q_dim, d.expert.kv_dim) == (8, 16, 8)
    assert d.flow_params_per_step == 7 * 8 + 16 * 8 + 8 * 8 + 8 * 7
    assert d.total_params == sum(math.prod(s) for s in shapes.values())


def test_missing_component_is_a_clear_error(shapes):
    del shapes["llm.llm.model.tok_embeddings.weight"]
    with pytest.raises(KeyError, match="tok_embeddings"):
        ModelDims.from_shapes(shapes)


def test_pass_schedule_follows_the_official_generation():
    w = Workload()
    passes = w.decode_passes()
    # 7 one-token bbox passes, bbox-8 + 14 proprio, 5 goal passes, last goal, the EOS slot's token.
    assert passes == (1,) * 7 + (15,) + (1,) * 5 + (1, 1)
    assert sum(passes) == w.bbox_tokens + w.proprio_tokens + w.goal_tokens + 1
    assert w.prefill_tokens(512) == 533


def test_prefill_and_expert_costs_match_hand_counts(shapes):
    d = ModelDims.from_shapes(shapes)
    w = Workload(prompt_tokens=3, flow_steps=2)
    st = {s.name: s for s in stages(d, w)}
    s = 1 + 8 + 3  # BOS + 2 views × 4 patches + prompt
    layer = 16 * 32 + 16 * 16 + 3 * 16 * 32
    flops = 2 * s * layer * 2 + 4 * (s * (s + 1) // 2) * 16 * 2 + 2 * 16 * 40
    assert st["LLM prefill"].flops == flops
    assert st["LLM prefill"].bytes == (layer * 2 + 16 * 40) * 2 + s * 2 * 2 * 8 * 2
    past = s + 29
    expert_layer = 8 * 32 + 16 * 8 + 3 * 8 * 16
    step = 2 * 6 * expert_layer * 2 + 4 * (6 * past + 36) * 16 * 2 + 2 * 4 * d.flow_params_per_step
    assert [p.flops for p in st["action expert"].passes] == [step, step]
    decode = st["LLM decode"].passes
    assert len(decode) == 15
    assert decode[-2].bytes - decode[-1].bytes == 16 * 40 * 2 - 2 * 2 * 8 * 2  # no LM head, one more cached row


def test_roofline_takes_the_slower_of_compute_and_memory_per_pass():
    gpu = Gpu("x", 100.0, 10.0)
    assert Pass(1000.0, 50.0).lower_bound_s(gpu) == 10.0  # compute bound
    assert Pass(100.0, 50.0).lower_bound_s(gpu) == 5.0  # memory bound


def test_report_and_memory_estimate(shapes):
    d = ModelDims.from_shapes(shapes)
    md = roofline_markdown(d)
    for g in GPUS:
        assert g.name in md
    assert "200 ms" in md and "500 ms" in md
    mem = memory_estimate(d)
    assert mem.weights == 2 * d.total_params
    assert mem.kv_cache == (1 + 8 + 20 + 29) * 2 * 2 * 8 * 2


def test_full_size_manifest():
    """The official full-size model (tests/fixtures/full_manifest.json): dims, and bf16 fits in 8 GB."""
    d = ModelDims.from_manifest(Path(__file__).parent / "fixtures" / "full_manifest.json")
    assert d.total_params == 3_156_129_223
    dino, siglip = d.vits
    assert (dino.width, dino.blocks_run, dino.tokens, siglip.width, siglip.blocks_run, siglip.tokens) == (
        1024, 23, 261, 1152, 26, 256)
    assert (d.llm.layers, d.llm.hidden, d.llm.q_dim, d.llm.kv_dim, d.llm.mlp, d.llm.vocab) == (
        24, 2048, 2048, 1024, 8192, 92608)
    assert (d.expert.layers, d.expert.hidden, d.expert.q_dim, d.expert.kv_dim, d.expert.mlp) == (24, 1024, 2048, 1024, 2048)
    assert d.projector == ((2176, 8704), (8704, 2048), (2048, 2048))
    assert memory_estimate(d).total < 8 * 2**30

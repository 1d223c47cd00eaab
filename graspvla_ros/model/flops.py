"""FLOP / byte model of one GraspVLA inference and its roofline lower-bound latency per GPU.

Why: no GPU is attached where this project is developed, so the question "can the full model run
at ≥ 5 Hz (goal ≥ 20 Hz) on the robot's GPU?" is answered from first principles: count the
arithmetic and the memory traffic of every stage, then take, per forward pass,
``max(flops / peak_flops, bytes / memory_bandwidth)``. That is a hard lower bound: real kernels
reach a fraction of either peak.

Every dimension comes from tensor shapes (a state dict, or the official full-size manifest
``[key, shape, dtype]`` list), so the same code describes the full model, the tiny test model and
the mid-size benchmark model. The pass schedule follows the official generation code
(PKU-EPIC/GraspVLA ``VLA.generate_autoregressive`` / ``LLMBackbone.generate_normal``):

* vision: both ViTs over both views (batch 2). Features come from the second-to-last block, so
  only ``blocks - 1`` blocks are counted (the official timm call runs all of them; a deployment
  need not). DINOv2 runs 1 cls + 4 register + 256 patch tokens, SigLIP 256 patch tokens.
* projector: 3 linears on the 512 image tokens.
* LLM prefill: ``[BOS, 512 image tokens, prompt]`` (prompt ≈ 20 tokens for
  "In: What action should the robot take to pick up {object}?\\nOut: "); only the last position's
  logits are needed (the official code computes all of them; counted here as not needed).
* LLM decode: ``generate(8)`` for the bbox = prefill + 7 one-token passes; then one pass over
  [last bbox token + 14 proprio tokens] (15 tokens) that yields the first goal token, 5 one-token
  passes for the rest of the goal, one pass feeding the last goal token that yields the EOS slot's
  token, and a last pass feeding that token, which only fills the KV cache (no logits needed):
  15 weight-streaming passes after prefill, 29 tokens. Attention is counted causally.
* action expert: 10 Euler steps; each runs the 24-layer expert over 6 suffix tokens (2 proprio +
  4 action) attending to the whole prefix KV (prompt + 29 generated/fed tokens) of the LLM, plus
  the flow-matching head (action/time MLP, output projection).

Bytes: every weight a pass touches is read once from device memory in bf16 (2 B; the L2 caches
are far smaller than a pass's weights), the KV cache is read (past) and written (new) in bf16,
activations are assumed to stay on chip (fused kernels). FLOPs: 2 per multiply-accumulate;
norms, softmax, rotary and activations are ignored (≪ 1 %).

Peak numbers (dense, no sparsity, bf16 tensor cores with fp32 accumulate) are the vendors'
data-sheet figures: NVIDIA H100 SXM5 data sheet (989.4 TFLOP/s, 3.35 TB/s HBM3), NVIDIA L40S data
sheet (362.05 TFLOP/s, 864 GB/s GDDR6), NVIDIA Ada whitepaper appendix for the GeForce RTX 4090
(165.2 TFLOP/s bf16 with fp32 accumulate, 1008 GB/s GDDR6X).
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BF16_BYTES = 2

# The official numbers the roofline is compared with (GraspVLA README: L40S, bf16 autocast).
OFFICIAL_L40S_COMPILED_MS = 200.0
OFFICIAL_L40S_EAGER_MS = 500.0


@dataclass(frozen=True)
class Gpu:
    """Peak dense bf16 tensor throughput and device-memory bandwidth of one GPU."""

    name: str
    bf16_flops: float  # FLOP/s
    mem_bandwidth: float  # B/s


GPUS: tuple[Gpu, ...] = (
    Gpu("H100 SXM", 989e12, 3.35e12),
    Gpu("L40S", 362e12, 864e9),
    Gpu("RTX 4090", 165e12, 1008e9),
)


@dataclass(frozen=True)
class ViTDims:
    """One vision transformer: width, MLP width, blocks that must run, tokens per image."""

    name: str
    width: int
    mlp: int
    blocks_run: int
    tokens: int  # prefix (cls/register) + patch tokens
    patch_pixels: int  # in_chans * patch * patch
    patches: int
    params_run: int  # parameters touched by the blocks that run (incl. patch embedding)


@dataclass(frozen=True)
class DecoderDims:
    """One InternLM2-style decoder (packed wqkv, SwiGLU MLP): enough to count FLOPs and bytes."""

    layers: int
    hidden: int
    mlp: int
    q_dim: int  # q heads × head dim
    kv_dim: int  # kv heads × head dim
    vocab: int

    @property
    def layer_params(self) -> int:
        return self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden + 3 * self.hidden * self.mlp

    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers, bf16."""
        return self.layers * 2 * self.kv_dim * BF16_BYTES


@dataclass(frozen=True)
class ModelDims:
    """Everything the cost model needs, derived from tensor shapes."""

    vits: tuple[ViTDims, ...]
    projector: tuple[tuple[int, int], ...]  # (in, out) of each linear
    llm: DecoderDims
    expert: DecoderDims
    flow_params_per_step: int  # action in-proj + time MLP + out-proj
    total_params: int

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Sequence[int]]) -> ModelDims:
        """Read the dimensions off a state dict's key → shape map (official key layout)."""
        shapes = {k: tuple(v) for k, v in shapes.items()}

        def need(key: str) -> tuple[int, ...]:
            if key not in shapes:
                raise KeyError(f"shape list has no {key!r}: not an official-layout GraspVLA state dict")
            return shapes[key]

        vits = []
        for name in sorted({m.group(1) for k in shapes if (m := re.match(r"backbone_2d\.(\w+)\.model\.blocks\.", k))}):
            p = f"backbone_2d.{name}.model."
            blocks = 1 + max(int(re.match(re.escape(p) + r"blocks\.(\d+)\.", k).group(1))
                             for k in shapes if k.startswith(p + "blocks."))
            width = need(p + "patch_embed.proj.weight")[0]
            patch_pixels = _numel(need(p + "patch_embed.proj.weight")[1:])
            patches = need(p + "pos_embed")[1]
            prefix = (shapes.get(p + "cls_token", (0, 0))[1]) + (shapes.get(p + "reg_token", (0, 0))[1])
            blocks_run = blocks - 1  # features of the second-to-last block
            run_keys = [k for k in shapes if k.startswith(p + "patch_embed.")
                        or any(k.startswith(f"{p}blocks.{i}.") for i in range(blocks_run))]
            vits.append(ViTDims(name, width, need(p + "blocks.0.mlp.fc1.weight")[0], blocks_run,
                                prefix + patches, patch_pixels, patches,
                                sum(_numel(shapes[k]) for k in run_keys)))

        projector = tuple((s[1], s[0]) for k, s in sorted(shapes.items())
                          if re.fullmatch(r"projector\.projector\.\d+\.weight", k))
        flow_keys = [k for k in shapes if k.startswith("flow_module.") and not k.startswith("flow_module.proprior_proj")]
        return cls(
            vits=tuple(vits),
            projector=projector,
            llm=_decoder_dims(shapes, "llm.llm."),
            expert=_decoder_dims(shapes, "action_expert."),
            flow_params_per_step=sum(_numel(shapes[k]) for k in flow_keys),
            total_params=sum(_numel(s) for s in shapes.values()),
        )

    @classmethod
    def from_manifest(cls, path: str | Path) -> ModelDims:
        """Dimensions of the model described by a ``{"entries": [[key, shape, dtype], ...]}`` file."""
        entries = json.loads(Path(path).read_text())["entries"]
        return cls.from_shapes({key: shape for key, shape, _ in entries})


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _decoder_dims(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> DecoderDims:
    layer_ids = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"model\.layers\.(\d+)\.", k))}
    if not layer_ids:
        raise KeyError(f"shape list has no {prefix}model.layers.*: not an official-layout GraspVLA state dict")
    lp = f"{prefix}model.layers.0."
    vocab, hidden = shapes[f"{prefix}model.tok_embeddings.weight"]
    qkv = shapes[lp + "attention.wqkv.weight"][0]
    q_dim = shapes[lp + "attention.wo.weight"][1]
    return DecoderDims(layers=len(layer_ids), hidden=hidden, mlp=shapes[lp + "feed_forward.w1.weight"][0],
                       q_dim=q_dim, kv_dim=(qkv - q_dim) // 2, vocab=vocab)


@dataclass(frozen=True)
class Workload:
    """Token counts of one inference (official defaults; the prompt length depends on the object)."""

    views: int = 2
    prompt_tokens: int = 20
    bbox_tokens: int = 8
    proprio_tokens: int = 14  # history + current step, 7 each
    goal_tokens: int = 6
    action_len: int = 4
    proprio_steps: int = 2
    flow_steps: int = 10

    def prefill_tokens(self, image_tokens: int) -> int:
        return 1 + image_tokens + self.prompt_tokens

    def decode_passes(self) -> tuple[int, ...]:
        """Tokens fed per LLM pass after the prefill (see the module docstring)."""
        return ((1,) * (self.bbox_tokens - 1) + (1 + self.proprio_tokens,)
                + (1,) * (self.goal_tokens - 1) + (1, 1))


@dataclass(frozen=True)
class Pass:
    """One kernel-sequence launch: a forward pass whose weights stream through once."""

    flops: float
    bytes: float

    def lower_bound_s(self, gpu: Gpu) -> float:
        return max(self.flops / gpu.bf16_flops, self.bytes / gpu.mem_bandwidth)


@dataclass(frozen=True)
class Stage:
    name: str
    passes: tuple[Pass, ...]
    note: str = ""

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.passes)

    @property
    def bytes(self) -> float:
        return sum(p.bytes for p in self.passes)

    def lower_bound_s(self, gpu: Gpu) -> float:
        return sum(p.lower_bound_s(gpu) for p in self.passes)


def _decoder_pass(d: DecoderDims, new: int, past: int, *, logits_rows: int, causal: bool = True) -> Pass:
    """`new` tokens through every layer, attending to `past` cached tokens plus (causally) themselves."""
    linear = 2 * new * d.layer_params * d.layers
    # keys seen per query: past + (its own position within the new block, causal) or all new
    keys = new * past + (new * (new + 1) // 2 if causal else new * new)
    attention = 2 * 2 * keys * d.q_dim * d.layers  # QK^T and AV
    head = 2 * logits_rows * d.hidden * d.vocab
    weights = (d.layer_params * d.layers + (d.hidden * d.vocab if logits_rows else 0)) * BF16_BYTES
    kv = (past + new) * d.kv_bytes_per_token()  # read past, write new
    return Pass(linear + attention + head, weights + kv)


def stages(dims: ModelDims, work: Workload = Workload()) -> list[Stage]:
    """Per-stage passes of one full inference."""
    out: list[Stage] = []
    image_tokens = 0
    vision = []
    for v in dims.vits:
        n = work.views * v.tokens
        per_block = 2 * n * (4 * v.width * v.width + 2 * v.width * v.mlp) + 2 * 2 * work.views * v.tokens ** 2 * v.width
        embed = 2 * work.views * v.patches * v.patch_pixels * v.width
        vision.append(Pass(per_block * v.blocks_run + embed, v.params_run * BF16_BYTES))
        image_tokens = v.patches * work.views
    out.append(Stage("vision", tuple(vision), "+".join(v.name for v in dims.vits) + f", {work.views} views"))
    out.append(Stage("projector", (Pass(sum(2 * image_tokens * i * o for i, o in dims.projector),
                                        sum(i * o for i, o in dims.projector) * BF16_BYTES),),
                     f"{image_tokens} tokens"))
    s = work.prefill_tokens(image_tokens)
    out.append(Stage("LLM prefill", (_decoder_pass(dims.llm, s, 0, logits_rows=1),), f"{s} tokens"))
    passes, past = [], s
    schedule = work.decode_passes()
    for i, n in enumerate(schedule):
        passes.append(_decoder_pass(dims.llm, n, past, logits_rows=int(i < len(schedule) - 1)))
        past += n
    out.append(Stage("LLM decode", tuple(passes), f"{len(passes)} passes, KV {s}→{past}"))
    suffix = work.proprio_steps + work.action_len
    expert = _decoder_pass(dims.expert, suffix, past, logits_rows=0, causal=False)
    flow = Pass(2 * work.action_len * dims.flow_params_per_step, dims.flow_params_per_step * BF16_BYTES)
    step = Pass(expert.flops + flow.flops, expert.bytes + flow.bytes)
    out.append(Stage("action expert", (step,) * work.flow_steps,
                     f"{work.flow_steps} steps × {suffix} tokens over {past} prefix"))
    return out


@dataclass(frozen=True)
class MemoryEstimate:
    """Device memory of a bf16 deployment (bytes)."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def memory_estimate(dims: ModelDims, work: Workload = Workload()) -> MemoryEstimate:
    """Weights (all parameters, bf16), the LLM KV cache of one request, and the largest transient
    activation set: the widest vision/projector intermediate or the expert's attention, in bf16,
    with one fp32 logits row. A framework adds its own workspace (CUDA context ~0.5 GB)."""
    image_tokens = dims.vits[0].patches * work.views
    s = work.prefill_tokens(image_tokens) + sum(work.decode_passes())
    kv = s * dims.llm.kv_bytes_per_token()
    vit_act = max(work.views * v.tokens * (3 * v.width + v.mlp) for v in dims.vits)
    proj_act = max(image_tokens * (i + o) for i, o in dims.projector)
    prefill_act = work.prefill_tokens(image_tokens) * (dims.llm.hidden * 2 + dims.llm.q_dim + 2 * dims.llm.kv_dim + 2 * dims.llm.mlp)
    activations = max(vit_act, proj_act, prefill_act) * BF16_BYTES + dims.llm.vocab * 4
    weights = dims.total_params * BF16_BYTES
    return MemoryEstimate(weights, kv, activations)


def roofline_markdown(dims: ModelDims, work: Workload = Workload(), gpus: Sequence[Gpu] = GPUS) -> str:
    """A table of per-stage FLOPs, bytes and lower-bound latency per GPU, with the official numbers."""
    st = stages(dims, work)
    head = "| stage | what | GFLOP | GB moved | " + " | ".join(f"{g.name} ms" for g in gpus) + " |"
    rows = [head, "|" + " --- |" * (4 + len(gpus))]
    for s in st:
        rows.append(f"| {s.name} | {s.note} | {s.flops / 1e9:,.1f} | {s.bytes / 1e9:,.2f} | "
                    + " | ".join(f"{s.lower_bound_s(g) * 1e3:.2f}" for g in gpus) + " |")
    tf, tb = sum(s.flops for s in st), sum(s.bytes for s in st)
    rows.append(f"| **total** | | {tf / 1e9:,.1f} | {tb / 1e9:,.2f} | "
                + " | ".join(f"**{sum(s.lower_bound_s(g) for s in st) * 1e3:.1f}**" for g in gpus) + " |")
    l40s = next((g for g in gpus if g.name == "L40S"), None)
    tail = ""
    if l40s is not None:
        bound = sum(s.lower_bound_s(l40s) for s in st) * 1e3
        tail = (f"\nOfficial (GraspVLA README, L40S, bf16): {OFFICIAL_L40S_COMPILED_MS:.0f} ms with torch.compile "
                f"({OFFICIAL_L40S_COMPILED_MS / bound:.1f}× the L40S bound), {OFFICIAL_L40S_EAGER_MS:.0f} ms eager "
                f"({OFFICIAL_L40S_EAGER_MS / bound:.1f}×).\n")
    return "\n".join(rows) + "\n" + tail


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("manifest", help="a [key, shape, dtype] manifest, e.g. the full-size official one")
    parser.add_argument("--prompt-tokens", type=int, default=Workload.prompt_tokens)
    args = parser.parse_args(argv)
    dims = ModelDims.from_manifest(args.manifest)
    work = Workload(prompt_tokens=args.prompt_tokens)
    print(roofline_markdown(dims, work))
    mem = memory_estimate(dims, work)
    print(f"bf16 memory: weights {mem.weights / 2**30:.2f} GiB + KV {mem.kv_cache / 2**20:.0f} MiB + "
          f"activations {mem.activations / 2**20:.0f} MiB = {mem.total / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

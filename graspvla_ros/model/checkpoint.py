"""Strict, memory-mapped loading of the official ``model.safetensors`` into the module tree."""
from __future__ import annotations

from pathlib import Path

import torch

from graspvla_ros.model.config import VIT_MEAN_STD
from graspvla_ros.model.modeling import GraspVLA, rotary_inv_freq


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors are not exactly the model's (names or shapes)."""


def mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], limit: int = 5) -> list[str]:
    """Human-readable differences between two {name: shape} maps (first `limit` of each kind)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {list(found[k])}, model {list(expected[k])}"
              for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return problems


def restore_buffers(model: GraspVLA, device: torch.device | str) -> None:
    """Recompute the non-persistent buffers (rotary frequencies, pixel mean/std), which a model
    built on the meta device does not hold."""
    for lm in (model.llm.llm, model.action_expert):
        lm.inv_freq = rotary_inv_freq(lm.dims.head_dim, lm.dims.rope_theta).to(device)
    for name in ("dino", "siglip"):
        mean, std = VIT_MEAN_STD[name]
        vit = getattr(model.backbone_2d, name)
        vit.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
        vit.std = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)


def load_weights(model: GraspVLA, path: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> GraspVLA:
    """Fill `model` (typically built on the meta device) from `path`, tensor by tensor from the
    memory-mapped file, cast to `dtype` on `device`. Raises CheckpointMismatchError naming the
    first differences when names or shapes differ in any way."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        problems = mismatches(expected, found)
        if problems:
            raise CheckpointMismatchError(f"{path} does not match the GraspVLA model ({len(expected)} tensors): "
                                          + "; ".join(problems))
        for k in expected:
            t = f.get_tensor(k)
            state[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    model.load_state_dict(state, strict=True, assign=True)
    restore_buffers(model, device)
    return model


def save_weights(model: GraspVLA, path: str | Path) -> None:
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))

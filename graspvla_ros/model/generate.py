"""Backend-agnostic progressive generation of one GraspVLA action chunk.

A backend implements `Components` (vision, LLM prefill/decode with an opaque KV cache, action
flow); everything else — robot-value tokens, the greedy schedule, un-normalisation and the
waypoint interpolation — lives here once, with the official numerics:

* greedy argmax over ALL logits (nothing restricts a slot to robot ids, EOS is not checked);
* schedule: prefill [BOS, image, prompt] → 8 bbox tokens → the 14 proprio tokens (history row,
  current row) are fed → 6 goal tokens → the EOS slot's token → that token is fed to the cache →
  the action expert attends to the whole cache;
* robot values: min/max-normalised to [−1, 1] in the inputs' dtype (float64 for the released
  preprocessor.npz), ``np.digitize`` (right=False) over linspace(−1, 1, 256), clipped to 1…256,
  id = vocab_size − bin; decoded at the bin centre;
* action: (raw + 1) / 2 in float32, then the min/max range in the npz dtype; gripper < 0.4 → −1
  (close), > 0.6 → +1 (open), else 0; each action split into 2 sub-steps (translation halved,
  rotation halved about its axis, gripper on the second).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from graspvla_ros.model.config import ModelConfig, Normalizer

GRIPPER_CLOSE_BELOW = 0.4
GRIPPER_OPEN_ABOVE = 0.6
SUBSTEPS = 2
_EPS = np.finfo(np.float64).eps


class Components(Protocol):
    """What a backend provides. Images are float32 (1, 3, S, S) RGB in [0, 1]; ids int64 (N,);
    logits come back as float32 numpy (V,) of the last position; caches are opaque."""

    def encode_images(self, front: np.ndarray, side: np.ndarray) -> Any: ...

    def prefill(self, input_ids: np.ndarray, image_embeds: Any) -> tuple[np.ndarray, Any]: ...

    def decode(self, input_ids: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]: ...

    def flow(self, noise: np.ndarray, proprio: np.ndarray, cache: Any) -> np.ndarray:
        """noise (1, A, 7) float32, proprio (1, 2, 7) float32 normalised → (1, A, 7) normalised action."""
        ...


class RobotCodec:
    """Robot values ↔ token ids (the official "ratio_min_max_uniform" robot tokenizer)."""

    def __init__(self, vocab_size: int, normalizer: Normalizer, bins: int = 256, image_size: int = 224):
        self.vocab_size, self.n_bins, self.image_size = vocab_size, bins, image_size
        self.bins = np.linspace(-1.0, 1.0, bins)
        self.norm = normalizer

    @property
    def id_range(self) -> tuple[int, int]:
        """Inclusive range of ids the codec emits."""
        return self.vocab_size - self.n_bins, self.vocab_size - 1

    def tokenize(self, x: np.ndarray) -> np.ndarray:
        return self.vocab_size - np.clip(np.digitize(np.asarray(x).ravel(), self.bins), 1, self.n_bins)

    def detokenize(self, ids) -> np.ndarray:
        y = self.vocab_size - np.asarray(ids)
        last = self.n_bins - 1
        return (self.bins[np.clip(y - 1, 0, last)] + self.bins[np.clip(y, 0, last)]) / 2

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        return (proprio - self.norm.min_proprio) / (self.norm.max_proprio - self.norm.min_proprio) * 2 - 1

    def proprio_tokens(self, rows: np.ndarray) -> np.ndarray:
        return self.tokenize(self.normalize_proprio(rows))

    def goal(self, ids) -> np.ndarray:
        """Goal tokens → (xyz, rpy) in the proprio frame (min/max of the first 6 proprio dims)."""
        mn, mx = self.norm.min_proprio[:-1], self.norm.max_proprio[:-1]
        return (self.detokenize(ids) + 1) / 2 * (mx - mn) + mn

    def bbox(self, ids) -> np.ndarray:
        """Bbox tokens → (views, 4) x1 y1 x2 y2 in pixels of the model's square input."""
        return (self.detokenize(ids).reshape(-1, 4) + 1) / 2 * self.image_size

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        return (action + 1) / 2 * (self.norm.max_action - self.norm.min_action) + self.norm.min_action


def official_proprio_rows(proprio) -> np.ndarray:
    """The (2, 7) [history, current] rows the official server feeds: rows [−4] and [−1] of the
    client's history (or the first row when fewer than 4 are given), gripper mapped from
    −1/+1 (closed/open) to 0/1."""
    p = np.asarray(proprio)
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] != 7:
        raise ValueError(f"proprio must be a (N ≥ 2, 7) history of xyz, rpy, gripper rows, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("proprio contains non-finite values")
    rows = np.array([p[-min(4, len(p))], p[-1]])
    rows[:, -1] = (rows[:, -1] + 1) / 2
    return rows


def quantize_gripper(action: np.ndarray) -> np.ndarray:
    g = action[:, -1]
    g = np.where(g < GRIPPER_CLOSE_BELOW, -1, np.where(g > GRIPPER_OPEN_ABOVE, 1, 0))
    return np.concatenate([action[:, :-1], g[:, None]], axis=-1)


def _euler_to_quat(r: float, p: float, y: float) -> np.ndarray:
    """Static-frame x-y-z Euler angles ('sxyz') → quaternion w, x, y, z."""
    cr, sr, cp, sp, cy, sy = (math.cos(r / 2), math.sin(r / 2), math.cos(p / 2), math.sin(p / 2),
                              math.cos(y / 2), math.sin(y / 2))
    return np.array([cp * cr * cy + sp * sr * sy, cp * sr * cy - sp * cr * sy,
                     cp * sr * sy + sp * cr * cy, cp * cr * sy - sp * sr * cy])


def _quat_to_axis_angle(q: np.ndarray) -> tuple[np.ndarray, float]:
    """Axis and angle in [0, 2π) (the angle follows the sign of w, not the shortest rotation)."""
    n2 = float(q @ q)
    if n2 < _EPS ** 2:
        return np.array([1.0, 0.0, 0.0]), 0.0
    w, x, y, z = q / math.sqrt(n2) if n2 != 1 else q
    v2 = x * x + y * y + z * z
    if v2 < (3 * _EPS) ** 2:
        return np.array([1.0, 0.0, 0.0]), 0.0
    return np.array([x, y, z]) / math.sqrt(v2), 2 * math.acos(max(min(w, 1.0), -1.0))


def _axis_angle_to_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / math.sqrt(float(axis @ axis))
    c, s = math.cos(angle), math.sin(angle)
    t = 1 - c
    return np.array([[x * x * t + c, x * y * t - z * s, x * z * t + y * s],
                     [x * y * t + z * s, y * y * t + c, y * z * t - x * s],
                     [x * z * t - y * s, y * z * t + x * s, z * z * t + c]])


def _matrix_to_euler(m: np.ndarray) -> tuple[float, float, float]:
    """Rotation matrix → 'sxyz' Euler angles (gimbal lock: yaw = 0)."""
    cy = math.sqrt(m[0, 0] ** 2 + m[1, 0] ** 2)
    if cy > 4 * _EPS:
        return math.atan2(m[2, 1], m[2, 2]), math.atan2(-m[2, 0], cy), math.atan2(m[1, 0], m[0, 0])
    return math.atan2(-m[1, 2], m[1, 1]), math.atan2(-m[2, 0], cy), 0.0


def split_actions(actions: np.ndarray, n: int = SUBSTEPS) -> np.ndarray:
    """(A, 7) delta actions → (A·n, 7): translation / n each, the rotation's angle / n about its
    axis each, the gripper command on the last sub-step only (0 = keep before it)."""
    out = []
    for a in actions:
        axis, angle = _quat_to_axis_angle(_euler_to_quat(*a[3:6]))
        rpy = _matrix_to_euler(_axis_angle_to_matrix(axis, angle / n))
        for i in range(n):
            out.append([*(a[:3] / n), *rpy, a[6] if i == n - 1 else 0.0])
    return np.array(out, dtype=np.float64)


@dataclass
class Generation:
    token_ids: list[int]          # every generated token: bbox, goal, the EOS slot
    bbox_ids: list[int]
    goal_ids: list[int]
    eos_id: int
    action_normalized: np.ndarray  # (A, 7) float32, expert output
    step_logits: list[np.ndarray] | None = None  # (V,) per generated token, when asked for


def generate(components: Components, cfg: ModelConfig, codec: RobotCodec, prompt_ids: list[int],
             front: np.ndarray, side: np.ndarray, proprio_rows: np.ndarray, noise: np.ndarray,
             keep_logits: bool = False) -> Generation:
    """One chunk. front/side float32 (1, 3, S, S) in [0, 1]; proprio_rows (2, 7) as
    `official_proprio_rows` returns; noise (1, A, 7) float32."""
    hist_ids = codec.proprio_tokens(proprio_rows[:-1])
    cur_ids = codec.proprio_tokens(proprio_rows[-1])
    # (ids fed, tokens generated) per stage, in order.
    stages = [([], cfg.bbox_tokens), ([*hist_ids, *cur_ids], cfg.goal_dim), ([], 1)]
    cache, pending = None, [int(i) for i in prompt_ids]
    image_embeds = components.encode_images(front, side)
    generated, logits_seen = [], []
    for fed, count in stages:
        pending += [int(i) for i in fed]
        for _ in range(count):
            ids = np.asarray(pending, dtype=np.int64)
            if cache is None:
                logits, cache = components.prefill(ids, image_embeds)
            else:
                logits, cache = components.decode(ids, cache)
            token = int(np.argmax(logits))
            if keep_logits:
                logits_seen.append(np.array(logits, dtype=np.float32))
            generated.append(token)
            pending = [token]
    _, cache = components.decode(np.asarray(pending, dtype=np.int64), cache)  # the EOS slot joins the prefix
    proprio = np.asarray(codec.normalize_proprio(proprio_rows), dtype=np.float32)[None]
    action = components.flow(np.asarray(noise, dtype=np.float32), proprio, cache)
    nb = cfg.bbox_tokens
    return Generation(token_ids=generated, bbox_ids=generated[:nb], goal_ids=generated[nb:nb + cfg.goal_dim],
                      eos_id=generated[-1], action_normalized=np.asarray(action, dtype=np.float32)[0],
                      step_logits=logits_seen if keep_logits else None)

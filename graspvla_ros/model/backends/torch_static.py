"""The torch backend's fast path: a static KV cache, optionally CUDA graphs and torch.compile.

``load(..., backend="torch", static_cache=True [, cuda_graphs=True] [, compile=True])``:

* static_cache: decode and flow run over preallocated cache buffers (`graspvla_ros.model.static_cache`)
  with fixed shapes per capacity; vision and the prefill run as in the eager backend.
* cuda_graphs (CUDA only; implies static_cache): the vision encoder, each decode step shape (T = 1
  and the 15-token proprio feed) and the whole 10-step flow are captured once per capacity as
  `torch.cuda.CUDAGraph` and replayed; inputs are copied into static buffers first. Capture
  happens on the first call of each shape (that call is slow: warm-up + capture).
* compile (with static_cache): torch.compile (default mode, static shapes) of the one-token
  decode step and of one denoise step; the first call of each compiles (tens of seconds for the
  full model). The prefill, vision and the 15-token step stay eager.

Not re-entrant: one generation at a time per components object (buffers and graphs are shared).
"""
from __future__ import annotations

import numpy as np
import torch

from graspvla_ros.model.backends.torch_backend import TorchComponents
from graspvla_ros.model.components import insert_image_embeddings
from graspvla_ros.model.modeling import GraspVLA
from graspvla_ros.model.static_cache import (StaticCache, StaticDecode, StaticExpertDenoise, capacity_for, decode_into,
                                             euler_flow, new_buffers)


class CapturedCall:
    """`fn(*args)` captured as a CUDA graph. `args` are the static input tensors (the caller
    writes new values into them before `replay`); the outputs live in the graph's memory and are
    overwritten by the next replay. Warm-up runs `fn` on a side stream first (lazy initialisation,
    compilation, cuBLAS workspaces), so `fn` must be idempotent for fixed inputs."""

    def __init__(self, fn, args: tuple, warmup: int = 2):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of the process (ROS executors) may use CUDA meanwhile
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = fn(*args)

    def replay(self):
        self.graph.replay()
        return self.out


class StaticTorchComponents(TorchComponents):
    """`generate.Components` with a `StaticCache` as the cache (see the module docstring)."""

    graph_runner = CapturedCall  # (fn, static inputs) → object whose replay() returns the outputs

    def __init__(self, model: GraspVLA, compile: bool = False, cuda_graphs: bool = False):
        super().__init__(model, compile=False)
        if cuda_graphs and self.device.type != "cuda" and self.graph_runner is CapturedCall:
            raise ValueError(f"cuda_graphs needs a CUDA device, the model is on {self.device}")
        self.compiled, self.cuda_graphs = compile, cuda_graphs
        self.decode_step = StaticDecode(model)
        self.denoise_step = StaticExpertDenoise(model)
        self.decode_one = torch.compile(self.decode_step, dynamic=False) if compile else self.decode_step
        self.denoise = torch.compile(self.denoise_step, dynamic=False) if compile else self.denoise_step
        self.steps = model.cfg.flow_steps
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # capacity → (k, v)
        self.graphs: dict[tuple, tuple[tuple, object]] = {}             # key → (static inputs, graph)

    # -- buffers -----------------------------------------------------------------------------

    def _buffers(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        if capacity not in self.buffers:
            self.buffers[capacity] = new_buffers(self.model.llm.llm, capacity, self.dtype, self.device)
        return self.buffers[capacity]

    def _grow(self, cache: StaticCache, n_new: int) -> StaticCache:
        """A cache of larger capacity holding `cache`'s valid slots (a generation longer than planned)."""
        k, v = self._buffers(capacity_for(cache.length + n_new))
        k[:, :, :, :cache.length].copy_(cache.k[:, :, :, :cache.length])
        v[:, :, :, :cache.length].copy_(cache.v[:, :, :, :cache.length])
        return StaticCache(k, v, cache.length)

    def _graphed(self, key: tuple, fn, inputs: tuple[torch.Tensor, ...], values: tuple) -> torch.Tensor:
        """Copy `values` into the static inputs of graph `key` (captured on first use from `inputs`,
        which become its static inputs) and replay it."""
        if key not in self.graphs:
            for dst, src in zip(inputs, values):
                if src is not None:
                    dst.copy_(src)
            self.graphs[key] = (inputs, self.graph_runner(fn, inputs))
        static, graph = self.graphs[key]
        for dst, src in zip(static, values):
            if src is not None:
                dst.copy_(src)
        return graph.replay()

    # -- Components --------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, front: np.ndarray, side: np.ndarray) -> torch.Tensor:
        if not self.cuda_graphs:
            return self.vision(self._tensor(front), self._tensor(side))
        f, s = self._tensor(front), self._tensor(side)
        key = ("vision", tuple(f.shape), tuple(s.shape))
        inputs = self.graphs[key][0] if key in self.graphs else (torch.empty_like(f), torch.empty_like(s))
        return self._graphed(key, self.vision, inputs, (f, s)).clone()

    @torch.inference_mode()
    def prefill(self, input_ids: np.ndarray, image_embeds: torch.Tensor):
        embeds = insert_image_embeddings(self.embed(self._tensor(input_ids)[None]), image_embeds)
        n = embeds.shape[1]
        logits, k_new, v_new = self.prefill_graph(embeds, self._positions(0, n))
        k, v = self._buffers(capacity_for(n))
        k[:, :, :, :n].copy_(k_new)
        v[:, :, :, :n].copy_(v_new)
        return logits[0].float().cpu().numpy(), StaticCache(k, v, n)

    @torch.inference_mode()
    def decode(self, input_ids: np.ndarray, cache: StaticCache):
        n = len(input_ids)
        if cache.length + n > cache.capacity:
            cache = self._grow(cache, n)
        step = self.decode_one if n == 1 else self.decode_step
        ids, positions = self._tensor(input_ids)[None], self._positions(cache.length, n)

        def run(ids_, positions_, k_, v_):
            return decode_into(step, ids_, positions_, k_, v_)

        if self.cuda_graphs:
            key = ("decode", cache.capacity, n)
            inputs = self.graphs[key][0] if key in self.graphs else (torch.empty_like(ids), torch.empty_like(positions),
                                                                        cache.k, cache.v)
            logits = self._graphed(key, run, inputs, (ids, positions, None, None))
        else:
            logits = run(ids, positions, cache.k, cache.v)
        return logits[0].float().cpu().numpy(), StaticCache(cache.k, cache.v, cache.length + n)

    @torch.inference_mode()
    def flow(self, noise: np.ndarray, proprio: np.ndarray, cache: StaticCache) -> np.ndarray:
        x, p = self._tensor(noise), self._tensor(proprio)
        length = torch.tensor(cache.length, dtype=torch.int64, device=self.device)
        if not self.cuda_graphs:
            return euler_flow(self.denoise, x, p, cache.k, cache.v, length, self.steps).float().cpu().numpy()
        key = ("flow", cache.capacity, tuple(x.shape), tuple(p.shape))
        inputs = self.graphs[key][0] if key in self.graphs else (torch.empty_like(x), torch.empty_like(p), cache.k,
                                                                    cache.v, torch.empty_like(length))

        def run(x_, p_, k_, v_, n_):
            return euler_flow(self.denoise, x_, p_, k_, v_, n_, self.steps)

        return self._graphed(key, run, inputs, (x, p, None, None, length)).float().cpu().numpy()

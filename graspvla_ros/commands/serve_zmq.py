"""``graspvla serve-zmq``: this project's backends behind the official GraspVLA server protocol.

    graspvla serve-zmq --checkpoint DIR [--llm-dir D] [--host 127.0.0.1] [--port 8000]
                       [--backend torch|onnxruntime|tensorrt] [--device cpu|cuda]
                       [--dtype float32|bfloat16] [--seed 0]
    graspvla serve-zmq --tiny      # tiny random weights: try the protocol without the checkpoint

The official clients connect unchanged (ZeroMQ REQ, pickled dicts); requests are decoded
without running anything a peer names (`graspvla_ros.policy.official_protocol`). It binds to
loopback unless --host says otherwise, and only after a warm-up inference; SIGINT/SIGTERM stop
it after the request in progress. Protocol: docs/interfaces.md, "ZeroMQ server (official protocol)".
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

DTYPES = ("float32", "bfloat16")


def model_options(backend: str, device: str | None, dtype: str | None) -> dict:
    """The command line's model options → keyword options of `graspvla_ros.model.load` (through
    `GraspVLABackend(model_options=...)`). Unset options keep the backend's defaults (torch: CUDA
    when available, bf16 there, fp32 on CPU)."""
    options: dict = {}
    if device is not None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device cuda: CUDA is not available here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
        options["device"] = device
    if dtype is not None:
        import torch

        if backend == "onnxruntime" and dtype != "float32":
            raise ValueError(f"--dtype {dtype}: the onnxruntime backend runs the float32 export")
        options["dtype"] = getattr(torch, dtype)
    return options


def _serve(args: argparse.Namespace) -> int:
    from graspvla_ros.policy.backends import create
    from graspvla_ros.policy.official_protocol import Limits
    from graspvla_ros.policy.zmq_server import ZmqServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True)
    log = logging.getLogger("graspvla.serve_zmq")
    if args.tiny and args.llm_dir:
        raise ValueError("--llm-dir goes with --checkpoint (--tiny makes its own)")
    if args.max_message_mb <= 0:
        raise ValueError("--max-message-mb must be positive")
    options = model_options(args.backend, args.device, args.dtype)
    what = "tiny random weights" if args.tiny else args.checkpoint
    log.info(f"loading {what} on the {args.backend} backend"
             + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""))
    backend = create("graspvla", checkpoint=args.checkpoint or "", llm_dir=args.llm_dir or "", runtime=args.backend,
                     tiny=args.tiny, onnx_dir=args.onnx_dir or "", seed=args.seed, model_options=options)
    server = ZmqServer(backend, args.host, args.port, args.seed,
                       Limits(max_message_bytes=int(args.max_message_mb * 2 ** 20)))
    server.warm_up()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda num, frame: stop.set())
    server.bind()
    log.info(f"request n runs with seed {args.seed} + n; stop with Ctrl-C")
    try:
        server.serve(stop)
    finally:
        server.close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`graspvla serve-zmq` (graspvla_ros.cli)."""
    p = sub.add_parser("serve-zmq", help="serve the official GraspVLA clients (ZeroMQ, safe request decoding)",
                       description=__doc__.split("\n\n")[0])
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official checkpoint directory (config.json, preprocessor.npz, "
                         "checkpoint/model.safetensors)")
    weights.add_argument("--tiny", action="store_true", help="tiny random weights generated at start (protocol "
                         "tests without the checkpoint; the actions mean nothing)")
    p.add_argument("--llm-dir", help="the LLM's Hugging Face directory (config.json, tokenizer.model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is "
                   "reachable from the network and says so; '*' = every interface, as the official server)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000, the official clients'; 0 = any "
                   "free port, printed)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch",
                   help="inference runtime (default torch)")
    p.add_argument("--onnx-dir", help="onnxruntime/tensorrt: a `graspvla export` directory of this checkpoint")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=DTYPES, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--seed", type=int, default=0, help="request n runs with flow-noise seed SEED + n (and --tiny's "
                   "weights use SEED)")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="largest request accepted, MiB (default 64)")
    p.set_defaults(run=_serve)

"""The model's subcommands of the ``graspvla`` command (`graspvla_ros.cli`).

``graspvla export --checkpoint DIR [--llm-dir D] --out models/onnx/ [--opset 17] [--graphs ...]``
writes the ONNX graphs, their reference outputs and ``manifest.json`` (see
`graspvla_ros.model.export`).
"""
from __future__ import annotations

import argparse

from graspvla_ros.model.exported import DEFAULT_OPSET, GRAPHS


def _export(args: argparse.Namespace) -> int:
    from graspvla_ros.model.export import export

    manifest = export(args.checkpoint, args.out, llm_dir=args.llm_dir, opset=args.opset, graphs=args.graphs)
    for name, g in manifest.graphs.items():
        extra = f" + {g.external_data}" if g.external_data else ""
        print(f"{name}: {args.out}/{g.file}{extra}")
    print(f"manifest: {args.out}/manifest.json (opset {manifest.opset}, {manifest.dtype})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The model's subcommands of `graspvla` (graspvla_ros.cli)."""
    ex = sub.add_parser("export", help="export the inference graphs of a checkpoint to ONNX")
    ex.add_argument("--checkpoint", required=True, help="official checkpoint directory (config.json, "
                    "preprocessor.npz, checkpoint/model.safetensors)")
    ex.add_argument("--llm-dir", default=None, help="Hugging Face layout directory with the LLM's config.json "
                    "(default: built-in internlm2-1_8b dimensions)")
    ex.add_argument("--out", required=True, help="output directory, e.g. models/onnx/")
    ex.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    ex.add_argument("--graphs", nargs="+", choices=GRAPHS, default=list(GRAPHS), help="graphs to export (default: all)")
    ex.set_defaults(run=_export)



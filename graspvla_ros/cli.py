"""The ``graspvla`` command: one entry point, subcommands contributed by the modules of
`graspvla_ros.commands`.

Each module in COMMANDS has `add_commands(subparsers)`, which adds its subcommands with
`set_defaults(run=handler)`; a handler takes the parsed arguments and returns the exit code.
Modules import their heavy dependencies (torch, rclpy) inside the handlers, so `graspvla
--help` and the light commands start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = (
    "graspvla_ros.commands.model",
    "graspvla_ros.commands.calibrate",
    "graspvla_ros.commands.bags",
    "graspvla_ros.commands.robot",
    "graspvla_ros.commands.serve_zmq",
    "graspvla_ros.commands.doctor",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graspvla", description="GraspVLA on a Franka arm: tools and commands")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:  # ConfigError / CheckpointMismatchError are ValueErrors
        print(f"graspvla {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

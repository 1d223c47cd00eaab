"""What every node's `main` shares: init, spin, and a clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import logging
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 2) -> int:
    """Run one node until shutdown; returns the process exit code.

    Python `logging` of the core is routed to stderr so its warnings (rejections, reflexes)
    show next to the node's own log.
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    executor = MultiThreadedExecutor(num_threads=threads)
    try:
        node = make_node()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def declare(node: Node, params: dict) -> dict:
    """Declare parameters with defaults (nested dicts become dotted names) and return their values."""
    values = {}
    for name, default in _flatten(params).items():
        values[name] = node.declare_parameter(name, default).value
    return values


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

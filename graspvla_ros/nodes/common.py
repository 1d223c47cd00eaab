"""What every node's `main` shares: init, spin, and a clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

RCLError = _rclpy.RCLError


def run(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """Run one node until shutdown; returns the process exit code.

    Single-threaded executors only: rclpy's MultiThreadedExecutor busy-spins at 100% CPU
    while a callback of a busy group is pending (seen here with a blocking service). A node
    that has blocking services puts them on helper nodes listed in its `side_nodes`
    attribute; each gets its own executor thread. Python `logging` of the core goes to
    stderr next to the node's log.
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    executors: list[SingleThreadedExecutor] = []
    threads: list[threading.Thread] = []
    try:
        node = make_node()
        for side in getattr(node, "side_nodes", []):
            side_executor = SingleThreadedExecutor()
            side_executor.add_node(side)
            executors.append(side_executor)
            threads.append(threading.Thread(target=_spin_quietly, args=(side_executor,), daemon=True))
            threads[-1].start()
        executor = SingleThreadedExecutor()
        executors.append(executor)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for executor in executors:
            executor.shutdown()
        for thread in threads:
            thread.join(timeout=5.0)
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            for side in getattr(node, "side_nodes", []):
                side.destroy_node()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin_quietly(executor: SingleThreadedExecutor) -> None:
    """Spin a side executor until shutdown; on SIGINT/SIGTERM rclpy invalidates the context
    under it, which surfaces as an RCLError from the wait set rather than a clean return."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if executor.context.ok():
            raise



def periodic(node: Node, period: float, step: Callable[[], None], stop: threading.Event) -> None:
    """Call `step` every `period` s on the calling thread until `stop` is set or the node's
    context shuts down. SIGINT/SIGTERM invalidate the context before the node is closed, so
    a publish may fail with RCLError then: that ends the loop quietly. A slow step is not
    made up for with a burst."""
    next_tick = time.monotonic()
    while not stop.is_set() and node.context.ok():
        try:
            step()
        except RCLError:
            if node.context.ok():
                raise
            return
        next_tick = max(next_tick + period, time.monotonic() - period)
        stop.wait(max(0.0, next_tick - time.monotonic()))

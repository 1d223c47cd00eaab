"""What every node's `main` shares: init, spin, and a clean shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import threading
import time
import traceback
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
    except RCLError:
        # SIGTERM shuts the context down under a spin that is building its wait set: a clean
        # exit, not a failure (seen in CI); with the context still valid it is a real error
        if rclpy.ok():
            raise
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



def log_condition(logger, bad: bool, text: str) -> None:
    """A condition starting (`bad`: a warning) or ending (info). rclpy refuses a second severity
    from one call site (ValueError: "Logger severity cannot be changed between calls"), so
    `(warning if bad else info)(text)` raises the second time: each severity has its line here."""
    if bad:
        logger.warning(text)
    else:
        logger.info(text)


def periodic(node: Node, period: float, step: Callable[[], None], stop: threading.Event) -> None:
    """Call `step` every `period` s on the calling thread until `stop` is set or the node's
    context shuts down. SIGINT/SIGTERM invalidate the context before the node is closed, so
    a publish may fail with RCLError then: that ends the loop quietly. A step that raises
    otherwise is logged (each distinct error once) and the loop goes on: the thread is the
    node's heartbeat (sim_world's /clock), and every node on that clock would freeze without
    it. A slow step is not made up for with a burst."""
    next_tick = time.monotonic()
    said: set[str] = set()
    while not stop.is_set() and node.context.ok():
        try:
            step()
        except RCLError:
            if node.context.ok():
                raise
            return
        except Exception as err:   # noqa: BLE001  logged, and the heartbeat goes on
            if repr(err) not in said:
                said.add(repr(err))
                node.get_logger().error(f"{getattr(step, '__name__', step)} failed (the loop goes on): "
                                        + "".join(traceback.format_exception(err)).rstrip())
        next_tick = max(next_tick + period, time.monotonic() - period)
        stop.wait(max(0.0, next_tick - time.monotonic()))


def call_trigger(client, timeout: float, discovery: float = 5.0, unseen_timeout: float | None = None):
    """Call the std_srvs/Trigger service of `client` (its node spun elsewhere); the response,
    or None if none came in time: ≤ `timeout` s, or ≤ `unseen_timeout` s (default `timeout`)
    while the ROS graph never showed the service.

    rmw_fastrtps can leave a participant out of its graph cache (its discovery-info reader
    keeps one sample: a late joiner matching many participants at once may keep only some,
    ros2/rmw_fastrtps#792), and `wait_for_service` then never sees a service that DDS itself
    has matched. So the request goes out as soon as the service is seen, or after `discovery`
    s regardless, and again every `discovery` s while the graph still does not show it (every
    service called this way is a Trigger that may safely run twice); only the answer counts."""
    from std_srvs.srv import Trigger

    start = time.monotonic()
    unseen_timeout = timeout if unseen_timeout is None else unseen_timeout
    future, sent, seen = None, 0.0, False
    while future is None or not future.done():
        now = time.monotonic()
        seen = seen or client.service_is_ready()
        if now - start > (timeout if seen else unseen_timeout):
            if future is not None:
                client.remove_pending_request(future)
            return None
        if (future is None and (seen or now - start >= discovery)) or \
                (future is not None and not seen and now - sent >= discovery):
            if future is not None:
                client.remove_pending_request(future)
            future, sent = client.call_async(Trigger.Request()), now
        time.sleep(0.02)
    return future.result()

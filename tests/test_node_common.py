"""nodes.common: a periodic heartbeat outlives a failing step; a condition logs at two severities."""
import threading

import pytest
import rclpy

from conftest import wait_for
from graspvla_ros.nodes.common import log_condition, periodic


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    n = rclpy.create_node("test_node_common", context=context)
    yield n
    n.destroy_node()
    rclpy.shutdown(context=context)


def test_a_condition_starting_and_ending_logs_warning_then_info_from_one_place(node):
    """rclpy raises ValueError when one call site logs at a second severity: sim_world's pace
    report did that and killed its /clock thread, freezing every node on sim time."""
    for bad in (True, False, True, False):
        log_condition(node.get_logger(), bad, f"condition {'on' if bad else 'off'}")


def test_a_step_that_raises_does_not_end_the_heartbeat(node):
    calls, stop = [], threading.Event()

    def step():
        calls.append(1)
        if len(calls) % 2:
            raise ValueError("a bad step")

    thread = threading.Thread(target=periodic, args=(node, 0.001, step, stop), daemon=True)
    thread.start()
    wait_for(lambda: len(calls) >= 20, 30, "20 steps, every other one raising")
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()

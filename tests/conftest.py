"""Session-wide guards shared by every test module."""
from __future__ import annotations

import itertools
import os
import time

import pytest

# rclpy must be loaded before pyrealsense2: with librealsense loaded first, a process that
# created a ROS node segfaults at exit (static destructors run in the wrong order), which
# turns a green pytest run into exit code 139. Node processes import rclpy first anyway.
import rclpy  # noqa: F401,E402  isort:skip
# Triton (imported by torchvision → torch._dynamo) must be loaded before Mesa's llvmpipe: both
# carry LLVM, and importing triton into a process that already rendered with EGL segfaults
# (the calibration tests render in this process before the model tests import torchvision).
import torchvision  # noqa: F401,E402  isort:skip


def _network_interfaces() -> list[str]:
    # /proc/net/dev follows the caller's network namespace (unlike /sys/class/net).
    with open("/proc/net/dev") as f:
        return [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]


# Tests marked `pypi` (tests/test_robot_install.py) ask PyPI's resolver, which the loopback-only
# namespace cannot reach, and start no ROS/DDS process (pip only): they are the one exception and
# run outside it, alone (`-m pypi`). `make test` runs them first, then everything else inside
# scripts/isolated, where they are deselected.
PYPI = "pypi"
_outside_namespace_key = pytest.StashKey[bool]()
_left_to_host_key = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run where DDS discovery or franky-sim could reach a real network."""
    others = [i for i in _network_interfaces() if i != "lo"]
    config.stash[_outside_namespace_key] = bool(others)
    if others and config.option.markexpr != PYPI:
        raise pytest.UsageError(
            "tests must run in a loopback-only network namespace (found interfaces "
            f"{others}); use `make test` or `scripts/isolated .venv/bin/python -m pytest`. Only the "
            f"tests marked `{PYPI}` run outside it, on their own: "
            f"`.venv/bin/python -m pytest -m {PYPI} tests/test_robot_install.py`"
        )
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Inside the namespace PyPI is out of reach: leave the `pypi` tests to the run outside it,
    unless they were asked for (`-m pypi`: they then fail, saying that pip cannot reach PyPI)."""
    config.stash[_left_to_host_key] = 0
    if config.stash[_outside_namespace_key] or config.option.markexpr == PYPI:
        return
    left = [item for item in items if item.get_closest_marker(PYPI)]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [item for item in items if not item.get_closest_marker(PYPI)]
        config.stash[_left_to_host_key] = len(left)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    left = config.stash.get(_left_to_host_key, 0)
    if left:
        terminalreporter.write_line(
            f"{left} tests marked `{PYPI}` deselected: they need PyPI, out of reach in this namespace; "
            f"`make test` runs them first, outside it (`.venv/bin/python -m pytest -m {PYPI} "
            "tests/test_robot_install.py`)")


# Each test module talks in a ROS domain of its own (1–96; 97 is test_policy_cli's empty one):
# a node that outlives its module (a slow teardown on a loaded machine) cannot answer the next
# module's tests. The module's graphs, nodes and CLI subprocesses inherit it from the environment.
_domains = itertools.count()
_BASE_DOMAIN = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)


@pytest.fixture(scope="module", autouse=True)
def ros_domain():
    before = os.environ.get("ROS_DOMAIN_ID")
    domain = (_BASE_DOMAIN + next(_domains)) % 96 + 1
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    yield domain
    if before is None:
        del os.environ["ROS_DOMAIN_ID"]
    else:
        os.environ["ROS_DOMAIN_ID"] = before


_sim_hosts = iter(f"127.0.{(os.getpid() % 200) + 1}.{n}" for n in range(2, 255))


def franky_sim_process(*flags: str):
    """franky-sim in its own process on a fresh 127.0.x.y address (see sim.server.sim_process)."""
    from graspvla_ros.sim.server import sim_process

    return sim_process(next(_sim_hosts), *flags)


@pytest.fixture(scope="module")
def sim_host():
    """A franky-sim robot with a 4 cm cube at (0.5, 0, 0.02) m, shared by one test module."""
    with franky_sim_process("--cube") as host:
        yield host


@pytest.fixture
def ros_node(request):
    """A plain rclpy node spun in a background thread, for talking to the nodes under test."""
    import threading

    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_{request.node.name[:40].replace('[', '_').replace(']', '_').replace('-', '_')}",
                             context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    # The node is destroyed only once its spin thread has ended: destroying it while the thread
    # still waits on it (a loaded machine: the join outlived a 5 s timeout) crashed the process.
    executor.shutdown(timeout_sec=60)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the test node's executor did not stop within 60 s"
    node.destroy_node()
    rclpy.shutdown(context=context)


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` until it is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint_dir, llm_dir) of a tiny random GraspVLA in the official layout, with a
    sentencepiece tokenizer trained for it (graspvla_ros.model.tiny)."""
    from graspvla_ros.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("graspvla_tiny"), seed=0)


@pytest.fixture(scope="session")
def new_loopback_host():
    """Call it for a fresh 127.0.x.y address for a franky-sim embedded in the test process."""
    return lambda: next(_sim_hosts)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    """Directory of `graspvla export` (all graphs) of the tiny checkpoint."""
    from graspvla_ros.model.export import export

    out = tmp_path_factory.mktemp("graspvla_onnx")
    export(tiny_checkpoint[0], out, llm_dir=tiny_checkpoint[1])
    return out

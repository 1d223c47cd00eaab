"""The project's own launcher: starts a graph of `NodeSpec`s as child processes.

`ros2 launch` is not available from PyPI, so `make demo`, the tests and the benchmarks bring
the graph up with this runner instead. It runs exactly the specs that `launch/*.launch.py`
hand to launch_ros, so the two cannot drift.

    python -m graspvla_ros.bringup sim            # the whole stack in simulation
    python -m graspvla_ros.bringup sim --print    # show the command lines only
    python -m graspvla_ros.bringup robot robot_ip:=172.16.0.2 front_serial:=123 side_serial:=456 checkpoint:=DIR

Two machines (the policy on a GPU machine): the same command on each, with `host:=robot` on the
real-time PC and `host:=policy` on the GPU machine (the same ROS_DOMAIN_ID on both).

A graph that would not work as asked (graph.GraphError: no checkpoint, a camera serial missing,
...) is refused with one line naming the argument to set, before any node starts (exit 2).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from graspvla_ros.graph import ENVIRONMENT, GRAPH_ARGUMENTS, GRAPHS, HOSTS, GraphError, NodeSpec, build
from graspvla_ros.process import die_with_parent


class NodeProcess:
    """One running node; its output is forwarded line by line with a `[name]` prefix."""

    def __init__(self, spec: NodeSpec, out: IO[str]):
        self.spec = spec
        self.cmd = [*spec.prefix, sys.executable, "-m", spec.module, *spec.ros_args()]
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env={**ENVIRONMENT, **os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent,
        )
        self._pump = threading.Thread(target=self._forward, args=(out,), daemon=True)
        self._pump.start()

    def _forward(self, out: IO[str]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            out.write(f"[{self.spec.name}] {line}")
            out.flush()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (a clean rclpy shutdown), then SIGTERM, then SIGKILL to the process group."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._pump.join(timeout=1.0)
        return self.proc.wait()


class Bringup:
    """Context manager that starts the given nodes and stops them in reverse order."""

    def __init__(self, specs: Sequence[NodeSpec], out: IO[str] = sys.stdout):
        self.specs = list(specs)
        self.out = out
        self.procs: list[NodeProcess] = []

    def __enter__(self) -> Bringup:
        try:
            for spec in self.specs:
                self.procs.append(NodeProcess(spec, self.out))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, name: str, timeout: float) -> int | None:
        """Wait for node `name` to exit; its return code, or None if it still runs after `timeout`."""
        proc = next(p for p in self.procs if p.spec.name == name)
        try:
            return proc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def failed(self) -> list[tuple[str, int]]:
        """Nodes that have exited, with their return codes."""
        return [(p.spec.name, p.proc.returncode) for p in self.procs if p.proc.poll() is not None]

    def stop(self) -> dict[str, int]:
        codes = {p.spec.name: p.stop() for p in reversed(self.procs)}
        self.procs.clear()
        return codes


def main(argv: Sequence[str] | None = None) -> int:
    arguments = "\n".join(f"  {name}:=  ({', '.join(a.graphs)}) {a.description()}"
                          for name, a in GRAPH_ARGUMENTS.items())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"graph arguments:\n{arguments}")
    parser.add_argument("graph", choices=GRAPHS, help="which graph to bring up")
    parser.add_argument("arguments", nargs="*", metavar="name:=value",
                        help=f"graph arguments: host:={'|'.join(HOSTS)} (which part of a sim or robot graph runs "
                             "on this machine; default all), " + ", ".join(GRAPH_ARGUMENTS) + " (below)")
    parser.add_argument("--print", action="store_true", help="print the command lines and exit")
    args = parser.parse_intermixed_args(argv)
    pairs = dict(a.split(":=", 1) for a in args.arguments if ":=" in a)
    unknown = [a for a in args.arguments if ":=" not in a or a.split(":=", 1)[0] not in (*GRAPH_ARGUMENTS, "host")]
    if unknown:
        parser.error(f"unknown graph argument(s) {unknown}; known: host, {', '.join(GRAPH_ARGUMENTS)}")
    host = pairs.pop("host", "all")
    try:
        specs = build(args.graph, pairs, host)
    except GraphError as err:
        print(f"bringup: {err}", file=sys.stderr)
        return 2
    if args.print:
        for spec in specs:
            print(" ".join([sys.executable, "-m", spec.module, *spec.ros_args()]))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Bringup(specs) as graph:
        try:
            while not stop.is_set() and not graph.failed():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        dead = graph.failed()
    if dead:
        print(f"bringup: node(s) exited: {dead}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two hosts vs one: the sim graph with the policy on a second host (a network namespace joined by a
veth pair, as tests/test_two_hosts.py), views as the model's JPEGs (transport:=model_view).

Per configuration, seeded episodes (objects re-placed, a seeded target): grasp success and time;
the latency chain (p50/p99 of each stage over the episode's cycles, on the sim graph's clock, from
/diagnostics); bytes per second on the link (the veth's own counters, both directions); and what the
raw frames would have been (model_view_node's bytes in vs out). Link delay is emulated in the policy
node (`link_emulation`: this kernel has no netem qdisc).

    scripts/isolated .venv/bin/python -m benchmarks.bench_two_hosts [--episodes 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"   # the split graph's transport; read at the first participant

import numpy as np  # noqa: E402

from benchmarks.report import write_section  # noqa: E402

COMMAND = "scripts/isolated .venv/bin/python -m benchmarks.bench_two_hosts"
DELAYS = (0.0, 0.05, 0.15)   # s, emulated one way on each leg
EPISODE_TIMEOUT = 240.0
STAGES = ("received", "inference_start", "inference_end", "published", "controller_received", "motion_updated")


def _link_bytes(dev: str) -> int:
    """Bytes received + sent on `dev` (/proc/net/dev is this network namespace's; /sys may not be)."""
    for line in open("/proc/net/dev"):
        name, _, counters = line.partition(":")
        if name.strip() == dev:
            fields = counters.split()
            return int(fields[0]) + int(fields[8])
    raise FileNotFoundError(f"no interface {dev} in /proc/net/dev")


class Probe:
    """The test-side node: statuses, the latest diagnostics per status name, the instruction."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_two_hosts", context=self.context)
        latched = QoSProfile(depth=20, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.status: list[dict] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        import json
        self.node.create_subscription(String, "/graspvla/status", lambda m: self._add(json.loads(m.data)), latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 50)
        self.controller = ""
        self.node.create_subscription(String, "/controller/state", lambda m: setattr(self, "controller", m.data), latched)
        self.say = self.node.create_publisher(String, "/graspvla/instruction", 10)
        self.target = self.node.create_publisher(String, "sim/set_target", QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE))
        self.reset = self.node.create_client(Trigger, "sim/reset_objects")
        self.clock = self.node.create_client(Trigger, "/controller/clock")   # the graph's (sim) clock
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.String = String

    def _add(self, status: dict) -> None:
        with self.lock:
            self.status.append(status)

    def _diag(self, msg) -> None:
        with self.lock:
            for s in msg.status:
                self.diagnostics[s.name] = {kv.key: kv.value for kv in s.values}

    def last(self) -> dict:
        with self.lock:
            return self.status[-1] if self.status else {}

    def chain(self) -> dict[str, tuple[float, float]]:
        with self.lock:
            values = {**self.diagnostics.get("graspvla/policy", {}), **self.diagnostics.get("graspvla/controller", {})}
        return {s: (float(values[f"latency.{s}.p50_ms"]), float(values[f"latency.{s}.p99_ms"]))
                for s in STAGES if f"latency.{s}.p50_ms" in values}

    def sim_now(self) -> tuple[int, float]:
        """(the controller's clock in ns, this host's monotonic s) at once: the simulator's pace."""
        from graspvla_ros.nodes.common import call_trigger
        reply = call_trigger(self.clock, 30)
        if reply is None or not reply.success:
            raise RuntimeError("no answer from /controller/clock")
        return int(reply.message), time.monotonic()

    def encoder(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics.get("graspvla/model_view", {}))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def _episode(probe: Probe, seed: int, names: list[str]) -> tuple[bool, float, dict, str]:
    from graspvla_ros.nodes.common import call_trigger

    reply = call_trigger(probe.reset, 60)
    if reply is None or not reply.success:
        raise RuntimeError(f"sim/reset_objects: {reply and reply.message}")
    target = names[np.random.default_rng(seed).integers(len(names))]
    probe.target.publish(probe.String(data=target))
    before = probe.last().get("episode", 0)
    start = time.monotonic()
    for _ in range(5):
        probe.say.publish(probe.String(data=f"pick up the {target}"))
        try:
            _wait(lambda: probe.last().get("episode", 0) > before, 20, "episode start")
            break
        except TimeoutError:
            continue
    chain = {}

    def ended():
        nonlocal chain
        if probe.last().get("phase") == "running":
            chain = probe.chain() or chain   # the window while the episode's cycles are in it
            return False
        return True
    try:
        _wait(ended, EPISODE_TIMEOUT, f"the end of the grasp of the {target}")
    except TimeoutError:
        probe.say.publish(probe.String(data="stop"))
        return False, time.monotonic() - start, chain, f"no end within {EPISODE_TIMEOUT:.0f} s"
    last = probe.last()
    return last["phase"] == "succeeded", time.monotonic() - start, chain, f"{last['phase']}: {last.get('reason', '')}"


def run(episodes: int) -> str:
    sys.path.insert(0, "tests")
    from dataclasses import replace

    from helpers import PeerHost  # the tests' second host: a veth pair to a network namespace

    from graspvla_ros.bringup import Bringup
    from graspvla_ros.graph import HOSTS, SPLIT_ENVIRONMENT, configure, sim_graph
    from graspvla_ros.sim.scene import random_layout

    names = list(random_layout(0))
    rows = []
    peer = PeerHost(7)
    probe = Probe()
    specs = [replace(s, env=SPLIT_ENVIRONMENT) for s in configure(
        sim_graph(transport="model_view"), sim_world={"host": "127.0.0.1", "seed": 100},
        controller={"latency_window": 10.0}, policy={"latency_window": 10.0})]
    split = [s if HOSTS["robot"](s) else replace(s, prefix=peer.prefix) for s in specs]
    try:
        for hosts, graph_specs, delays in (("one", specs, (0.0,)), ("two", split, DELAYS)):
            with open(os.devnull, "w") as out, Bringup(graph_specs, out=out) as graph:
                _wait(lambda: probe.last() and probe.controller == "IDLE", 300, "the graph's start and home")
                for delay in delays:
                    if hosts == "two":
                        _set_link(probe, f"delay={delay}" if delay else "")
                    results, chains = [], []
                    link0, encoder0, t0 = _link_bytes(peer.here), probe.encoder(), time.monotonic()
                    sim0 = probe.sim_now()
                    for k in range(episodes):
                        ok, seconds, chain, outcome = _episode(probe, 1000 + k, names)
                        results.append((ok, seconds))
                        chains.append(chain)
                        print(f"{hosts} host(s), delay {delay * 1e3:.0f} ms, episode {k + 1}/{episodes}: "
                              f"{'grasped' if ok else 'failed'} in {seconds:.1f} s ({outcome})", flush=True)
                        assert not graph.failed(), graph.failed()
                    span = time.monotonic() - t0
                    sim1 = probe.sim_now()
                    pace = (sim1[0] - sim0[0]) / 1e9 / (sim1[1] - sim0[1])
                    encoder = probe.encoder()
                    raw = (int(encoder["bytes_in"]) - int(encoder0.get("bytes_in", 0))) / span
                    sent = (int(encoder["bytes_out"]) - int(encoder0.get("bytes_out", 0))) / span
                    link = (_link_bytes(peer.here) - link0) / span if hosts == "two" else None
                    rows.append((hosts, delay, results, chains, link, raw, sent, pace))
            probe.status.clear()
            probe.controller = ""
    finally:
        peer.close()
    return _markdown(rows, episodes)


def _set_link(probe: Probe, text: str) -> None:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, "/policy/set_parameters")
    _wait(lambda: client.service_is_ready(), 60, "/policy/set_parameters")
    future = client.call_async(SetParameters.Request(parameters=[
        Parameter("link_emulation", value=text).to_parameter_msg()]))
    _wait(lambda: future.done(), 30, "the policy's answer")
    assert future.result().results[0].successful, future.result().results[0].reason


def _markdown(rows, episodes: int) -> str:
    lines = ["## Two hosts: the policy across a link (sim graph, transport:=model_view)", "",
             "The sim graph on one host, then split as `host:=robot` / `host:=policy`: the policy in a second",
             "network namespace joined by a veth pair, each leg delayed by the policy node's `link_emulation`",
             f"(this kernel has no netem qdisc). {episodes} seeded episodes per row (objects re-placed, seeded",
             "target), expert backend, 640×480 sim cameras at 10 Hz. Both runs use the split graph's transport",
             "(UDP + shared memory). The latency chain is ms after the views' exposure on the sim graph's clock,",
             "p50 / p99 over the last 10 s of each episode, median over the episodes. That clock is the",
             "simulator's, slower than the wall clock here (the simulator is CPU-bound): `sim pace` is sim s per",
             "wall s over the row, so a wall-clock delay shows on the chain multiplied by it. Times per grasp are",
             "wall clock.", "",
             "| hosts | one-way delay (wall) | grasped | time per grasp p50 | sim pace | link bytes/s (both ways) | "
             "views sent / raw frames read |" + "".join(f" {s} p50 / p99 |" for s in STAGES),
             "|---|---|---|---|---|---|---|" + "---|" * len(STAGES)]
    for hosts, delay, results, chains, link, raw, sent, pace in rows:
        ok = sum(r[0] for r in results)
        times = np.median([r[1] for r in results])
        stages = []
        for s in STAGES:
            got = [c[s] for c in chains if s in c]
            stages.append(f" {np.median([g[0] for g in got]):.0f} / {np.median([g[1] for g in got]):.0f} |" if got
                          else " – |")
        lines.append(f"| {hosts} | {delay * 1e3:.0f} ms | {ok}/{len(results)} | {times:.1f} s | {pace:.2f} | "
                     f"{'–' if link is None else f'{link / 1e3:.0f} kB/s'} | "
                     f"{sent / 1e3:.0f} of {raw / 1e3:.0f} kB/s ({sent / raw:.1%}) |" + "".join(stages))
    lines += ["", "Raw frames: what model_view_node read from the cameras on the robot host (rgb8); only its JPEG views "
              "cross the link, with the sim graph's /clock, the TCP poses (200 Hz), joint states, /tf, controller "
              "state, chunks, diagnostics and DDS discovery: the link's bytes/s counts them all."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    args = ap.parse_args(argv)
    write_section("two_hosts", run(args.episodes), COMMAND + (f" --episodes {args.episodes}"
                                                             if args.episodes != 10 else ""))
    print("BENCHMARKS.md: two_hosts section written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

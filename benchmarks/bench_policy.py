"""Closed-loop policy benchmark: seeded sim episodes with the `expert` backend through sim_world +
controller_node + policy_node (the demo's graph), for the `streaming` strategy and the official
blocking execution: success rate, time from instruction to lift, and the stack's overhead per
cycle (exposure → chunk published, minus the backend's time) from /graspvla/debug/timings.

    scripts/isolated .venv/bin/python -m benchmarks.bench_policy [--episodes N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from benchmarks.report import write_section
from graspvla_ros.bringup import Bringup
from graspvla_ros.demo import DEMO_CAMERA_RATE_HZ, DEMO_SEED, SIM_POLICY, DemoClient, episode_objects, wait_for
from graspvla_ros.graph import policy, sim_graph


def run(strategy: str, episodes: int, timeout: float) -> dict:
    specs = []
    for s in sim_graph(sim_camera_rate_hz=str(DEMO_CAMERA_RATE_HZ)):
        if s.name == "sim_world":
            s = replace(s, params={**s.params, "seed": DEMO_SEED})
        elif s.name == "controller":
            s = replace(s, params={**s.params, "strategy": strategy})
        if s.name != "policy":
            specs.append(s)
    specs.append(policy(backend="expert", episode_timeout=timeout, **SIM_POLICY))
    results, timings = [], []
    with open(f"/tmp/bench_policy_{strategy}.log", "w") as log, Bringup(specs, out=log) as graph:
        client = DemoClient()
        from std_msgs.msg import String
        client.node.create_subscription(String, "/graspvla/debug/timings",
                                        lambda m: timings.append(json.loads(m.data)), 50)
        try:
            wait_for(lambda: client.status and client.say_pub.get_subscription_count() > 0, 300, "the policy", graph)
            every = episode_objects(8, seed=1)  # all eight objects, in a seeded order, repeated
            for i, name in enumerate(every[k % len(every)] for k in range(episodes)):
                client.call("/controller/home", 120)
                client.call("sim/reset_objects")
                time.sleep(2.5 / DEMO_CAMERA_RATE_HZ)
                client.target_pub.publish(client.String(data=name))
                first = len(client.status)
                start = time.monotonic()
                client.say_pub.publish(client.String(data=f"pick up the {name}"))
                ended = wait_for(lambda: next((s for s in client.status[first:] if s["target"] == name
                                               and s["phase"] != "running"), None), timeout + 60, "the episode", graph)
                took = time.monotonic() - start
                success, detail = client.call("sim/check_success")
                results.append((name, success, took, ended["phase"]))
                print(f"{strategy} {i + 1}/{episodes} {name}: {success} {took:.1f} s ({detail})", flush=True)
        finally:
            client.close()
    overhead = np.array([t["published_ms"] - t["received_ms"] - t["model_ms"] for t in timings])
    return {"results": results, "overhead_ms": overhead,
            "exposure_to_publish_ms": np.array([t["published_ms"] for t in timings])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=90.0)
    args = ap.parse_args(argv)
    rows, lines = {}, []
    for strategy in ("streaming", "blocking"):
        rows[strategy] = run(strategy, args.episodes, args.timeout)
    lines.append(f"### Closed loop, `expert` backend, {args.episodes} seeded episodes per strategy "
                 f"(sim cameras {DEMO_CAMERA_RATE_HZ:g} Hz 640×480, policy ≤ 5 Hz)\n")
    lines.append("| strategy | grasped | instruction → lift, median (s) | max (s) |")
    lines.append("| --- | --- | --- | --- |")
    medians = {}
    for strategy, r in rows.items():
        ok = [took for _, success, took, _ in r["results"] if success]
        medians[strategy] = float(np.median(ok)) if ok else float("nan")
        lines.append(f"| `{strategy}` | {len(ok)}/{len(r['results'])} | {medians[strategy]:.1f} | "
                     f"{max(ok) if ok else float('nan'):.1f} |")
    lines.append(f"\nblocking / streaming time to lift: {medians['blocking'] / medians['streaming']:.2f}×\n")
    o = rows["streaming"]["overhead_ms"]
    e = rows["streaming"]["exposure_to_publish_ms"]
    lines.append("Stack overhead per cycle (streaming run, from `/graspvla/debug/timings`): received → published "
                 f"minus the backend's time: p50 {np.percentile(o, 50):.1f} ms, p99 {np.percentile(o, 99):.1f} ms "
                 f"({len(o)} cycles); exposure → published (includes the simulated cameras' render and transport): "
                 f"p50 {np.percentile(e, 50):.0f} ms, p99 {np.percentile(e, 99):.0f} ms.")
    write_section("policy", "## Policy (closed loop in simulation)\n\n" + "\n".join(lines),
                  f"scripts/isolated .venv/bin/python -m benchmarks.bench_policy --episodes {args.episodes}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

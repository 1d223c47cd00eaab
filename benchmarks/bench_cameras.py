"""Cameras benchmark: image transport across processes, sim rendering, preprocessing, and the
simulated cameras' agreement with GraspVLA's reference arm masks.

    scripts/isolated .venv/bin/python -m benchmarks.bench_cameras [--seconds 60]

Transport: two child processes each run camera_node on a software RealSense (frames injected
at 30 Hz through librealsense, 640×480 rgb8, stamped with the injection time as global time);
this process subscribes to both over Fast DDS with LARGE_DATA and counts what arrives.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.report import cpu_model, write_section
from graspvla_ros.interfaces import VIEWS, image_topic, stamp_ns

FPS = 30
REF_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "graspvla"


# --------------------------------------------------------------------------- transport

def publisher(name: str, seconds: float) -> None:
    """Child process: camera_node over a SoftwareCamera fed at 30 Hz; prints what it injected."""
    import pyrealsense2 as rs
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from graspvla_ros.camera.source import SoftwareCamera
    from graspvla_ros.nodes.camera_node import CameraNode

    rclpy.init()
    camera = SoftwareCamera(f"BENCH_{name}")
    node = CameraNode(camera, parameter_overrides=[Parameter("name", value=name)])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    deadline = time.monotonic() + 30
    while node.color_pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # discovery: count only frames a subscriber could have received
    node.driver.reading.wait(timeout=30)  # frames injected before the driver started its stream go nowhere
    time.sleep(1.0)
    frame = np.zeros((480, 640, 3), np.uint8)
    injected, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        frame[..., 0] = injected % 256
        if not camera.inject(frame, time.time() * 1000.0, domain=rs.timestamp_domain.global_time):
            raise RuntimeError("the software camera refused a frame: its stream stopped")
        injected += 1
        time.sleep(max(0.0, start + injected / FPS - time.monotonic()))
    time.sleep(1.0)
    status = node.driver.status()
    print(json.dumps({"injected": injected, "published": status.frames, "librealsense_dropped": status.dropped}),
          flush=True)
    executor.shutdown()
    spin.join()
    node.close()
    node.destroy_node()
    rclpy.shutdown()


def transport(seconds: float) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from graspvla_ros.nodes.camera_node import image_qos

    rclpy.init()
    node = Node("bench_camera_listener")
    latencies = {v: [] for v in VIEWS}

    def receive(name):
        def on_image(msg):
            latencies[name].append(time.time() - stamp_ns(msg.header.stamp.sec, msg.header.stamp.nanosec) / 1e9)
        return on_image

    for name in latencies:
        node.create_subscription(Image, image_topic(name), receive(name), image_qos("sensor_data"))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    procs = {name: subprocess.Popen([sys.executable, "-m", "benchmarks.bench_cameras", "--publisher", name,
                                     "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True,
                                    env=os.environ.copy()) for name in latencies}
    reports = {name: json.loads(p.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
               for name, p in procs.items()}
    time.sleep(0.5)
    executor.shutdown()
    spin.join()
    node.destroy_node()
    rclpy.shutdown()
    out = {}
    for name, lat in latencies.items():
        ms = np.array(lat) * 1e3
        out[name] = {**reports[name], "received": len(lat),
                     "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    return out


# --------------------------------------------------------------------------- sim + preprocessing

def sim_render(frames: int = 20) -> dict:
    from graspvla_ros.sim.world import SimWorld
    out = {}
    with SimWorld(seed=0, host="127.0.0.201") as world:
        for name in ("front", "side"):
            renderer = world.renderer(name)
            renderer.render()
            times = []
            for _ in range(frames):
                t = time.perf_counter()
                renderer.render()
                times.append(time.perf_counter() - t)
            renderer.close()
            out[name] = (float(np.median(times)) * 1e3, float(np.percentile(times, 90)) * 1e3)
    return out


def preprocessing(iterations: int = 300) -> dict:
    from graspvla_ros import preprocess as pp
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    out = {}
    for label, fn in (("client (crop + 256 INTER_CUBIC)", pp.client_view),
                      ("full (… + 224 LANCZOS letterbox)", pp.model_input)):
        for v in views:
            fn(v)
        times = []
        for _ in range(iterations):
            t = time.perf_counter()
            for v in views:
                fn(v)
            times.append(time.perf_counter() - t)
        out[label] = (float(np.median(times)) * 1e3, float(np.percentile(times, 99)) * 1e3)
    return out


def mask_iou() -> list[tuple[str, dict]]:
    """IoU of the simulated arm silhouette (centre crop 480² → 256²) with the official masks."""
    import cv2
    from PIL import Image

    from graspvla_ros.deployment import HOME_POSITION, HOME_RPY
    from graspvla_ros.sim.world import SimWorld
    refs = {c: np.asarray(Image.open(REF_DIR / f"{c}_ref.png")) > 127 for c in ("front", "side")}

    def crop(mask):
        return cv2.resize(mask[:, 80:560].astype(np.uint8) * 255, (256, 256), interpolation=cv2.INTER_CUBIC) > 127

    poses = [("reset pose (0.363, −0.001, 0.489), euler (−π, 0, π/4)", HOME_POSITION, HOME_RPY, 0.0),
             ("reset pose, TCP +3 cm (finger extensions)", HOME_POSITION, HOME_RPY, 0.03),
             ("best fit: TCP (0.5, 0.2, 0.2), euler (−π, 0, π/4), +3 cm extensions", (0.5, 0.2, 0.2),
              (-math.pi, 0.0, math.pi / 4), 0.03)]
    rows = []
    with SimWorld(seed=0, host="127.0.0.202") as world:
        for label, pos, rpy, ext in poses:
            masks = world.arm_silhouettes(pos, rpy, ext)
            rows.append((label, {c: float((crop(m) & refs[c]).sum() / max(1, (crop(m) | refs[c]).sum()))
                                 for c, m in masks.items()}))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] if __name__ == "__main__" else [])
    if args.publisher:
        publisher(args.publisher, args.seconds)
        return
    pre = preprocessing()
    render = sim_render()
    iou = mask_iou()
    load = os.getloadavg()[0]
    tr = transport(args.seconds)
    lines = [f"### Image transport: 2 × 640×480 rgb8 @ {FPS} Hz, camera_node processes → subscriber process "
             f"(Fast DDS LARGE_DATA, sensor_data QoS), {args.seconds:.0f} s", "",
             f"Measured on {cpu_model()} (load average {load:.1f} at the start).", "",
             "| camera | injected | published | received | dropped | latency p50 | latency p99 |", "|---|---|---|---|---|---|---|"]
    for name, r in tr.items():
        lines.append(f"| {name} | {r['injected']} | {r['published']} | {r['received']} | "
                     f"{r['injected'] - r['received']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms |")
    lines += ["", "Latency = arrival in the subscriber − injection time into librealsense (the frame's stamp): "
              "librealsense syncer, driver copy, rclpy publish, DDS, rclpy take.", "",
              "### Simulated camera render (MuJoCo offscreen, EGL on llvmpipe, 640×480 RGB)", "",
              "| camera | median | p90 |", "|---|---|---|"]
    lines += [f"| {n} | {m:.1f} ms | {p:.1f} ms |" for n, (m, p) in render.items()]
    lines += ["", "### Preprocessing per view pair (2 × 640×480 → model input, CPU, one thread)", "",
              "| path | median | p99 |", "|---|---|---|"]
    lines += [f"| {n} | {m:.2f} ms | {p:.2f} ms |" for n, (m, p) in pre.items()]
    lines += ["", "### Simulated cameras vs the official reference arm masks (IoU, centre crop 480² → 256²)", "",
              "| arm pose | front | side |", "|---|---|---|"]
    lines += [f"| {label} | {v['front']:.3f} | {v['side']:.3f} |" for label, v in iou]
    lines += ["", "The official masks do not show the arm at the reset pose: with the documented camera poses the "
              "reset-pose hand is above the side camera's field of view (its top edge is 8.5° below "
              "horizontal at z = 0.5 m), and the masks' fingertips triangulate to ≈(0.5, 0.2, 0.17) m in "
              "both views. A search over TCP positions finds the best agreement at (0.5, 0.2, 0.2) m with "
              "the +3 cm finger extensions — the z = 0.2 m calibration pose the official README describes. "
              "The remaining gap is FR3 vs Panda link shapes and the real cameras' placement by hand."]
    write_section("cameras", "\n".join(lines), "scripts/isolated .venv/bin/python -m benchmarks.bench_cameras")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

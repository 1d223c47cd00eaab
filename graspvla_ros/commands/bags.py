"""The bag subcommands of the ``graspvla`` command (`graspvla_ros.cli`).

``graspvla record [-o DIR] [--mode episode|continuous] [--topics T ...] [--split-size MB] [--split-duration S]``
runs recorder_node; ``graspvla play BAG [--rate R] [--start S] [--loop] [--topics T ...]
[--remap /a:=/b ...] [--clock [HZ]] [--lock-step]`` runs player_node; ``graspvla bag-info BAG``
prints a bag's topics, counts and episode metadata. ``graspvla replay-test BAG --backend graspvla
[--runtime R] [--checkpoint DIR | --tiny] [--atol A]`` runs a recorded episode's cycles again
(graspvla_ros.policy.replay) and exits 1 where a chunk differs beyond the tolerance. The nodes
(rclpy) and the model (torch) load inside the handlers.
"""
from __future__ import annotations

import argparse
import json

from graspvla_ros.settings import format_param


def _ros_args(name: str, params: dict) -> list[str]:
    args = [name, "--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={format_param(value)}"]
    return args


def _record(args: argparse.Namespace) -> int:
    from graspvla_ros.nodes import recorder_node

    params = {"output_dir": args.output, "mode": args.mode,
              "split.max_bytes": int(args.split_size * 1e6), "split.max_seconds": float(args.split_duration)}
    if args.topics:
        params["topics"] = args.topics
    return recorder_node.main(_ros_args("graspvla-record", params))


def _play(args: argparse.Namespace) -> int:
    from graspvla_ros.nodes import player_node

    params = {"bag": str(args.bag), "rate": args.rate, "start": args.start, "loop": args.loop,
              "remap": " ".join(args.remap), "clock": float(args.clock), "lock_step.enabled": args.lock_step,
              "lock_step.timeout": args.timeout, "wait_for_subscribers": args.wait_for_subscribers}
    if args.topics:
        params["topics"] = args.topics
    return player_node.main(_ros_args("graspvla-play", params))


def _info(args: argparse.Namespace) -> int:
    from graspvla_ros.bag import open_bag

    bag = open_bag(args.bag)
    if args.check:
        bag.check()
    state = "complete" if bag.complete else "unfinished (recorder killed): up to its last complete chunk"
    print(f"{bag.path}: {bag.storage}, {state}, {bag.duration_s:.3f} s, {bag.message_count} messages")
    width = max((len(t) for t in bag.topics), default=0)
    for name, topic in sorted(bag.topics.items()):
        print(f"  {name:<{width}}  {topic.count:>7}  {topic.msgtype}")
    if bag.episode:
        print("episode: " + json.dumps(bag.episode, sort_keys=True))
    return 0


def _replay_test(args: argparse.Namespace) -> int:
    from graspvla_ros.bag import BagError, open_bag
    from graspvla_ros.policy.backends import create
    from graspvla_ros.policy.replay import Recording, replay, table_header, table_row

    if args.tiny == bool(args.checkpoint):
        raise ValueError("give exactly one of --checkpoint DIR or --tiny")
    recording = Recording.load(open_bag(args.bag))
    recorded = recording.parameters
    seed = args.seed if args.seed is not None else int(recorded.get("seed", 0))
    backend = create(args.backend, checkpoint=args.checkpoint, llm_dir=args.llm_dir, runtime=args.runtime,
                     tiny=args.tiny, onnx_dir=args.onnx_dir, seed=seed)
    print(f"{args.bag}: {len(recording.cycles)} recorded cycles of {recording.cycles[0].instruction!r} "
          f"(recorded with {recorded.get('backend') or '?'} / {recorded.get('runtime') or '?'}); "
          f"replaying with {args.backend} / {args.runtime}")
    print(table_header())
    failed = compared = 0
    worst = [0.0, 0.0, 0.0]
    for result in replay(recording, backend):
        print(table_row(result, args.atol), flush=True)
        compared += not result.skipped
        failed += not result.within(args.atol)
        worst = [max(w, v) for w, v in zip(worst, (result.max_xyz, result.max_euler, result.max_gripper))]
    if not compared:
        raise BagError(f"{args.bag}: none of its {len(recording.cycles)} recorded cycles could be rebuilt from it")
    verdict = "FAIL" if failed else "PASS"
    print(f"{verdict}: {failed} of {compared} replayed cycles beyond atol {args.atol:g} or with other tokens "
          f"({len(recording.cycles) - compared} not replayable); worst |Δxyz| {worst[0]:.2e} m, "
          f"|Δrpy| {worst[1]:.2e} rad, |Δgripper| {worst[2]:.2e}")
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The bag subcommands of `graspvla` (graspvla_ros.cli)."""
    rec = sub.add_parser("record", help="record the stack's topics to rosbag2 MCAP (recorder_node)")
    rec.add_argument("-o", "--output", default="~/graspvla_bags", help="directory for the bags (default ~/graspvla_bags)")
    rec.add_argument("--mode", choices=("episode", "continuous"), default="episode",
                     help="episode: a new bag at each /graspvla/instruction (default); continuous: one bag")
    rec.add_argument("--topics", nargs="+", help="topics or shell patterns (default: the stack's topics)")
    rec.add_argument("--split-size", type=float, default=0.0, help="MB per .mcap file (0: no split)")
    rec.add_argument("--split-duration", type=float, default=0.0, help="s per .mcap file (0: no split)")
    rec.set_defaults(run=_record)

    play = sub.add_parser("play", help="publish a bag's topics with their original timing (player_node)")
    play.add_argument("bag", help="rosbag2 directory (MCAP or sqlite3) or a .mcap/.db3 file")
    play.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1)")
    play.add_argument("--start", type=float, default=0.0, help="s into the bag to start from")
    play.add_argument("--loop", action="store_true", help="start again at the end")
    play.add_argument("--topics", nargs="+", help="topics or shell patterns to play (default: all)")
    play.add_argument("--remap", nargs="+", default=[], metavar="/FROM:=/TO", help="rename topics")
    play.add_argument("--clock", type=float, nargs="?", const=100.0, default=0.0, metavar="HZ",
                      help="publish /clock from the bag time (default 100 Hz when given)")
    play.add_argument("--lock-step", action="store_true",
                      help="release one observation, wait for the answer on /graspvla/action_chunk")
    play.add_argument("--timeout", type=float, default=30.0, help="s to wait for each answer in lock-step")
    play.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                      help="wait until each played topic has N subscribers before starting")
    play.set_defaults(run=_play)

    info = sub.add_parser("bag-info", help="a bag's topics, message counts and episode metadata")
    info.add_argument("bag")
    info.add_argument("--check", action="store_true", help="read every message (finds truncated or corrupt data)")
    info.set_defaults(run=_info)

    rt = sub.add_parser("replay-test", help="run a recorded episode's cycles again through a backend and compare "
                                            "the chunks (exit 1 beyond --atol)")
    rt.add_argument("bag", help="a bag recorded by recorder_node (or `graspvla record`) while the policy ran")
    rt.add_argument("--backend", choices=("graspvla",), default="graspvla", help="the policy backend (graspvla)")
    rt.add_argument("--runtime", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    rt.add_argument("--checkpoint", default="", help="official checkpoint directory to test")
    rt.add_argument("--tiny", action="store_true",
                    help="the tiny random checkpoint (generated with --seed: the recording's seed by default)")
    rt.add_argument("--llm-dir", default="", help="the LLM's Hugging Face directory (default: next to the checkpoint)")
    rt.add_argument("--onnx-dir", default="", help="`graspvla export` directory for onnxruntime/tensorrt")
    rt.add_argument("--seed", type=int, default=None,
                    help="seed of the tiny checkpoint (default: the recorded policy's `seed` parameter)")
    rt.add_argument("--atol", type=float, default=1e-4,
                    help="largest |Δ| allowed in xyz (m), Euler (rad) and gripper per waypoint (default 1e-4)")
    rt.set_defaults(run=_replay_test)

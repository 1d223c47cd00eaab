"""Replay regression: a short sim episode recorded through the real graph (sim_world,
controller, policy with the tiny graspvla checkpoint on torch, recorder) replays through
`graspvla replay-test` on torch and onnxruntime with identical tokens and chunks ≤ 1e-4; bad
bags are one clear error with exit 2."""
from __future__ import annotations

import re

import pytest
from std_msgs.msg import String

from conftest import wait_for
from helpers import SIM_CAMERAS, graph_waiter, say_until
from graspvla_ros import cli
from graspvla_ros.bag import BagWriter, open_bag
from graspvla_ros.bringup import Bringup
from graspvla_ros.graph import controller, policy, recorder, sim_world

# As the policy tests run the sim (helpers.SIM_CAMERAS), with lenient view pairing and chunk
# age for a loaded 2-core machine.
SIM_POLICY = {"max_view_skew": 0.5, "max_image_age": 0.9}
SIM_CONTROLLER = {"safety.max_chunk_age": 1.2}

CYCLES = 3
RECORDED = ("/front/color/image_raw", "/side/color/image_raw", "/graspvla/ee_pose", "/graspvla/action_chunk",
            "/graspvla/debug/timings")


@pytest.fixture(scope="module")
def episode_bag(tmp_path_factory, new_loopback_host):
    """One recorded episode with ≥ CYCLES chunks of the tiny checkpoint (torch, seed 0)."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    out_dir = tmp_path_factory.mktemp("bags")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("replay_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    timings = []
    node.create_subscription(String, "/graspvla/debug/timings", timings.append, 50)
    say = node.create_publisher(String, "/graspvla/instruction", 10)
    host = new_loopback_host()
    sim_time = {"use_sim_time": True}   # one clock: sim_world's /clock, as in the sim graph
    specs = [sim_world(host=host, seed=3, **SIM_CAMERAS, **sim_time),
             controller(robot_ip=host, **SIM_CONTROLLER, **sim_time),
             policy(backend="graspvla", tiny=True, runtime="torch", **SIM_POLICY, **sim_time),
             recorder(output_dir=str(out_dir), flush_period=0.2, **sim_time)]

    def recorder_has_all() -> bool:
        return all(any(i.node_name == "recorder" for i in node.get_subscriptions_info_by_topic(t)) for t in RECORDED)

    try:
        with Bringup(specs) as graph:
            until = graph_waiter(graph, wait_for)

            until(lambda: say.get_subscription_count() >= 2 and recorder_has_all(), 300,
                  "the policy (tiny checkpoint) and the recorder")
            say_until(until, say, "pick up the banana", lambda: timings, "the first cycle")
            # + 2: the first cycles may answer views or poses from just before the bag began
            until(lambda: len(timings) >= CYCLES + 2, 300, f"{CYCLES + 2} cycles")
    finally:
        executor.shutdown()
        thread.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
    bags = sorted(p for p in out_dir.iterdir() if p.is_dir())
    assert bags, "the recorder wrote no bag"
    return bags[-1]


def replay_test(capsys, *args) -> tuple[int, str]:
    code = cli.main(["replay-test", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.ros
@pytest.mark.sim
@pytest.mark.timeout(900)   # the first one records the episode (tiny checkpoint, sim, recorder)
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_recorded_episode_replays_with_identical_tokens(runtime, episode_bag, capsys):
    code, out = replay_test(capsys, episode_bag, "--backend", "graspvla", "--runtime", runtime, "--tiny")
    assert code == 0, out
    rows = [line for line in out.splitlines() if re.match(r"\s*\d+\s+\d+\.\d{3}\s", line)]
    compared = [r for r in rows if "not replayed" not in r]
    assert len(compared) >= CYCLES, out
    for row in compared:
        assert " same " in row and row.rstrip().endswith("ok"), out
    worst = re.search(r"worst \|Δxyz\| (\S+) m, \|Δrpy\| (\S+) rad, \|Δgripper\| (\S+)", out)
    assert worst and max(float(v) for v in worst.groups()) <= 1e-4, out


@pytest.mark.ros
@pytest.mark.sim
@pytest.mark.timeout(900)
def test_another_checkpoint_fails_the_replay(episode_bag, capsys):
    """A tiny checkpoint from another seed is another model: tokens differ, exit 1."""
    code, out = replay_test(capsys, episode_bag, "--tiny", "--seed", "7")
    assert code == 1 and "DIFF" in out and "FAIL" in out, out


def test_bag_without_the_policy_topics_is_one_clear_error(tmp_path, capsys):
    with BagWriter(tmp_path / "only_pose") as bag:
        bag.add_topic("/graspvla/ee_pose", "geometry_msgs/msg/PoseStamped")
        bag.write("/graspvla/ee_pose", 1, bytes([0, 1, 0, 0] + [0] * 60))
    code, out = replay_test(capsys, tmp_path / "only_pose", "--tiny")
    assert code == 2 and "cannot replay: no messages on /front/color/image_raw" in out, out
    assert out.count("\n") == 1, out


@pytest.mark.ros
@pytest.mark.sim
@pytest.mark.timeout(900)
def test_checkpoint_that_is_not_graspvla_is_one_clear_error(episode_bag, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    code, out = replay_test(capsys, episode_bag, "--checkpoint", tmp_path)
    assert code == 2 and out.startswith("graspvla replay-test:"), out


def test_no_checkpoint_given_is_an_error(tmp_path, capsys):
    code, out = replay_test(capsys, tmp_path, "--runtime", "torch")
    assert code == 2 and "--checkpoint DIR or --tiny" in out, out


def test_replay_graph_plays_the_recorded_inputs_into_the_policy_on_the_bag_clock_and_records():
    from graspvla_ros.graph import REPLAY_INPUTS, build

    specs = {s.name: s for s in build("replay", {"bag": "/bags/ep1", "output_dir": "/tmp/out", "backend": "graspvla",
                                                 "tiny": "true"})}
    assert set(specs) == {"player", "policy", "recorder"}
    assert specs["player"].params == {"bag": "/bags/ep1", "topics": REPLAY_INPUTS, "clock": 100.0,
                                     "wait_for_subscribers": 2}
    assert "/graspvla/action_chunk" not in REPLAY_INPUTS      # the live policy answers
    # the bag's poses end with the bag: no robot link to watch
    assert specs["policy"].params == {"backend": "graspvla", "tiny": True, "use_sim_time": True, "link_timeout": 0.0}
    assert specs["recorder"].params["output_dir"] == "/tmp/out" and specs["recorder"].params["use_sim_time"]


@pytest.mark.ros
@pytest.mark.sim
@pytest.mark.timeout(900)
def test_replay_graph_answers_the_recorded_episode_and_its_bag_replays_the_same(episode_bag, tmp_path, capsys):
    """The episode through DDS (player → live policy on the bag clock → recorder), then the new
    bag through replay-test: the graph's policy made its chunks from the played inputs."""
    import dataclasses

    from graspvla_ros.graph import build

    specs = [dataclasses.replace(s, params={**s.params, **SIM_POLICY}) if s.name == "policy" else s
             for s in build("replay", {"bag": str(episode_bag), "output_dir": str(tmp_path), "backend": "graspvla",
                                       "tiny": "true"})]
    with Bringup(specs) as graph:
        wait_for(lambda: graph.failed(), 240, "the player to finish the bag")
        assert graph.failed() == [("player", 0)], graph.failed()
    bags = [p for p in tmp_path.iterdir() if p.name.startswith("replay_")]
    assert len(bags) == 1 and open_bag(bags[0]).topics["/graspvla/action_chunk"].count >= CYCLES
    code, out = replay_test(capsys, bags[0], "--tiny", "--runtime", "onnxruntime")
    assert code == 0, out

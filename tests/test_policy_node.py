"""policy_node closed-loop through sim_world (franky-sim + cameras) and controller_node, all real
processes: the expert grasps the named object, a new instruction retargets, "stop" holds, a
refused instruction changes nothing, chunks are anchored at the controller's pose at the
images' exposure stamp."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from conftest import wait_for
from helpers import SIM_CAMERAS, run_command
from graspvla_ros.bringup import Bringup
from graspvla_ros.deployment import HOME_POSITION
from graspvla_ros.graph import configure, sim_graph
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.common import call_trigger
from graspvla_ros.nodes.sim_world_node import LATCHED
from graspvla_ros.policy.observation import PoseHistory, Skip
from graspvla_ros.nodes.convert import pose_from_msg, stamp_to_ns
from graspvla_ros.sim.scene import random_layout

STATUS_QOS = QoSProfile(depth=20, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
pytestmark = [pytest.mark.ros, pytest.mark.sim]
SEED = 7


class Recorder:
    def __init__(self, node):
        self.lock = threading.Lock()
        self.poses = PoseHistory(span_s=600.0)
        self.pose_list: list = []
        self.chunks: list = []
        self.status: list[dict] = []
        node.create_subscription(PoseStamped, "/graspvla/ee_pose", self._pose, 100)
        node.create_subscription(MultiDOFJointTrajectory, "/graspvla/action_chunk", self._chunk, 50)
        node.create_subscription(String, "/graspvla/status", self._status, STATUS_QOS)
        self.states: list[str] = []
        node.create_subscription(String, "/controller/state", lambda m: self.states.append(m.data), STATUS_QOS)
        self.instruction = node.create_publisher(String, "/graspvla/instruction", 10)
        self.set_target = node.create_publisher(String, "sim/set_target", LATCHED)
        self.check = node.create_client(Trigger, "sim/check_success")
        self.reset = node.create_client(Trigger, "sim/reset_objects")

    def _pose(self, m):
        with self.lock:
            self.poses.add(stamp_to_ns(m.header.stamp), pose_from_msg(m.pose))
            self.pose_list.append((stamp_to_ns(m.header.stamp), pose_from_msg(m.pose).position))

    def _chunk(self, m):
        with self.lock:
            self.chunks.append(m)

    def _status(self, m):
        with self.lock:
            self.status.append(json.loads(m.data))

    def say(self, text):
        self.instruction.publish(String(data=text))

    def last_status(self):
        with self.lock:
            return self.status[-1] if self.status else None

    def tcp(self):
        with self.lock:
            return self.pose_list[-1][1] if self.pose_list else None


def _object_xy(name, seed=SEED):
    p = random_layout(seed)[name]
    return np.array([p.x, p.y])


@pytest.fixture(scope="module")
def stack(new_loopback_host):
    """The sim graph as `make demo` runs it (graph.sim_graph: sim time, sim gripper and age
    limits), on a loopback address of its own, with the tests' light cameras."""
    host = new_loopback_host()
    specs = configure(sim_graph(), sim_world={"host": host, "seed": SEED, **SIM_CAMERAS},
                      controller={"robot_ip": host}, policy={"backend": "expert"})
    with Bringup(specs) as graph:
        yield graph


@pytest.fixture
def rec(stack, ros_node):
    r = Recorder(ros_node)
    wait_for(lambda: r.last_status() and r.tcp() is not None or stack.failed(), 180,
             "the policy's status and the controller's TCP pose")
    assert not stack.failed(), f"nodes died: {stack.failed()}"
    return r


def test_expert_grasps_and_lifts_the_named_object_with_anchors_at_the_exposure_pose(stack, rec):
    # sim_world's subscription is volatile: a target sent before it matched would be lost
    wait_for(lambda: rec.set_target.get_subscription_count() > 0, 60, "sim_world's sim/set_target subscription")
    rec.set_target.publish(String(data="red cube"))
    rec.say("pick up the red cube")
    wait_for(lambda: rec.last_status()["target"] == "red cube", 30, "the episode to start")
    episode = rec.last_status()["episode"]
    done = wait_for(lambda: rec.last_status()["phase"] != "running" and rec.last_status() or stack.failed(), 240,
                    "the episode to end")
    assert done and not stack.failed(), stack.failed()
    assert done["episode"] == episode and done["phase"] == "succeeded", done
    reply = call_trigger(rec.check, 30)
    assert reply is not None, "sim/check_success did not answer"
    assert reply.success, reply.message
    with rec.lock:
        chunks = list(rec.chunks)
        poses = rec.poses
        assert len(chunks) >= 5
        moving = checked = 0
        for msg in chunks:
            chunk = chunk_msg.decode(msg)
            assert chunk.rows.shape == (8, 7) and chunk.dt == pytest.approx(0.1)
            assert set(chunk.rows[:, 6]) <= {-1.0, 0.0, 1.0}
            try:
                truth = poses.at(chunk.stamp_ns)
            except Skip:  # exposed before this test's pose recording began
                continue
            checked += 1
            # the anchor is the controller's pose at the exposure stamp (5 ms stream, ≤ 0.2 m/s)
            assert chunk.anchor.translation_to(truth) < 1.5e-3
            assert chunk.anchor.rotation_to(truth) < 0.01
            before = poses.at(chunk.stamp_ns - 20_000_000)
            moving += before.translation_to(truth) > 5e-4
        assert checked >= 5 and moving >= 3, "chunks anchored while the arm moved"


def test_new_instruction_mid_episode_retargets_and_refusals_change_nothing(stack, rec):
    with rec.lock:
        n_states = len(rec.states)
    rec.say("home")
    wait_for(lambda: rec.last_status()["reason"] == "instruction 'home'", 30, "the home command")
    wait_for(lambda: "IDLE" in rec.states[n_states:], 90, "the controller homed (IDLE)")
    assert np.linalg.norm(rec.tcp() - HOME_POSITION) < 5e-3
    reply = call_trigger(rec.reset, 30)  # the cube dropped at home: all objects back
    assert reply is not None, "sim/reset_objects did not answer"
    seed = int(reply.message.rsplit(" ", 1)[-1])  # "objects re-placed with seed N"
    rec.say("pick up the green ball")
    wait_for(lambda: rec.last_status()["target"] == "green ball", 30, "the first episode")
    first = rec.last_status()["episode"]
    with rec.lock:
        n = len(rec.chunks)
    wait_for(lambda: len(rec.chunks) >= n + 2, 60, "chunks for the green ball")
    for text in ("", "x" * 300, "pick up\x07 the ball"):
        rec.say(text)
    wait_for(lambda: rec.last_status()["reason"].startswith("refused non_printable"), 30, "the refusals")
    s = rec.last_status()
    assert (s["episode"], s["target"], s["phase"]) == (first, "green ball", "running")
    with rec.lock:
        refused_reasons = [x["reason"].split(":")[0] for x in rec.status[-3:]]
        n = len(rec.chunks)
    assert refused_reasons == ["refused empty", "refused too_long", "refused non_printable"]
    wait_for(lambda: len(rec.chunks) >= n + 2, 60, "chunks to keep flowing after the refusals")

    other = "orange puck"
    rec.set_target.publish(String(data=other))
    rec.say(other)
    wait_for(lambda: rec.last_status()["episode"] == first + 1, 30, "the new episode")
    with rec.lock:
        replaced = [x for x in rec.status if x["episode"] == first and x["phase"] == "replaced"]
    assert replaced and replaced[0]["reason"] == f"instruction {other!r}"
    assert rec.last_status()["target"] == other
    goal = _object_xy(other, seed)
    wait_for(lambda: np.linalg.norm(rec.tcp()[:2] - goal) < 0.02, 120, f"the TCP above the {other}")


def test_stop_holds_the_arm(stack, rec):
    rec.say("pick up the blue cylinder")
    wait_for(lambda: rec.last_status()["target"] == "blue cylinder" and rec.last_status()["phase"] == "running",
             30, "the episode")
    with rec.lock:
        n = len(rec.chunks)
    wait_for(lambda: len(rec.chunks) >= n + 2, 60, "chunks")
    rec.say("stop")
    wait_for(lambda: rec.last_status()["phase"] == "stopped", 30, "the stop")
    with rec.lock:
        at_stop = len(rec.chunks)
    import time
    time.sleep(3.0)
    with rec.lock:
        assert len(rec.chunks) <= at_stop + 1, "at most the chunk already being computed"
        recent = [p for t, p in rec.pose_list[-100:]]
    assert np.ptp(np.array(recent), axis=0).max() < 2e-3, "the arm is still"


def test_cli_talks_to_the_running_stack(stack, rec):
    import sys

    def cli(*args):
        """Run again when the command matched nothing of the stack, or (status) the policy's
        status did not reach it in time."""
        return run_command([sys.executable, "-m", "graspvla_ros.cli", *args, "--timeout", "20"], 180,
                           answered=lambda out: args[0] != "status" or "policy: {" in out.stdout)

    out = cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    policy_line, controller_line = (ln for ln in out.stdout.splitlines() if ln.startswith(("policy: ", "controller: ")))
    policy_status = json.loads(policy_line.split(": ", 1)[1])
    assert policy_status["backend"] == "expert" and policy_status["phase"] in (
        "idle", "running", "succeeded", "timeout", "stopped", "homed", "replaced"), policy_status
    assert controller_line.split(": ", 1)[1] in ("IDLE", "RUNNING", "HOLDING")
    out = cli("say", "pick up the")
    assert out.returncode == 1 and '"refused empty' in out.stdout, out.stdout + out.stderr


def test_arm_faults_hold_the_graph_and_the_next_instruction_moves_the_arm(stack, rec, ros_node):
    """Through the whole sim graph (sim_world's sim/inject_fault): a user stop pressed mid-episode,
    then a lost link. The controller says so on its state (USER_STOPPED, DISCONNECTED), its home
    service answers (refusing, with the state's name), no node dies, and once each fault is gone
    (released, link back) the controller is IDLE and the next instruction moves the arm again."""
    inject = ros_node.create_publisher(String, "sim/inject_fault", 10)
    wait_for(lambda: inject.get_subscription_count() > 0, 60, "sim_world's sim/inject_fault subscription")
    home = ros_node.create_client(Trigger, "/controller/home")

    def moves(what):
        start = rec.tcp()
        wait_for(lambda: np.linalg.norm(rec.tcp() - start) > 0.01 or stack.failed(), 120, what)
        assert not stack.failed(), stack.failed()

    for fault, end, state in (("user_stop", "user_stop_release", "USER_STOPPED"),
                              ("network_drop:600", "network_restore", "DISCONNECTED")):
        rec.say("pick up the red cube")
        moves(f"the arm moving before {fault}")
        with rec.lock:
            seen = len(rec.states)
        inject.publish(String(data=fault))
        wait_for(lambda: state in rec.states[seen:], 60, f"{state} after {fault}")
        reply = call_trigger(home, 30)
        assert reply is not None and not reply.success and state in reply.message, reply
        with rec.lock:
            seen = len(rec.states)
        inject.publish(String(data=end))
        wait_for(lambda: "IDLE" in rec.states[seen:], 60, f"IDLE once {fault} ended ({end})")
        assert not stack.failed(), stack.failed()
        rec.say("pick up the green ball")
        moves(f"the next instruction to move the arm after {fault}")
    rec.say("stop")

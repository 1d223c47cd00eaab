"""Operator commands of the ``graspvla`` CLI: talk to a running stack as short-lived ROS nodes.

    graspvla say "pick up the red cube"   # a new episode (or "stop", "home")
    graspvla stop | home | calibration-pose | estop | release | status
    graspvla demo [--backend graspvla --tiny]  # make demo

Every command waits at most ``--timeout`` s for the stack to appear and says so when nothing
answers, instead of hanging. Run them where the stack runs (inside `scripts/isolated` here).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from typing import NoReturn

from graspvla_ros.interfaces import (CALIBRATION_POSE, CONTROLLER, CONTROLLER_DIAGNOSTICS, CONTROLLER_STATE,
                                     DIAGNOSTICS, ESTOP, HOLD, HOME, INSTRUCTION, POLICY_DIAGNOSTICS, RELEASE, STATUS,
                                     under)

DEFAULT_TIMEOUT = 5.0


class _Session:
    """One rclpy node spun on a background thread for the life of a command."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"graspvla_cli_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    @classmethod
    def run(cls, command) -> NoReturn:
        """`command(session)` → its exit code, with which the process then exits at once: a
        command leaves the ROS graph by exiting, without tearing its participant down. Fast
        DDS 3.2's TCP transport (LARGE_DATA) can deadlock in that teardown, in
        TCPChannelResourceBasic::disconnect against a channel's blocked reader, while rclpy holds
        the GIL, so no timeout in Python could end it (seen on a loaded machine); the stack's
        nodes drop the participant when its lease ends."""
        try:
            code = command(cls())
        except KeyboardInterrupt:
            code = 130
        except Exception:  # said like any crash, then the same exit
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def latched(self, msg_type, topic: str, depth: int = 20) -> list:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        got: list = []
        qos = QoSProfile(depth=depth, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def trigger(self, name: str, timeout: float, call_timeout: float) -> int:
        """Call the Trigger service `name`; 0 on success, 1 otherwise, with a message."""
        from std_srvs.srv import Trigger

        from graspvla_ros.nodes.common import call_trigger

        client = self.node.create_client(Trigger, name)
        reply = call_trigger(client, timeout + call_timeout, discovery=timeout, unseen_timeout=2 * timeout)
        if reply is None:
            if client.service_is_ready():
                print(f"{name}: no answer within {timeout + call_timeout:g} s")
            else:
                print(f"no controller is running: {name} did not answer within {2 * timeout:g} s")
            return 1
        print(f"{name}: {reply.message}")
        return 0 if reply.success else 1


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _say(session: _Session, text: str, timeout: float) -> int | None:
    """Publish an instruction to the policy and print the status it answers with; None when no
    policy listens."""
    from std_msgs.msg import String

    statuses = session.latched(String, STATUS)
    pub = session.node.create_publisher(String, INSTRUCTION, 10)
    if not _wait(lambda: pub.get_subscription_count() > 0, timeout):
        return None
    # The policy's latched status first (it publishes one at start), so it is not taken for the
    # answer; the answer names the instruction or says it was refused.
    _wait(lambda: statuses, timeout)
    seen = len(statuses)

    def answer() -> dict | None:
        for msg in statuses[seen:]:
            status = json.loads(msg.data)
            reason = status.get("reason", "")
            if reason == f"instruction {text!r}" or reason.startswith("refused "):
                return status
        return None
    # The publisher can see the policy's subscription before that subscription has matched the
    # publisher (DDS discovery runs both ways): a message sent then is lost, so send it again
    # when no answer comes.
    for attempt in range(2):
        pub.publish(String(data=text))
        if _wait(lambda: answer() is not None, timeout / 2):
            break
    else:
        print(f"sent {text!r}; the policy did not answer on {STATUS} within {timeout:g} s")
        return 1
    status = answer()
    print(json.dumps(status))
    return 1 if status["reason"].startswith("refused") else 0


def _no_policy(timeout: float) -> int:
    print(f"no policy is running: nothing subscribes to {INSTRUCTION} within {timeout:g} s "
          "(start the stack, e.g. `python -m graspvla_ros.bringup sim`)")
    return 1


def _cmd_say(args) -> int:
    def say(s: _Session) -> int:
        code = _say(s, args.text, args.timeout)
        return _no_policy(args.timeout) if code is None else code
    return _Session.run(say)


def _cmd_stop(args) -> int:
    """"stop" through the policy (ends its episode and holds); without a policy, hold directly."""
    def stop(s: _Session) -> int:
        code = _say(s, "stop", args.timeout)
        return s.trigger(under(CONTROLLER, HOLD), args.timeout, args.timeout) if code is None else code
    return _Session.run(stop)


def _cmd_home(args) -> int:
    def home(s: _Session) -> int:
        code = _say(s, "home", args.timeout)
        return s.trigger(under(CONTROLLER, HOME), args.timeout, 60.0) if code is None else code
    return _Session.run(home)


def _cmd_calibration_pose(args) -> int:
    """Like home, to the camera calibration joint configuration (calibration/README.md)."""
    def calibration_pose(s: _Session) -> int:
        code = _say(s, "stop", args.timeout)
        return s.trigger(under(CONTROLLER, CALIBRATION_POSE), args.timeout, 60.0) if code in (None, 0) else code
    return _Session.run(calibration_pose)


def _trigger(service: str):
    def run(args) -> int:
        return _Session.run(lambda s: s.trigger(under(CONTROLLER, service), args.timeout, args.timeout))
    return run


def _cmd_status(args) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    def status(s: _Session) -> int:
        state_topic = under(CONTROLLER, CONTROLLER_STATE)
        status, state = s.latched(String, STATUS), s.latched(String, state_topic)
        diagnostics: dict[str, dict[str, str]] = {}
        s.node.create_subscription(DiagnosticArray, DIAGNOSTICS, lambda m: diagnostics.update(
            {d.name: {kv.key: kv.value for kv in d.values} for d in m.status}), 50)
        _wait(lambda: status and state, args.timeout)
        if not status and not state:
            print(f"no stack is running: nothing on {STATUS} or {state_topic} within {args.timeout:g} s")
            return 1

        def line(got: list, topic: str) -> str:
            if got:
                return got[-1].data
            if s.node.count_publishers(topic):
                return f"running, but its {topic} did not arrive within {args.timeout:g} s"
            return f"not seen within {args.timeout:g} s (not running, or not yet discovered: a longer --timeout)"
        print(f"policy: {line(status, STATUS)}")
        print(f"controller: {line(state, state_topic)}")
        _wait(lambda: {POLICY_DIAGNOSTICS, CONTROLLER_DIAGNOSTICS} <= diagnostics.keys(), args.timeout)
        print_chain(diagnostics.get(POLICY_DIAGNOSTICS, {}), diagnostics.get(CONTROLLER_DIAGNOSTICS, {}))
        return 0
    return _Session.run(status)


def print_chain(policy: dict[str, str], controller: dict[str, str]) -> None:
    """The latency chain of both nodes' /diagnostics as a table; a stage past its budget is marked."""
    from graspvla_ros.latency import chain_rows

    if "robot_clock_offset" in policy:
        print(f"robot clock − policy clock: {policy['robot_clock_offset']} (measured by ping-pong; the policy's "
              "stages below are moved onto the robot's clock by it)")
    rows = chain_rows({**policy, **controller})
    if not rows:
        print("latency chain: no cycle yet" + ("" if policy and controller else
                                                " (no /diagnostics from " + " or ".join(
                                                    n for n, d in (("the policy", policy), ("the controller", controller))
                                                    if not d) + ")"))
        return
    both = {**controller, **policy}   # the window of the policy's cycles, else of the controller's chunks
    window = (f"the {both.get('latency.window_s', '?')} s of cycles up to the last, "
              f"{both.get('latency.last_s_ago', '?')} s ago")
    print(f"latency chain, ms after the views' exposure (robot host's clock; {window}):")
    print(f"  {'stage':<36}{'p50':>8}{'p99':>8}{'budget':>8}")
    for stage, p50, p99, over in rows:
        print(f"  {stage.what:<36}{p50:8.1f}{p99:8.1f}{stage.budget_ms:8.0f}" + ("  OVER BUDGET" if over else ""))
    for stage, _, p99, over in rows:
        if over:
            print(f"warning: {stage.what}: p99 {p99:.0f} ms after the exposure, budget {stage.budget_ms:.0f} ms")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The operator's subcommands of `graspvla` (graspvla_ros.cli)."""
    def add(name: str, help: str, run) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help=f"s to wait for the stack to answer (default {DEFAULT_TIMEOUT:g})")
        p.set_defaults(run=run)
        return p

    add("say", 'send an instruction: "pick up the red cube", a bare object name, "stop" or "home"',
        _cmd_say).add_argument("text")
    add("stop", "end the episode and hold the arm", _cmd_stop)
    add("home", "end the episode and move the arm home", _cmd_home)
    add("calibration-pose", "end the episode and move the arm to the camera calibration joint configuration",
        _cmd_calibration_pose)
    add("estop", "latched stop of the arm (controller)", _trigger(ESTOP))
    add("release", "release the e-stop (controller)", _trigger(RELEASE))
    add("status", "the policy's status and the controller's state", _cmd_status)
    demo = sub.add_parser("demo", help="the whole stack in simulation grasps 3 objects on request (make demo)")
    demo.add_argument("--backend", choices=("expert", "graspvla"), default="expert")
    demo.add_argument("--tiny", action="store_true", help="graspvla backend on a tiny random checkpoint")
    demo.add_argument("--runtime", default="torch", help="graspvla backend runtime (torch, onnxruntime)")
    demo.set_defaults(run=_cmd_demo)


def _cmd_demo(args) -> int:
    from graspvla_ros.demo import main

    return main(["--backend", args.backend, "--runtime", args.runtime, *(["--tiny"] if args.tiny else [])])

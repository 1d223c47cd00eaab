"""``graspvla doctor``: is this machine ready to run the robot graph? One line per check, OK / WARN /
FAIL, and for each that is not OK the fix; exit status 1 when anything FAILs.

    graspvla doctor robot_ip:=172.16.0.2 front_serial:=<serial> side_serial:=<serial> \\
        backend:=graspvla checkpoint:=<dir> llm_dir:=<dir>

It takes the robot graph's arguments (`name:=value`, as `bringup robot` and `ros2 launch` take
them, or `--name value`) and everything else from config/*.yaml, as the graph's nodes would.
Checks, in order: the robot (FCI and its protocol, Desk's end effector, the robot's mode), the
realtime kernel, each camera (present, USB 3, firmware, 640×480 @ 30 Hz colour, frame metadata)
and its calibration, the checkpoint, tokenizer and runtime, and DDS (the transport for this
distro, the ROS domain, the clocks of two hosts). Run it before the graph: the cameras and the
robot take one client at a time. What to do on each FAIL: docs/bringup.md.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from graspvla_ros.checks import FAIL, OK, WARN, Check, guarded
from graspvla_ros.graph import GRAPH_ARGUMENTS

# The robot graph's arguments (graph.robot_graph), with the type its node parameter takes.
ROBOT_ARGUMENTS = {a.name: a for a in GRAPH_ARGUMENTS.values() if "robot" in a.graphs}  # the robot graph's own
CAMERAS = ("front", "side")
NAME_WIDTH = 17  # the longest check name ("front calibration")


def config_values(path: Path) -> dict[str, Any]:
    """{dotted parameter name: value} of a config/<node>.yaml (`/**: ros__parameters:`)."""
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f)
    try:
        params = doc["/**"]["ros__parameters"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected `/**: ros__parameters:` (a config/*.yaml of this package)") from None

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out
    return flat(params)


def parse_arguments(pairs: Iterable[str], flags: dict[str, str | None]) -> dict[str, Any]:
    """The robot graph's arguments from `name:=value` words and `--name value` flags, typed;
    anything else, or one given twice with two values, is a ValueError naming it."""
    given: dict[str, str] = {k: v for k, v in flags.items() if v is not None}
    for pair in pairs:
        name, sep, value = pair.partition(":=")
        if not sep or name not in ROBOT_ARGUMENTS:
            raise ValueError(f"unknown argument {pair!r}: the doctor takes the robot graph's arguments "
                             f"{', '.join(f'{a}:=...' for a in ROBOT_ARGUMENTS)}")
        if given.get(name, value) != value:
            raise ValueError(f"{name} given twice: {given[name]!r} and {value!r}")
        given[name] = value
    return {name: ROBOT_ARGUMENTS[name].value(value) for name, value in given.items()}


def graph_settings(arguments: dict[str, Any], config_dir: Path):
    """(ControllerSettings, PolicySettings) as the robot graph's nodes would start with them:
    config/controller.yaml and config/policy.yaml, with the arguments given on top."""
    from graspvla_ros.control.settings import ControllerSettings
    from graspvla_ros.policy.settings import PolicySettings
    from graspvla_ros.settings import build

    def given(node: str) -> dict[str, Any]:
        return {ROBOT_ARGUMENTS[k].param: v for k, v in arguments.items() if ROBOT_ARGUMENTS[k].node == node}
    controller = {**config_values(config_dir / "controller.yaml"), **given("controller")}
    policy = {**config_values(config_dir / "policy.yaml"), **given("policy")}
    return build(ControllerSettings, controller), build(PolicySettings, policy)


def doctor_checks(arguments: dict[str, Any], *, calibration_dir: Path | None = None, other_host: str | None = None,
                  devices: Callable[[], Iterable] | None = None, camera_timeout: float = 5.0) -> Iterator[Check]:
    """Every check, in order, as each finishes. `devices` lists the candidate cameras (default:
    every RealSense on USB; tests hand in software devices)."""
    from graspvla_ros.calibration.checks import calibration_check
    from graspvla_ros.calibration.nominal import CALIBRATION_DIR
    from graspvla_ros.camera.checks import camera_checks
    from graspvla_ros.control.checks import (may_use_realtime_priority, realtime_check, realtime_kernel,
                                             robot_checks)
    from graspvla_ros.dds import dds_checks
    from graspvla_ros.graph import CONFIG_DIR
    from graspvla_ros.model.checks import model_checks

    controller, policy = graph_settings(arguments, CONFIG_DIR)
    yield from guarded("robot", lambda: robot_checks(controller))
    yield from guarded("realtime", lambda: [realtime_check(controller, realtime_kernel(), may_use_realtime_priority())])
    camera_options = {"timeout": camera_timeout, **({"devices": devices} if devices is not None else {})}
    for camera in CAMERAS:
        serial = arguments.get(f"{camera}_serial", "")
        yield from guarded(f"{camera} camera", lambda: camera_checks(camera, serial, **camera_options))
        yield from guarded(f"{camera} calibration",
                           lambda: [calibration_check(camera, calibration_dir or CALIBRATION_DIR)])
    yield from guarded("model", lambda: model_checks(policy.backend, policy.checkpoint, policy.llm_dir,
                                                     policy.runtime, policy.onnx_dir, policy.rate_hz,
                                                     controller.safety.max_chunk_age))
    yield from guarded("DDS", lambda: dds_checks(other_host))


def line(check: Check) -> str:
    """The check's line, and below it, when not OK, its fix."""
    text = f"{check.status:<4}  {check.name:<{NAME_WIDTH}}  {check.what}"
    return text + (f"\n{'':<4}  {'':<{NAME_WIDTH}}  fix: {check.fix}" if check.fix else "")


def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in (FAIL, WARN, OK)}
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    return text + (": fix each FAIL before starting the robot graph" if counts[FAIL] else "")


def _doctor(args: argparse.Namespace) -> int:
    arguments = parse_arguments(args.arguments, {name: getattr(args, name) for name in ROBOT_ARGUMENTS})
    if args.camera_timeout <= 0:
        raise ValueError("--camera-timeout must be positive")
    checks = []
    for check in doctor_checks(arguments, calibration_dir=args.calibration_dir, other_host=args.other_host,
                               camera_timeout=args.camera_timeout):
        checks.append(check)
        print(line(check), flush=True)
    print(summary(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`graspvla doctor` (graspvla_ros.cli)."""
    p = sub.add_parser("doctor", help="check this machine's set-up for the robot graph: robot, cameras, model, DDS",
                       description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("arguments", nargs="*", metavar="name:=value",
                   help=f"the robot graph's arguments: {', '.join(ROBOT_ARGUMENTS)}")
    for name in ROBOT_ARGUMENTS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="VALUE", help=f"same as {name}:=VALUE")
    p.add_argument("--calibration-dir", type=Path, help="where calibration/<camera>.yaml are (default: "
                   "$GRASPVLA_CALIBRATION_DIR, else the package's calibration/)")
    p.add_argument("--other-host", help="another host of the stack (e.g. the policy's GPU machine)")
    p.add_argument("--camera-timeout", type=float, default=5.0, help="s to wait for each camera's first frame "
                   "(default 5)")
    p.set_defaults(run=_doctor)

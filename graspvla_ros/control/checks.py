"""Set-up checks of the robot (`graspvla doctor`): the robot answers on FCI in the protocol of the
installed franky/libfranka, Desk's end effector is the one `ee_offset` (and so the TCP) assumes,
the robot's mode, and a realtime kernel where the controller runs (or `realtime: false`)."""
from __future__ import annotations

import ipaddress
import os
import re
import resource
from pathlib import Path

from graspvla_ros.checks import Check, fail, ok, warn
from graspvla_ros.control.connection import end_effector_problem
from graspvla_ros.control.franky_adapter import FrankaProtocolMismatch, FrankyArm
from graspvla_ros.control.settings import ControllerSettings

FRANKY_INDEX = "https://timschneider42.github.io/franky/whl/by-robot-server-version"
LIBFRANKA_RTPRIO = 99  # libfranka runs its control thread at the highest SCHED_FIFO priority


def installed_versions() -> str:
    """'libfranka X (franky Y)': the libfranka that franky loaded (from the process's mapped
    libraries) and franky's package version."""
    from importlib import metadata

    import franky  # noqa: F401  (loads libfranka)

    libfranka = "unknown"
    with open("/proc/self/maps") as maps:
        for line in maps:
            found = re.search(r"libfranka[\w.-]*?\.so\.(\d+\.\d+\.\d+)", line)
            if found:
                libfranka = found.group(1)
                break
    try:
        franky_version = metadata.version("franky-control")
    except metadata.PackageNotFoundError:  # built from source under another name
        franky_version = "version unknown"
    return f"libfranka {libfranka} (franky {franky_version})"


def robot_checks(settings: ControllerSettings) -> list[Check]:
    """Connect once (no retry, no realtime enforcement: that is `realtime_check`'s), then read
    Desk's end effector and the robot's mode."""
    import franky

    ip, versions = settings.robot_ip, installed_versions()
    try:
        arm = FrankyArm(ip, realtime=False, dynamics_factor=settings.relative_dynamics_factor,
                        tcp_offset=settings.tcp_offset, compliance=settings.compliance, contact=settings.contact,
                        limit_rate=settings.limit_rate)
    except FrankaProtocolMismatch as err:
        return [fail("robot", str(err), f"install the franky of the robot's server version: pip install --no-deps "
                     f"--force-reinstall --index-url {FRANKY_INDEX}/<N>/ franky-control (docs/bringup.md)")]
    except franky.CommandException as err:  # it answered, but refused the connection's settings
        return [fail("robot", f"the robot at {ip} answers but refused a command at connect: {err}", "release the "
                     "user stop and clear the robot's errors in Desk (it takes commands in Idle), then run again")]
    except Exception as err:  # franky raises several types here; each means the same to the person
        return [fail("robot", f"the robot at {ip} does not answer on FCI with {versions}: {type(err).__name__}: {err}",
                     f"check the cable and this PC's address (ping {ip}), that FCI is activated in Desk with the "
                     "joints unlocked, and robot_ip")]
    checks = [ok("robot", f"FCI at {ip} answers in the protocol of {versions}")]
    problem = end_effector_problem(arm, settings.ee_offset)
    checks.append(fail("end effector", problem, "in Desk set the end effector to the Franka Hand, or set ee_offset in "
                       "config/controller.yaml to the flange → end-effector distance of what is mounted") if problem
                  else ok("end effector", f"Desk's end effector is {settings.ee_offset:g} m along the flange's z, as "
                          f"ee_offset says (the TCP is tcp_offset {settings.tcp_offset:g} m beyond it)"))
    checks.append(mode_check(arm.robot_mode(), arm.errors()))
    return checks


def mode_check(mode: str, errors: list[str]) -> Check:
    """libfranka's robot mode and current errors, as the controller will find them at start."""
    if mode == "UserStopped":
        return warn("robot mode", "the user stop is pressed", "release the user stop before starting the stack")
    if errors:
        return warn("robot mode", f"mode {mode}, errors: {', '.join(errors)}", "clear them in Desk (the controller "
                    "also recovers at start); if they come back, read them in Desk's log")
    if mode in ("Idle", "Move"):
        return ok("robot mode", f"{mode}, no errors")
    return warn("robot mode", f"mode {mode}: the arm takes FCI motions in Idle", "unlock the joints, release the "
                "guiding button and activate FCI in Desk")


def realtime_kernel() -> bool:
    """This machine runs a realtime (PREEMPT_RT) kernel."""
    try:
        if Path("/sys/kernel/realtime").read_text().strip() == "1":
            return True
    except OSError:  # no such file on a kernel without PREEMPT_RT
        pass
    return "PREEMPT_RT" in os.uname().version


def may_use_realtime_priority() -> bool:
    """This process may run libfranka's control thread at its SCHED_FIFO priority."""
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or soft >= LIBFRANKA_RTPRIO


def _on_this_machine(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def realtime_check(settings: ControllerSettings, rt_kernel: bool, rt_priority: bool) -> Check:
    """The controller's `realtime` setting against this kernel and this user's limits (the
    controller runs where the doctor runs)."""
    kernel = f"kernel {os.uname().release} ({'PREEMPT_RT' if rt_kernel else 'not realtime'})"
    rt_fix = "boot a PREEMPT_RT kernel and set realtime: true in config/controller.yaml (docs/bringup.md)"
    if _on_this_machine(settings.robot_ip):
        return ok("realtime", f"{kernel}; the robot at {settings.robot_ip} is a simulator on this machine: it needs "
                  "no realtime kernel")
    if settings.realtime and not rt_kernel:
        return fail("realtime", f"{kernel}, but realtime: true: franky refuses to connect",
                    "boot a PREEMPT_RT kernel (docs/bringup.md), or set realtime: false in config/controller.yaml")
    if settings.realtime and not rt_priority:
        return fail("realtime", f"realtime: true, but this user may not use realtime priority {LIBFRANKA_RTPRIO} "
                    f"(ulimit -r: {resource.getrlimit(resource.RLIMIT_RTPRIO)[0]})", "add the user to a realtime "
                    "group with rtprio 99 in /etc/security/limits.conf and log in again (docs/bringup.md)")
    if settings.realtime:
        return ok("realtime", f"{kernel}, realtime: true")
    if rt_kernel:
        return warn("realtime", f"{kernel}, but realtime: false: franky's 1 kHz loop runs without realtime priority",
                    "set realtime: true in config/controller.yaml")
    return warn("realtime", f"{kernel} and realtime: false: franky's 1 kHz loop can miss cycles (communication "
                "constraints violation reflexes)", rt_fix)

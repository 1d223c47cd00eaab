"""The DDS set-up the stack's images need, checked for this ROS installation (`graspvla doctor`).

The graphs set `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA` for every node (graph.ENVIRONMENT): with
Fast DDS's default transports most 640×480 images are dropped. Fast DDS reads that variable from
2.13 on; ROS 2 Humble's (2.6) ignores it silently, so there the transports must come from an XML
profile, or the RMW must be Cyclone DDS with a large socket receive buffer. Also: a ROS domain of
the stack's own, and (two hosts) one clock. And tf2_msgs, for RViz's /tf.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from graspvla_ros.checks import Check, fail, ok, warn

LARGE_DATA_SINCE = (2, 13)
LARGE_DATA = ("LARGE_DATA", "LARGE_DATAv6")
CYCLONE_URI = '<CycloneDDS><Domain><Internal><SocketReceiveBufferSize min="10MB"/></Internal></Domain></CycloneDDS>'
CYCLONE_RMEM_MAX = 2147483647  # the ROS 2 docs' "DDS tuning" value for net.core.rmem_max
MIN_RMEM_MAX = 10 * 2 ** 20    # what CYCLONE_URI's 10 MB buffer needs the kernel to allow
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
SAFE_DOMAINS = range(0, 102)  # ROS 2 docs: 0–101 never collide with Linux's ephemeral ports
VALID_DOMAINS = range(0, 233)
CYCLONE_FIX = (f"export RMW_IMPLEMENTATION=rmw_cyclonedds_cpp CYCLONEDDS_URI='{CYCLONE_URI}' and sudo sysctl -w "
               f"net.core.rmem_max={CYCLONE_RMEM_MAX}")
HUMBLE_FIX = ("export FASTRTPS_DEFAULT_PROFILES_FILE=<the Fast DDS profile of docs/bringup.md, \"DDS on Humble\">, "
              f"or use Cyclone DDS: {CYCLONE_FIX}")


def library_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where this ROS installation's libraries are: LD_LIBRARY_PATH, every AMENT_PREFIX_PATH
    entry's lib/ (apt: /opt/ros/<distro>/lib), and this Python's prefix (the PyPI wheels)."""
    dirs = [Path(p) for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    dirs += [Path(p) / "lib" for p in env.get("AMENT_PREFIX_PATH", "").split(":") if p]
    return dirs + [Path(sys.prefix) / "lib"]


def fastdds_version(dirs: list[Path]) -> tuple[int, ...] | None:
    """The Fast DDS version of the first directory holding libfastdds (≥ 3) or libfastrtps (2.x)."""
    for d in dirs:
        versions = [tuple(int(n) for n in m.group(1).split("."))
                    for f in (*d.glob("libfastdds.so.*"), *d.glob("libfastrtps.so.*"))
                    if (m := re.search(r"\.so\.(\d+(?:\.\d+)*)$", f.name))]
        if versions:
            return max(versions, key=lambda v: (len(v), v))
    return None


def _profile_replaces_transports(path: str) -> bool:
    """The Fast DDS XML profile at `path` defines a transport and turns the builtin ones off."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return False
    tags = {e.tag.rsplit("}", 1)[-1]: (e.text or "").strip() for e in root.iter()}
    return "transport_descriptor" in tags and tags.get("useBuiltinTransports") == "false"


def _cyclone_config(uri: str) -> str:
    """CYCLONEDDS_URI's XML: inline, or the files it names (file://… or a path, comma-separated)."""
    if uri.lstrip().startswith("<"):
        return uri
    text = []
    for part in filter(None, (p.strip() for p in uri.split(","))):
        try:
            text.append(Path(part.removeprefix("file://")).read_text())
        except OSError:
            pass
    return "\n".join(text)


def transport_check(env: Mapping[str, str], fastdds: tuple[int, ...] | None, rmem_max: int) -> Check:
    """Do the transport settings for 640×480 images take effect with this RMW and DDS version?"""
    rmw = env.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp"
    distro = f"ROS 2 {env['ROS_DISTRO']}, " if env.get("ROS_DISTRO") else ""
    if rmw == "rmw_cyclonedds_cpp":
        buffer = "SocketReceiveBufferSize" in _cyclone_config(env.get("CYCLONEDDS_URI", ""))
        if buffer and rmem_max >= MIN_RMEM_MAX:
            return ok("DDS transport", f"{distro}Cyclone DDS with a larger socket receive buffer (rmem_max {rmem_max})")
        return fail("DDS transport", f"{distro}Cyclone DDS " + ("with" if buffer else "without") + " a "
                    f"SocketReceiveBufferSize in CYCLONEDDS_URI, net.core.rmem_max {rmem_max}: images are dropped",
                    f"export CYCLONEDDS_URI='{CYCLONE_URI}' and sudo sysctl -w net.core.rmem_max={CYCLONE_RMEM_MAX}")
    if not rmw.startswith("rmw_fastrtps"):
        return warn("DDS transport", f"{distro}RMW {rmw}: the stack's image transport is set up for Fast DDS and "
                    "Cyclone DDS only", f"unset RMW_IMPLEMENTATION (Fast DDS), or use Cyclone DDS: {CYCLONE_FIX}")
    if fastdds is None:
        return warn("DDS transport", "no Fast DDS library found (LD_LIBRARY_PATH, AMENT_PREFIX_PATH, this Python)",
                    "source /opt/ros/<distro>/setup.bash before running the doctor")
    version = ".".join(map(str, fastdds))
    if fastdds >= LARGE_DATA_SINCE:
        shell = env.get("FASTDDS_BUILTIN_TRANSPORTS")
        if shell and shell not in LARGE_DATA:
            return warn("DDS transport", f"{distro}Fast DDS {version}, FASTDDS_BUILTIN_TRANSPORTS={shell} in this "
                        "shell: bringup hands it to the nodes instead of LARGE_DATA",
                        "unset FASTDDS_BUILTIN_TRANSPORTS (or set it to LARGE_DATA)")
        return ok("DDS transport", f"{distro}Fast DDS {version}: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (set by the "
                  "launch file and bringup for every node) takes effect")
    profiles = [env[v] for v in PROFILE_VARIABLES if env.get(v)]
    if any(_profile_replaces_transports(p) for p in profiles):
        return ok("DDS transport", f"{distro}Fast DDS {version} ignores LARGE_DATA; the profile {profiles[0]} "
                  "replaces its builtin transports")
    return fail("DDS transport", f"{distro}Fast DDS {version} ignores FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA silently "
                "(it needs ≥ 2.13): most 640×480 images would be dropped", HUMBLE_FIX)


def domain_check(env: Mapping[str, str]) -> Check:
    """ROS_DOMAIN_ID: the stack's own domain, the same on each of its hosts."""
    fix = "export ROS_DOMAIN_ID=<0–101, the same on every host of the stack and no other machine's> in each shell"
    value = env.get("ROS_DOMAIN_ID", "")
    if not value:
        return warn("ROS domain", "ROS_DOMAIN_ID unset: domain 0, which every ROS 2 machine on the network joins",
                    fix)
    if not value.isdigit() or int(value) not in VALID_DOMAINS:
        return fail("ROS domain", f"ROS_DOMAIN_ID={value!r} is not a domain (0–232)", fix)
    if int(value) not in SAFE_DOMAINS:
        return warn("ROS domain", f"ROS_DOMAIN_ID={value}: domains above 101 can collide with Linux's ephemeral "
                    "ports", fix)
    return ok("ROS domain", f"ROS_DOMAIN_ID={value}")


def clock_check(other_host: str | None) -> Check:
    """Two hosts: nothing decides on the other host's stamps taken on trust; the policy measures
    the offset to the robot's clock while the stack runs (policy.link.ClockOffset)."""
    if other_host is None:
        return ok("clocks", "one host (--other-host names a second one, e.g. the policy's GPU machine)")
    return ok("clocks", f"two hosts ({other_host}): the policy measures the offset to the robot host's clock while "
              "the stack runs (a ping-pong with the controller; `graspvla status` shows it) and judges the views' age "
              "with it; sync both to one time source (chrony or PTP) so that their bags line up")


def rmem_max() -> int:
    """net.core.rmem_max of this network namespace (0 when unreadable)."""
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return 0


def tf_check(found: bool | None = None) -> Check:
    """tf2_msgs: the /tf and /tf_static the nodes send for RViz and Foxglove (nothing else needs it)."""
    if found is None:
        found = importlib.util.find_spec("tf2_msgs") is not None
    if found:
        return ok("TF", "tf2_msgs found: the controller sends /tf base → TCP, the cameras /tf_static")
    return warn("TF", "no tf2_msgs package: /tf and /tf_static are off, RViz/Foxglove show no transforms "
                "(/graspvla/ee_pose still carries the TCP pose)",
                "apt ROS: sudo apt install ros-$ROS_DISTRO-tf2-msgs; the PyPI wheels' venv: "
                "scripts/build_tf2_msgs <venv> (`make venv` runs it)")


def dds_checks(other_host: str | None = None, env: Mapping[str, str] = os.environ) -> list[Check]:
    return [transport_check(env, fastdds_version(library_dirs(env)), rmem_max()), domain_check(env),
            clock_check(other_host), tf_check()]

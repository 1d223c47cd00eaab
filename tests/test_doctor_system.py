"""The doctor's checks of the machine itself: the DDS transport for each distro's Fast DDS (and
Cyclone DDS), the ROS domain, two hosts' clocks, and the realtime kernel against the
controller's `realtime` setting."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from graspvla_ros import dds
from graspvla_ros.checks import FAIL, OK, WARN
from graspvla_ros.control.checks import realtime_check
from graspvla_ros.control.settings import ControllerSettings


def test_humble_fast_dds_ignores_large_data_and_the_fix_names_both_ways_out():
    check = dds.transport_check({"ROS_DISTRO": "humble"}, (2, 6, 9), 212992)
    assert check.status == FAIL and "ROS 2 humble, Fast DDS 2.6.9 ignores" in check.what
    assert "FASTRTPS_DEFAULT_PROFILES_FILE=" in check.fix and f"CYCLONEDDS_URI='{dds.CYCLONE_URI}'" in check.fix
    assert "sudo sysctl -w net.core.rmem_max=2147483647" in check.fix
    # a profile that keeps the builtin transports changes nothing
    assert dds.transport_check({"FASTRTPS_DEFAULT_PROFILES_FILE": "/nonexistent.xml"}, (2, 6, 9), 0).status == FAIL


def test_newer_fast_dds_takes_large_data_unless_the_shell_overrides_it():
    assert dds.transport_check({"ROS_DISTRO": "jazzy"}, (2, 14, 4), 0).status == OK
    assert dds.transport_check({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, (3, 2, 2), 0).status == OK
    check = dds.transport_check({"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}, (3, 2, 2), 0)
    assert check.status == WARN and "UDPv4" in check.what and "unset FASTDDS_BUILTIN_TRANSPORTS" in check.fix
    assert dds.transport_check({}, None, 0).status == WARN


def test_cyclone_dds_needs_the_buffer_in_its_config_and_the_kernel(tmp_path):
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert dds.transport_check(cyclone, None, dds.CYCLONE_RMEM_MAX).status == FAIL
    config = tmp_path / "cyclonedds.xml"
    config.write_text(dds.CYCLONE_URI)
    assert dds.transport_check({**cyclone, "CYCLONEDDS_URI": f"file://{config}"}, None, dds.CYCLONE_RMEM_MAX).status == OK
    check = dds.transport_check({**cyclone, "CYCLONEDDS_URI": dds.CYCLONE_URI}, None, 212992)
    assert check.status == FAIL and "rmem_max 212992" in check.what
    assert dds.transport_check({"RMW_IMPLEMENTATION": "rmw_connextdds"}, None, 0).status == WARN


def test_the_fast_dds_version_is_read_from_the_library_found_first(tmp_path):
    for name in ("libfastrtps.so", "libfastrtps.so.2.6", "libfastrtps.so.2.6.9"):
        (tmp_path / "humble" / "lib").mkdir(parents=True, exist_ok=True)
        (tmp_path / "humble" / "lib" / name).touch()
    env = {"AMENT_PREFIX_PATH": str(tmp_path / "humble"), "LD_LIBRARY_PATH": str(tmp_path / "empty")}
    assert dds.fastdds_version(dds.library_dirs(env)) == (2, 6, 9)
    wheels = [f.name for f in (Path(sys.prefix) / "lib").glob("libfastdds.so.*.*.*")]
    (name,) = wheels  # the Kilted wheels of this venv: Fast DDS 3
    found = dds.fastdds_version(dds.library_dirs(os.environ))
    assert found == tuple(int(n) for n in re.search(r"so\.([\d.]+)$", name).group(1).split(".")) and found >= (3,)


def test_ros_domain_and_clocks():
    assert dds.domain_check({}).status == WARN
    assert dds.domain_check({"ROS_DOMAIN_ID": "42"}).status == OK
    assert dds.domain_check({"ROS_DOMAIN_ID": "150"}).status == WARN
    assert dds.domain_check({"ROS_DOMAIN_ID": "233"}).status == FAIL
    assert dds.domain_check({"ROS_DOMAIN_ID": "lab"}).status == FAIL
    assert dds.clock_check(None).status == OK
    check = dds.clock_check("gpu-host")
    assert check.status == OK and "the policy measures the offset" in check.what and "gpu-host" in check.what


def test_realtime_kernel_against_the_realtime_setting():
    robot = ControllerSettings(robot_ip="172.16.0.2", realtime=False)
    robot_rt = ControllerSettings(robot_ip="172.16.0.2", realtime=True)
    assert realtime_check(robot, rt_kernel=False, rt_priority=True).status == WARN
    assert realtime_check(robot, rt_kernel=True, rt_priority=True).status == WARN
    check = realtime_check(robot_rt, rt_kernel=False, rt_priority=True)
    assert check.status == FAIL and "franky refuses" in check.what and "realtime: false" in check.fix
    check = realtime_check(robot_rt, rt_kernel=True, rt_priority=False)
    assert check.status == FAIL and "rtprio 99" in check.fix
    assert realtime_check(robot_rt, rt_kernel=True, rt_priority=True).status == OK
    sim = ControllerSettings(robot_ip="127.0.0.1", realtime=False)
    assert realtime_check(sim, rt_kernel=False, rt_priority=False).status == OK


def test_tf_says_where_tf2_msgs_comes_from():
    """This venv has tf2_msgs (`make venv` builds it); without it the line says how to get it."""
    assert dds.tf_check().status == OK, "make venv builds tf2_msgs into the venv (scripts/build_tf2_msgs)"
    check = dds.tf_check(found=False)
    assert check.status == WARN and "/tf and /tf_static are off" in check.what
    assert "ros-$ROS_DISTRO-tf2-msgs" in check.fix and "scripts/build_tf2_msgs" in check.fix

"""graspvla_ros.interfaces: the stamp converters are exact, and every name is documented (no ROS)."""
from pathlib import Path

import numpy as np
import pytest

from graspvla_ros import interfaces
from graspvla_ros.interfaces import split_ns, stamp_ns, under

DOC = (Path(__file__).resolve().parent.parent / "docs" / "interfaces.md").read_text()


@pytest.mark.parametrize("sec, nanosec", [(0, 0), (0, 999_999_999), (1, 0), (1_700_000_000, 123_456_789),
                                          (2**31 - 1, 999_999_999), (10**12, 1)])
def test_stamps_round_trip_exactly(sec, nanosec):
    ns = stamp_ns(sec, nanosec)
    assert ns == sec * 10**9 + nanosec
    assert split_ns(ns) == (sec, nanosec)


def test_large_times_keep_every_nanosecond():
    """A float of seconds since the epoch rounds to ~100 ns; the integers keep the last digit."""
    ns = 1_700_000_000_123_456_789
    assert split_ns(ns) == (1_700_000_000, 123_456_789) and stamp_ns(*split_ns(ns)) == ns
    assert split_ns(np.int64(ns)) == (1_700_000_000, 123_456_789)


def test_negative_times_split_with_nanosec_in_range():
    """Floor division: nanosec stays in [0, 1e9) as builtin_interfaces wants, and it round-trips."""
    assert split_ns(-1) == (-1, 999_999_999)
    assert split_ns(-1_000_000_000) == (-1, 0)
    for ns in (-1, -999_999_999, -1_000_000_001, -(10**15) - 7):
        assert stamp_ns(*split_ns(ns)) == ns


def test_float_nanoseconds_are_refused():
    with pytest.raises(TypeError):
        split_ns(1.5e9)
    with pytest.raises(TypeError):
        stamp_ns(1.0, 0)


def test_private_names_resolve_under_their_node():
    assert under(interfaces.CONTROLLER, interfaces.CONTROLLER_STATE) == "/controller/state"
    assert under("/ns/controller", interfaces.HOLD) == "/ns/controller/hold"
    with pytest.raises(ValueError):
        under("/controller", interfaces.EE_POSE)


def _names() -> dict[str, str]:
    return {k: v for k, v in vars(interfaces).items() if k.isupper() and isinstance(v, str)}


def test_every_topic_and_service_is_documented():
    """docs/interfaces.md is where each name is explained: a name added here is added there."""
    names = list(_names().values())
    names += [f("<name>") for f in (interfaces.image_topic, interfaces.camera_info_topic, interfaces.depth_image_topic,
                                    interfaces.depth_info_topic, interfaces.calibration_overlay_topic,
                                    interfaces.calibration_score_topic)]
    names += [interfaces.debug_bbox_topic(view) for view in interfaces.VIEWS]
    missing = [n for n in names if f"`{n}`" not in DOC]
    assert not missing, f"not in docs/interfaces.md: {missing}"


def test_names_are_distinct():
    names = _names()
    assert len(set(names.values())) == len(names), names
    assert set(interfaces.CONTROLLER_SERVICES) <= set(names.values())


def test_an_episode_bag_records_what_the_controller_commanded_and_its_state():
    from graspvla_ros.bag.settings import DEFAULT_TOPICS
    from graspvla_ros.graph import REPLAY_INPUTS

    assert {"/graspvla/commanded_pose", "/graspvla/gripper_width", "/controller/state"} <= set(DEFAULT_TOPICS)
    assert set(REPLAY_INPUTS) <= set(DEFAULT_TOPICS)  # a recorded episode can be replayed

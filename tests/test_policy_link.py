"""LinkWatch: the policy's view of the robot host, from the TCP pose stream's arrivals."""
import pytest

from graspvla_ros.policy.link import LinkWatch


def test_silence_past_the_timeout_is_reported_once_and_the_return_once():
    link = LinkWatch(timeout=1.0)
    assert link.check(100.0) is None and link.describe(100.0) == "nothing heard yet"
    for t in (0.0, 0.005, 0.5, 0.9):
        link.heard(10.0 + t)
        assert link.check(10.0 + t) is None
    assert link.check(11.85) is None and not link.lost          # 0.95 s of silence: not yet
    lost = link.check(12.0)
    assert link.lost and "no TCP pose from the controller for 1.1 s" in lost
    assert link.check(13.0) is None and link.describe(13.0) == "lost for 2.1 s"
    link.heard(14.0)
    back = link.check(14.0)
    assert not link.lost and "arrive again (after 3.1 s without)" in back
    assert link.check(14.1) is None and link.describe(14.1) == "ok"


def test_a_zero_timeout_watches_nothing_and_a_negative_one_is_refused():
    link = LinkWatch(timeout=0.0)
    link.heard(1.0)
    assert link.check(100.0) is None and not link.lost and link.describe(100.0) == "not watched"
    with pytest.raises(ValueError, match="timeout must be ≥ 0 s"):
        LinkWatch(timeout=-1.0)

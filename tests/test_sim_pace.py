"""PaceMonitor: a world that falls behind the wall clock is said once, and its recovery once."""
import pytest

from graspvla_ros.sim.pace import PaceMonitor


def test_a_slow_world_is_said_once_and_its_recovery_once():
    pace = PaceMonitor(window_s=5.0, slow=0.25)
    said = [pace.update(t * 0.1, t * 0.09) for t in range(100)]        # 0.9× for 10 s: nothing
    said += [pace.update(10 + t * 0.1, 9 + t * 0.001) for t in range(200)]  # 0.01× for 20 s
    said += [pace.update(30 + t * 0.1, 9.2 + t * 0.1) for t in range(100)]  # back to 1×
    messages = [m for m in said if m]
    assert len(messages) == 2, messages
    assert "ran at 0.0" in messages[0] and "starved of CPU or blocked" in messages[0]
    assert "1.00× real time again" in messages[1] and not pace.behind


def test_a_world_reset_starts_the_window_again():
    pace = PaceMonitor(window_s=1.0)
    pace.update(0.0, 100.0)
    assert pace.update(2.0, 0.5) is None   # sim time went back: no factor from across the reset
    assert pace.update(3.1, 1.6) is None and pace.factor == pytest.approx(1.0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="slow in"):
        PaceMonitor(slow=1.5)

"""The policy's view of the robot host: LinkWatch (the TCP pose stream's arrivals), ClockOffset
(the ping-pong with the controller) and the latency chain the offset puts on one clock."""
import pytest

from graspvla_ros.latency import CONTROLLER_STAGES, POLICY_STAGES, STAGES, LatencyWindow, chain_rows
from graspvla_ros.policy.link import ClockOffset, LinkWatch

MS = 1_000_000


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


def test_the_clock_offset_is_the_exchange_with_the_shortest_round_trip_and_zero_before_any():
    offset = ClockOffset(keep=4)
    assert offset.offset_ns == 0 and not offset.measured and offset.describe() == "not measured yet"
    true = 250 * MS   # the robot's clock is 250 ms ahead of this one
    # (t0, out leg, back leg): a slow, asymmetric exchange is wrong by up to half its round trip
    for t0, out, back in ((0, 40 * MS, 2 * MS), (1000 * MS, 1 * MS, 1 * MS), (2000 * MS, 3 * MS, 30 * MS)):
        offset.add(t0, t0 + out + true, t0 + out + back)
    assert offset.offset_ns == true and offset.round_trip_ns == 2 * MS
    assert offset.describe() == "+250.0 ms (±1.0 ms: round trip 2.0 ms)"
    offset.add(5000 * MS, 0, 4000 * MS)   # this clock went back between ask and answer: not a measurement
    assert offset.offset_ns == true
    for k in range(4):   # the best exchange ages out of the last `keep`
        offset.add((6000 + k) * MS, (6000 + k) * MS + 5 * MS - 100 * MS, (6000 + k) * MS + 10 * MS)
    assert offset.offset_ns == -100 * MS and offset.round_trip_ns == 10 * MS


def test_the_latency_chain_reads_both_nodes_windows_and_marks_a_stage_past_its_budget():
    now = [0.0]
    policy = LatencyWindow(POLICY_STAGES, span_s=20.0, clock=lambda: now[0])
    controller = LatencyWindow(CONTROLLER_STAGES, span_s=20.0, clock=lambda: now[0])
    for k in range(200):   # 5 Hz for 40 s: only the last 20 s count
        now[0] = k * 0.2
        for i, stage in enumerate(POLICY_STAGES):
            policy.add(stage, (1000 if k < 100 else 50) + 20 * i + (k % 10))
        controller.add("controller_received", 170 + k % 10)
    controller.add("motion_updated", 900.0)
    values = {**policy.diagnostics(), **controller.diagnostics()}
    assert values["latency.received.p50_ms"] == "54.5" and values["latency.received.n"] == "100"
    rows = {stage.name: (p50, p99, over) for stage, p50, p99, over in chain_rows(values)}
    assert list(rows) == [s.name for s in STAGES]
    assert rows["published"][0] == pytest.approx(114.5) and not rows["published"][2]
    assert rows["motion_updated"] == (900.0, 900.0, True), "past its 700 ms budget"
    now[0] += 60.0   # the window ends at the newest cycle: an ended episode's chain stays, with its age
    later = policy.diagnostics()
    assert later["latency.received.p50_ms"] == "54.5" and later["latency.received.n"] == "100"
    assert later["latency.window_s"] == "20" and later["latency.last_s_ago"] == "60.0", later
    assert LatencyWindow(POLICY_STAGES).diagnostics() == {}, "no cycle yet: nothing to say"

"""policy.netem, the tests' slow and lossy link where the kernel has no `tc netem`."""
import time

import pytest

from conftest import wait_for
from graspvla_ros.policy.netem import LinkEmulator, LinkSpec


def test_the_spec_reads_delay_jitter_and_loss_and_refuses_anything_else():
    assert LinkSpec.parse("") is None
    assert LinkSpec.parse("delay=0.05, jitter=0.02,loss=0.05") == LinkSpec(0.05, 0.02, 0.05)
    for bad, why in (("delay=fast", "not a number"), ("lag=1", "expected delay="), ("loss=1", "loss in"),
                     ("delay=-1", "≥ 0 s")):
        with pytest.raises(ValueError, match=why):
            LinkSpec.parse(bad)


def test_messages_arrive_in_order_no_sooner_than_the_delay_and_about_the_loss_is_dropped():
    link = LinkEmulator(LinkSpec(delay=0.03, jitter=0.02, loss=0.1), "test", seed=3)
    got = []
    sent_at = {}
    try:
        for k in range(300):
            sent_at[k] = time.monotonic()
            link.send(lambda k=k: got.append((k, time.monotonic())))
        wait_for(lambda: len(got) == link.sent - link.dropped, 30, "every message not dropped")
    finally:
        link.close()
    order = [k for k, _ in got]
    assert order == sorted(order), "the link reordered messages"
    assert 10 <= link.dropped <= 50, f"{link.dropped} of 300 dropped at 10 % loss"
    delays = sorted(t - sent_at[k] for k, t in got)
    assert delays[len(delays) // 2] >= 0.02, "the median delay is below the link's 30 ± 20 ms"

"""control.order: what may still run after a stop, by the robot host's clock and the policy's ids."""
from __future__ import annotations

import numpy as np
import pytest

from graspvla_ros.chunk import ActionChunk, Pose
from graspvla_ros.control.order import ChunkOrder
from graspvla_ros.safety import ChunkRejected

MS = 1_000_000


def chunk(stamp_ms: int, episode: int = 0, seq: int = 0) -> ActionChunk:
    return ActionChunk(stamp_ms * MS, 0.1, "base", np.zeros((8, 7)), Pose.from_xyz_rpy((0.5, 0, 0.3), (np.pi, 0, 0)),
                       episode=episode, seq=seq)


def admit(order: ChunkOrder, c: ActionChunk, stop_ms: int) -> None:
    order.admit_ids(c, stop_ms * MS)
    order.admit_stamp(c, stop_ms * MS)
    order.accepted(c)


def refused(order: ChunkOrder, c: ActionChunk, stop_ms: int) -> str:
    with pytest.raises(ChunkRejected) as err:
        admit(order, c, stop_ms)
    return err.value.reason


def test_ids_only_grow_between_stops_so_a_duplicate_or_a_late_chunk_never_runs():
    order = ChunkOrder()
    admit(order, chunk(100, 1, 1), 0)
    admit(order, chunk(200, 1, 2), 0)
    assert refused(order, chunk(200, 1, 2), 0) == "stale_seq"     # the same chunk again
    assert refused(order, chunk(300, 1, 1), 0) == "stale_seq"     # an older seq, delivered late
    admit(order, chunk(300, 2, 1), 0)      # the next episode
    assert refused(order, chunk(400, 1, 3), 0) == "stale_seq"     # the old episode's last chunk, late


def test_a_stop_refuses_what_was_observed_before_it_and_forgets_the_ids():
    order = ChunkOrder()
    admit(order, chunk(100, 5, 9), 0)
    assert refused(order, chunk(150, 5, 10), 160) == "before_stop"   # computed before the hold: never after it
    admit(order, chunk(170, 1, 1), 160)   # a restarted policy's first episode, after the hold it asked for
    assert refused(order, chunk(180, 1, 1), 160) == "stale_seq"
    admit(order, chunk(190), 160)         # a publisher without ids: ordered by stamps alone (safety's non_monotonic)

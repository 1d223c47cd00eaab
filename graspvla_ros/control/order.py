"""Which chunks may still run: judged on the robot host's own clock and the policy's ids, never by
comparing two hosts' clocks.

A chunk is stamped with its images' exposure, which the cameras on this host stamped, so its
stamp and this controller's clock are one clock, also when the policy runs on another machine.

Invariants (checked under the controller's lock, with the chunk's admission):
- A chunk observed before the controller last stopped running chunks (hold, e-stop, home, the
  watchdog's hold, a fault, a contact retreat) is refused (`before_stop`): nothing computed
  before a hold, a cut link or a new instruction moves the arm after it.
- Between two stops the policy's ids only grow: a chunk of an older episode, or of the same
  episode with a seq not above the newest accepted one, is refused (`stale_seq`). So a chunk
  delivered twice runs once, and a late one never overtakes a newer one.
- A stop forgets the ids: a restarted policy counts its episodes from 1 again, and its first
  instruction asks for a hold. Chunks without ids (0, 0) are ordered by their stamps alone:
  `last_stamp_ns`, the newest accepted stamp (safety's `non_monotonic`), until `forget`.
"""
from __future__ import annotations

from graspvla_ros.chunk import ActionChunk
from graspvla_ros.safety import ChunkRejected


class ChunkOrder:
    def __init__(self) -> None:
        self._stop_ns: int | None = None
        self._newest: tuple[int, int] | None = None
        self.last_stamp_ns: int | None = None

    def admit_ids(self, chunk: ActionChunk, stopped_ns: int) -> None:
        """Refuse (ChunkRejected `stale_seq`) ids not after the newest accepted since the stop at `stopped_ns`."""
        if stopped_ns != self._stop_ns:
            self._stop_ns, self._newest = stopped_ns, None
        ids = (chunk.episode, chunk.seq)
        if chunk.episode and self._newest is not None and ids <= self._newest:
            raise ChunkRejected("stale_seq", f"episode {ids[0]} seq {ids[1]} is not after the newest run, "
                                             f"episode {self._newest[0]} seq {self._newest[1]}")

    @staticmethod
    def admit_stamp(chunk: ActionChunk, stopped_ns: int) -> None:
        """Refuse (`before_stop`) a chunk observed before the stop at `stopped_ns`. Checked after the
        age (`too_old` says more of a chunk that is both)."""
        if chunk.stamp_ns < stopped_ns:
            raise ChunkRejected("before_stop", f"observed {(stopped_ns - chunk.stamp_ns) / 1e6:.0f} ms before the "
                                               "controller last stopped running chunks")

    def accepted(self, chunk: ActionChunk) -> None:
        """`chunk` passed every check and runs: it is the newest."""
        self.last_stamp_ns = chunk.stamp_ns
        if chunk.episode:
            self._newest = (chunk.episode, chunk.seq)

    def forget(self) -> None:
        """A new start (released e-stop, fault, home): stamps are ordered afresh."""
        self.last_stamp_ns = None

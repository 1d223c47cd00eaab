"""A latest-wins slot for the next chunk.

Invariant: it holds at most one chunk; `put` replaces an unread one (only the newest
observation is worth executing), `take` empties it, `clear` drops it. Callers hold the state
lock (control.state.StateMachine.lock) around every call; `wait` releases it while waiting.
"""
from __future__ import annotations

import threading

from graspvla_ros.chunk import ActionChunk


class ChunkSlot:
    def __init__(self, lock: threading.Lock):
        self._chunk: ActionChunk | None = None
        self._ready = threading.Condition(lock)

    def put(self, chunk: ActionChunk) -> None:
        self._chunk = chunk
        self._ready.notify_all()

    def take(self) -> ActionChunk | None:
        chunk, self._chunk = self._chunk, None
        return chunk

    def clear(self) -> None:
        self._chunk = None

    def wake(self) -> None:
        self._ready.notify_all()

    def wait(self, timeout: float) -> None:
        """Until a chunk is put or `wake` is called, at most `timeout` s."""
        if self._chunk is None:
            self._ready.wait(timeout)

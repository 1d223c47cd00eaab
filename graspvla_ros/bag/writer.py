"""rosbag2 MCAP writer: raw CDR as received, episode metadata, size/duration splits, and a
flush strategy that keeps a killed recording readable.

Each bag is a rosbag2 directory (`metadata.yaml` + `<name>_<i>.mcap`), the layout `ros2 bag`
writes, so it opens in `ros2 bag`, Foxglove and PlotJuggler. Messages go into MCAP chunks; a
chunk is closed and flushed to the OS when it reaches `chunk_bytes` or is `chunk_seconds` old,
so a recorder killed with SIGKILL loses at most the open chunk: everything up to the last
complete chunk stays readable (`reader.open_bag` reads such an unfinished bag). The episode
metadata is written next to the files at once (`episode.json`) and into metadata.yaml's
custom_data on close.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat, Qos
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.metadata import dump_qos_v9
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML

EPISODE_FILE = "episode.json"
EPISODE_KEY = "graspvla.episode"      # key of the episode metadata (JSON) in metadata.yaml custom_data
FORMAT_VERSION = 9                    # rosbag2 metadata version written (Jazzy/Kilted)


@functools.lru_cache(maxsize=None)
def message_definition(msgtype: str) -> tuple[str, str]:
    """(ros2msg definition text, RIHS01 hash) of a message type; ('', '') for a type rosbags does
    not know (the raw CDR is still recorded; readers then lack the schema text)."""
    store = get_typestore(Stores.ROS2_KILTED)
    if msgtype not in store.types:
        return "", ""
    return store.generate_msgdef(msgtype, ros_version=2)[0], store.hash_rihs01(msgtype)


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit of the checkout this package runs from ('unknown' outside a git checkout), once
    per process: the code that runs is the code that was loaded."""
    directory = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def episode_metadata(instruction: str = "", backend: str = "", checkpoint_hash: str = "",
                     parameters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The metadata every recorded episode carries."""
    return {"instruction": instruction, "backend": backend, "checkpoint_hash": checkpoint_hash,
            "parameters": parameters or {}, "git_commit": git_commit(),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


@dataclass
class _Topic:
    name: str
    msgtype: str
    qos: list[Qos]
    msgdef: str
    digest: str
    count: int = 0


@dataclass
class _File:
    path: Path
    start: int = 2**63 - 1
    end: int = 0
    count: int = 0
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class BagWriter:
    """One rosbag2 bag (directory `path`, which must not exist yet).

    `split_bytes` / `split_seconds` (0: never) start a new `.mcap` file in the same bag once
    the current one is that big / spans that long. Use as a context manager or call close().
    """

    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    split_bytes: int = 0
    split_seconds: float = 0.0
    chunk_bytes: int = 1 << 20
    chunk_seconds: float = 1.0

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.mkdir(parents=True, exist_ok=False)
        self._topics: dict[str, _Topic] = {}
        self._files: list[_File] = []
        self._storage: McapWriter | None = None
        self._connections: dict[str, Connection] = {}
        self._chunk_opened = 0.0
        self.closed = False
        self.set_metadata(self.metadata)
        self._open_file()

    # ----------------------------------------------------------------- public
    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the episode metadata (written to episode.json now, to metadata.yaml on close)."""
        self.metadata = dict(metadata)
        tmp = self.path / (EPISODE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.metadata, indent=2, sort_keys=True, default=str))
        tmp.replace(self.path / EPISODE_FILE)

    def add_topic(self, topic: str, msgtype: str, qos: list[Qos] | None = None) -> None:
        """Declare a topic before its first message; `qos`: the publishers' offered profiles."""
        if topic in self._topics:
            return
        msgdef, digest = message_definition(msgtype)
        self._topics[topic] = _Topic(topic, msgtype, list(qos or []), msgdef, digest)
        self._connect(self._topics[topic])

    @property
    def counts(self) -> dict[str, int]:
        return {name: t.count for name, t in self._topics.items()}

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised (CDR) message received at `timestamp_ns`."""
        current = self._files[-1]
        if current.count and ((self.split_bytes and current.bytes >= self.split_bytes) or
                              (self.split_seconds and timestamp_ns - current.start >= self.split_seconds * 1e9)):
            self._close_file()
            self._open_file()
            current = self._files[-1]
        storage = self._storage
        chunks_before = len(storage.chunks)
        if not storage.chunk.msgs:
            self._chunk_opened = time.monotonic()
        storage.write(self._connections[topic], timestamp_ns, data)
        topic_info = self._topics[topic]
        topic_info.count += 1
        current.count += 1
        current.counts[topic] = current.counts.get(topic, 0) + 1
        current.bytes += len(data) + 31
        current.start, current.end = min(current.start, timestamp_ns), max(current.end, timestamp_ns)
        if len(storage.chunks) != chunks_before:      # rosbags closed a full chunk
            storage.bio.flush()
        elif storage.chunk.bio.tell() >= self.chunk_bytes or time.monotonic() - self._chunk_opened >= self.chunk_seconds:
            self.flush()

    def flush(self) -> None:
        """Close the open chunk and hand it to the OS: it survives a killed process from now on."""
        if self._storage is not None and self._storage.chunk.msgs:
            self._storage.close_chunk()
            self._storage.bio.flush()

    def close(self) -> None:
        """Finish the open file (MCAP summary and footer) and write metadata.yaml."""
        if self.closed:
            return
        self.closed = True
        self._close_file()
        self._write_metadata_yaml()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- private
    def _open_file(self) -> None:
        storage = McapWriter(_SplitFile(self.path / f"{self.path.name}_{len(self._files)}.mcap"), CompressionMode.NONE)
        self._storage = storage
        self._files.append(_File(Path(storage.path)))
        self._connections = {}
        self._schemas: set[str] = set()
        for topic in self._topics.values():
            self._connect(topic)

    def _connect(self, topic: _Topic) -> None:
        fmt = MessageDefinitionFormat.MSG
        conn = Connection(id=len(self._connections) + 1, topic=topic.name, msgtype=topic.msgtype,
                          msgdef=MessageDefinition(fmt, topic.msgdef), digest=topic.digest, msgcount=0,
                          ext=ConnectionExtRosbag2(serialization_format="cdr", offered_qos_profiles=topic.qos),
                          owner=self)
        if topic.msgtype not in self._schemas:      # one schema per type and file
            self._storage.add_msgtype(conn)
            self._schemas.add(topic.msgtype)
        self._storage.add_connection(conn, _yaml(dump_qos_v9(topic.qos)).strip())
        self._connections[topic.name] = conn

    def _close_file(self) -> None:
        """Finish the open file; its MCAP metadata record describes it alone (what `ros2 bag info
        file.mcap` shows), metadata.yaml the whole bag."""
        if self._storage is None:
            return
        info = self._bag_info([self._files[-1]])
        self._storage.close(FORMAT_VERSION, _yaml(info).strip())
        self._files[-1].bytes = os.path.getsize(self._files[-1].path)
        self._storage = None

    def _bag_info(self, files: list[_File]) -> dict[str, Any]:
        """rosbag2's `rosbag2_bagfile_information` for `files`."""
        start = min((f.start for f in files if f.count), default=0)
        end = max((f.end for f in files if f.count), default=0)
        counts = {t: sum(f.counts.get(t, 0) for f in files) for t in self._topics}
        return {
            "version": FORMAT_VERSION,
            "storage_identifier": "mcap",
            "relative_file_paths": [f.path.name for f in files],
            "duration": {"nanoseconds": max(0, end - start)},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f.count for f in files),
            "topics_with_message_count": [
                {"topic_metadata": {"name": t.name, "type": t.msgtype, "serialization_format": "cdr",
                                    "offered_qos_profiles": dump_qos_v9(t.qos), "type_description_hash": t.digest},
                 "message_count": counts[t.name]}
                for t in self._topics.values()],
            "compression_format": "",
            "compression_mode": "",
            "files": [{"path": f.path.name, "starting_time": {"nanoseconds_since_epoch": f.start if f.count else 0},
                       "duration": {"nanoseconds": max(0, f.end - f.start) if f.count else 0},
                       "message_count": f.count} for f in files],
            "custom_data": {EPISODE_KEY: json.dumps(self.metadata, sort_keys=True, default=str)},
            "ros_distro": "kilted",
        }

    def _write_metadata_yaml(self) -> None:
        info = self._bag_info([f for f in self._files if f.path.exists()])
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(_yaml({"rosbag2_bagfile_information": info}))
        tmp.replace(self.path / "metadata.yaml")


def _yaml(data: Any) -> str:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    stream = StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


class _SplitFile:
    """McapWriter writes `<dir>/<dir.name>.mcap`; this stands in for `<dir>` so it writes the
    split's own file name (`<bag>/<bag>_<i>.mcap`, as `ros2 bag` names splits)."""

    def __init__(self, file: Path) -> None:
        self.file, self.name = file, file.stem

    def __truediv__(self, _name: str) -> Path:
        return self.file

"""Read rosbag2 bags: this recorder's (also one cut short by a killed recorder) and `ros2 bag
record` output, MCAP or sqlite3, through one small API.

`open_bag(path)` returns a Bag (topics, counts, episode metadata); `Bag.messages()` yields the
messages in timestamp order as raw CDR; `Bag.check()` reads the whole bag once and raises one
BagError naming the problem (missing topic, unknown type, truncated or corrupt data, newer
format) so a player can refuse a bad bag before it publishes anything.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import decompress, get_qos
from ruamel.yaml import YAML

from graspvla_ros.bag.writer import EPISODE_FILE, EPISODE_KEY, FORMAT_VERSION

MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagError(ValueError):
    """A bag that cannot be played or read as asked; the message names the bag and the problem."""


class Message(NamedTuple):
    topic: str
    msgtype: str
    timestamp: int      # ns, the time the recorder received it
    data: bytes         # CDR as published


@dataclass
class Topic:
    name: str
    msgtype: str
    count: int
    qos: list[Qos] = field(default_factory=list)


@dataclass
class Bag:
    """A bag opened for reading. `complete` is False for a recording whose recorder was killed:
    its messages are those of the complete MCAP chunks."""

    path: Path
    storage: str
    complete: bool
    topics: dict[str, Topic]
    start_ns: int
    end_ns: int
    episode: dict[str, Any]
    _files: list[Path] = field(default_factory=list, repr=False)

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[Message]:
        """Messages of `topics` (default: all) in timestamp order."""
        wanted = set(self.topics) if topics is None else set(topics)
        try:
            if self.complete:
                yield from self._rosbags_messages(wanted)
            else:
                for file in self._files:
                    for topic, msgtype, timestamp, data in _scan_mcap(file, want_data=True):
                        if topic in wanted:
                            yield Message(topic, msgtype, timestamp, bytes(data))
        except BagError:
            raise
        except Exception as err:  # rosbags, struct and zstd errors all mean unreadable data
            raise BagError(f"{self.path}: corrupt or truncated: {err}") from err

    def _rosbags_messages(self, wanted: set[str]) -> Iterator[Message]:
        with Reader(self.path) as reader:
            conns = [c for c in reader.connections if c.topic in wanted]
            if not conns:
                return
            for conn, timestamp, data in reader.messages(conns):
                yield Message(conn.topic, conn.msgtype, timestamp, bytes(data))

    def check(self, topics: Iterable[str] | None = None, known_type: Callable[[str], bool] | None = None) -> None:
        """Raise BagError unless every message of `topics` (default: all) can be read and, with
        `known_type`, every one of their message types is installed. Reads the whole bag."""
        names = list(self.topics) if topics is None else list(topics)
        missing = [t for t in names if t not in self.topics]
        if missing:
            raise BagError(f"{self.path}: no topic {', '.join(missing)} in the bag (it has: "
                           f"{', '.join(sorted(self.topics)) or 'none'})")
        if known_type is not None:
            unknown = [f"{t} ({self.topics[t].msgtype})" for t in names if not known_type(self.topics[t].msgtype)]
            if unknown:
                raise BagError(f"{self.path}: unknown message type on {', '.join(unknown)}: "
                               "not installed here, cannot publish it")
        if not any(self.topics[t].count for t in names):
            raise BagError(f"{self.path}: no messages on {', '.join(names) or 'any topic'}")
        seen = dict.fromkeys(names, 0)
        for msg in self.messages(names):
            if len(msg.data) < 4 or msg.data[0] != 0 or msg.data[1] > 3:
                raise BagError(f"{self.path}: corrupt message #{seen[msg.topic] + 1} on {msg.topic}: "
                               "not CDR (bad encapsulation header)")
            seen[msg.topic] += 1
        short = {t: (seen[t], self.topics[t].count) for t in names if seen[t] != self.topics[t].count}
        if short:
            detail = ", ".join(f"{t}: {got} of {want}" for t, (got, want) in short.items())
            raise BagError(f"{self.path}: truncated: fewer messages readable than indexed ({detail})")


def open_bag(path: str | Path) -> Bag:
    """Open a bag directory (rosbag2, with or without metadata.yaml) or a single .mcap/.db3 file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(path.glob("*.mcap"), key=_split_index)
        if not files:
            raise BagError(f"{path}: not a bag (no metadata.yaml, no .mcap file)")
        return _unfinished(path, files)
    if path.is_dir():
        _check_version(path / "metadata.yaml")
    try:
        return _rosbags_bag(path)
    except BagError:
        raise
    except Exception as err:
        if path.suffix == ".mcap" and _is_unfinished_mcap(path):
            return _unfinished(path, [path])
        raise BagError(f"{path}: corrupt or truncated: {err}") from err


def _split_index(file: Path) -> tuple[int, str]:
    stem = file.stem.rsplit("_", 1)
    return (int(stem[1]), file.name) if len(stem) == 2 and stem[1].isdigit() else (0, file.name)


def _check_version(yaml_path: Path) -> None:
    try:
        info = YAML(typ="safe").load(yaml_path.read_text())["rosbag2_bagfile_information"]
        version = int(info["version"])
    except Exception as err:
        raise BagError(f"{yaml_path}: unreadable metadata: {err}") from err
    if version > FORMAT_VERSION:
        raise BagError(f"{yaml_path.parent}: rosbag2 format version {version} is newer than this reader "
                       f"supports (≤ {FORMAT_VERSION}); re-record it or convert it with a matching `ros2 bag convert`")


def _rosbags_bag(path: Path) -> Bag:
    with Reader(path) as reader:
        topics: dict[str, Topic] = {}
        for conn in reader.connections:
            topic = topics.setdefault(conn.topic, Topic(conn.topic, conn.msgtype, 0, list(conn.ext.offered_qos_profiles)))
            topic.count += conn.msgcount
        custom = getattr(reader.storage, "metadata", None)
        custom = getattr(custom, "custom", None) or {}
        start, end = (reader.start_time, reader.end_time) if reader.message_count else (0, 0)
        storage = "sqlite3" if path.suffix == ".db3" or (path.is_dir() and any(path.glob("*.db3"))) else "mcap"
    episode = {}
    if EPISODE_KEY in custom:
        episode = json.loads(custom[EPISODE_KEY])
    elif path.is_dir() and (path / EPISODE_FILE).exists():
        episode = json.loads((path / EPISODE_FILE).read_text())
    return Bag(path, storage, True, topics, start, end, episode)


def _is_unfinished_mcap(file: Path) -> bool:
    """An MCAP that starts right but has no footer: its writer did not close it."""
    with file.open("rb") as f:
        head = f.read(8)
        f.seek(max(0, file.stat().st_size - 8))
        tail = f.read(8)
    return head == MCAP_MAGIC and tail != MCAP_MAGIC


def _unfinished(path: Path, files: list[Path]) -> Bag:
    topics: dict[str, Topic] = {}
    start, end = 2**63 - 1, 0
    for file in files:
        for topic, msgtype, timestamp, _ in _scan_mcap(file, want_data=False, topics=topics):
            topics[topic].count += 1
            start, end = min(start, timestamp), max(end, timestamp)
    directory = path if path.is_dir() else path.parent
    episode = json.loads((directory / EPISODE_FILE).read_text()) if (directory / EPISODE_FILE).exists() else {}
    if not topics or not any(t.count for t in topics.values()):
        start = end = 0
    return Bag(path, "mcap", False, topics, start, end, episode, files)


def _scan_mcap(file: Path, want_data: bool, topics: dict[str, Topic] | None = None):
    """(topic, msgtype, log_time, data) of every message in the complete records of an MCAP file,
    in file order (the recorder writes in receive order); stops at the first record cut short.
    Fills `topics` with the channels met (count 0). Without `want_data`, data is b""."""
    topics = {} if topics is None else topics
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with file.open("rb") as f:
        magic = f.read(len(MCAP_MAGIC))
        if not magic:
            return                            # killed before its first flush: nothing on disk
        if magic != MCAP_MAGIC:
            raise BagError(f"{file}: not an MCAP file")
        while True:
            head = f.read(9)
            if len(head) < 9:
                return
            op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            if op in (0x02, 0x0F):            # footer, data end: the summary follows
                return
            if op not in (0x03, 0x04, 0x05, 0x06):
                f.seek(length, 1)
                continue
            body = f.read(length)
            if len(body) < length:
                return                        # the record a killed writer did not finish
            yield from _record(op, body, schemas, channels, topics, want_data)


def _record(op: int, body: bytes, schemas, channels, topics, want_data: bool):
    if op == 0x03:
        schemas[struct.unpack_from("<H", body)[0]] = _string(body, 2)[0]
    elif op == 0x04:
        cid, sid = struct.unpack_from("<HH", body)
        topic, p = _string(body, 4)
        _encoding, p = _string(body, p)
        (meta_len,) = struct.unpack_from("<I", body, p)
        msgtype = schemas.get(sid, "")
        channels[cid] = (topic, msgtype)
        topics.setdefault(topic, Topic(topic, msgtype, 0, get_qos(body[p + 4:p + 4 + meta_len])))
    elif op == 0x05:
        cid, _seq, log_time = struct.unpack_from("<HIQ", body)
        if cid not in channels:
            raise BagError(f"message on channel {cid} before its channel record")
        topic, msgtype = channels[cid]
        yield topic, msgtype, log_time, body[22:] if want_data else b""
    elif op == 0x06:
        _start, _end, raw_size, crc = struct.unpack_from("<QQQI", body)
        compression, p = _string(body, 28)
        (csize,) = struct.unpack_from("<Q", body, p)
        data = body[p + 8:p + 8 + csize]
        if compression or crc:
            data = decompress(data, compression, raw_size, crc)
        pos = 0
        while pos < len(data):
            inner_op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            if pos + 9 + length > len(data):
                raise BagError("a record overruns its chunk")
            yield from _record(inner_op, data[pos + 9:pos + 9 + length], schemas, channels, topics, want_data)
            pos += 9 + length


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4:pos + 4 + n]).decode(), pos + 4 + n

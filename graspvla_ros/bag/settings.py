"""What a recording writes and what a playback plays: the recorder's and the player's parameters
that belong to the bags themselves (graspvla_ros.settings builds the nodes' tables from these
fields).

No rosbags here: the launch file imports this module on the system Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graspvla_ros.interfaces import (ACTION_CHUNK, COMMANDED_POSE, CONTROLLER, CONTROLLER_STATE, DEBUG_TOPICS,
                                     DIAGNOSTICS, EE_POSE, GRIPPER_COMMAND, GRIPPER_WIDTH, INSTRUCTION, JOINT_STATES,
                                     STATUS, TF, TF_STATIC, VIEWS, camera_topics, image_topic, under)
from graspvla_ros.settings import setting

# An episode as the default graph runs it: what the policy saw (views, robot state, instruction),
# what it answered, and what the controller commanded and was doing.
DEFAULT_TOPICS = (
    *camera_topics(),
    EE_POSE, JOINT_STATES, GRIPPER_COMMAND, GRIPPER_WIDTH, COMMANDED_POSE, under(CONTROLLER, CONTROLLER_STATE),
    INSTRUCTION, STATUS, ACTION_CHUNK, DEBUG_TOPICS, DIAGNOSTICS, TF, TF_STATIC,
)
MODES = ("episode", "continuous")
ANSWER_TOPIC = ACTION_CHUNK
OBSERVATION_TOPICS = tuple(image_topic(f"/{v}") for v in VIEWS)


@dataclass(frozen=True)
class SplitSettings:
    """When a bag continues in a new `.mcap` file (`BagWriter`'s split_bytes / split_seconds)."""

    max_bytes: int = setting(0, "bytes per `.mcap` file before the bag continues in a new one (0: no limit)")
    max_seconds: float = setting(0.0, "s per `.mcap` file before the bag continues in a new one (0: no limit)")

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_seconds < 0:
            raise ValueError(f"split.max_bytes and split.max_seconds must be ≥ 0 (0: no limit), got "
                             f"{self.max_bytes}, {self.max_seconds}")


@dataclass(frozen=True)
class RecordingSettings:
    output_dir: str = setting("~/graspvla_bags", "directory the bags are written under, one sub-directory per bag")
    bag_prefix: str = setting("graspvla", "bag name: `<prefix>_<UTC yyyymmdd-HHMMSS>` (+ `_ep<N>` per episode)")
    mode: str = setting("episode", "`episode`: a new bag at each `/graspvla/instruction` (nothing before the first); "
                                   "`continuous`: one bag from start to stop")
    topics: tuple[str, ...] = setting(
        DEFAULT_TOPICS, "topics to record; shell patterns (`/graspvla/debug/*`) are resolved by graph discovery")
    split: SplitSettings = field(default_factory=SplitSettings)
    flush_period: float = setting(1.0, "s: the open MCAP chunk is closed and flushed at least this often (at most "
                                       "this much is lost to a SIGKILL)")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'episode' or 'continuous', got {self.mode!r}")
        if not self.flush_period > 0:
            raise ValueError(f"flush_period must be > 0 s, got {self.flush_period}")


@dataclass(frozen=True)
class LockStepSettings:
    enabled: bool = setting(False, "release one observation, then wait for the answer on `lock_step.answer_topic` "
                                   "(timing ignored)")
    observation_topics: tuple[str, ...] = setting(OBSERVATION_TOPICS, "the topics that make one observation")
    answer_topic: str = setting(ANSWER_TOPIC, "the policy's answer; its recorded messages are not played in lock-step")
    timeout: float = setting(30.0, "s to wait for an answer before giving up (exit code 1)")


@dataclass(frozen=True)
class PlaybackSettings:
    bag: str = setting("", "bag to play: a rosbag2 directory (MCAP or sqlite3) or one `.mcap`/`.db3` file")
    rate: float = setting(1.0, "playback speed factor (2.0: twice as fast)")
    start: float = setting(0.0, "s into the bag to start from")
    loop: bool = setting(False, "start again at the end")
    topics: tuple[str, ...] = setting(("*",), "topics to play: names or shell patterns")
    remap: str = setting("", "space-separated `/from:=/to` topic renames")
    lock_step: LockStepSettings = field(default_factory=LockStepSettings)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")

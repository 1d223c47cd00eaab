"""The pure bag core: writer, reader (this recorder's bags, rosbag2 MCAP/sqlite3, a killed
recording), playback timeline, lock-step cycles, and one clear error for each bad bag."""
import json
import shutil

import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from std_msgs.msg import String

from graspvla_ros.bag import BagError, BagWriter, open_bag
from graspvla_ros.bag.playback import (Pacer, cycles, header_stamp_ns, observations, parse_remaps, select_topics,
                                      timeline)
from helpers import CHUNK, FRONT, SIDE, chunk, image, string, write_episode

def test_written_bag_reads_back_in_order_with_metadata_and_opens_in_rosbags(tmp_path):
    bag = open_bag(write_episode(tmp_path / "ep", split_bytes=100_000))
    assert bag.complete and bag.storage == "mcap"
    assert {t: bag.topics[t].count for t in bag.topics} == {FRONT: 20, SIDE: 20, "/graspvla/status": 20}
    assert bag.episode["instruction"] == "pick up the cube" and bag.episode["backend"] == "torch"
    assert bag.episode["git_commit"]
    assert len(list((tmp_path / "ep").glob("*.mcap"))) > 1, "split by size"
    stamps = [m.timestamp for m in bag.messages()]
    assert stamps == sorted(stamps) and len(stamps) == 60
    statuses = [deserialize_message(m.data, String).data for m in bag.messages(["/graspvla/status"])]
    assert statuses == [f"s{i}" for i in range(20)]
    bag.check()
    with Reader(tmp_path / "ep") as reader:  # what ros2 bag / Foxglove use: the rosbag2 layout
        assert reader.message_count == 60
        assert json.loads(reader.storage.metadata.custom["graspvla.episode"])["instruction"] == "pick up the cube"


def test_split_by_duration(tmp_path):
    write_episode(tmp_path / "ep", n=30, split_seconds=1.0)
    assert len(list((tmp_path / "ep").glob("*.mcap"))) == 3
    assert open_bag(tmp_path / "ep").message_count == 90


@pytest.mark.parametrize("plugin", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_reads_plain_rosbag2_bags(tmp_path, plugin):
    """`ros2 bag record` output: a rosbag2 directory written by another writer, MCAP or sqlite3."""
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "plain", version=9, storage_plugin=plugin) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(5):
            w.write(conn, 10 + i, string(f"m{i}"))
    bag = open_bag(tmp_path / "plain")
    assert bag.storage == plugin.name.lower() and bag.topics["/chatter"].count == 5 and bag.episode == {}
    bag.check()
    assert [deserialize_message(m.data, String).data for m in bag.messages()] == [f"m{i}" for i in range(5)]


def test_unfinished_recording_reads_up_to_its_last_complete_chunk(tmp_path):
    w = BagWriter(tmp_path / "killed", chunk_seconds=1e9)
    w.add_topic("/s", "std_msgs/msg/String")
    for i in range(10):
        w.write("/s", i, string(str(i)))
    w.flush()                                   # chunk 1 reaches the disk
    for i in range(10, 15):
        w.write("/s", i, string(str(i)))        # still in the open chunk
    shutil.copytree(tmp_path / "killed", tmp_path / "copy")   # the files as a SIGKILL leaves them
    bag = open_bag(tmp_path / "copy")
    assert not bag.complete and bag.topics["/s"].count == 10
    bag.check()
    assert [deserialize_message(m.data, String).data for m in bag.messages()] == [str(i) for i in range(10)]
    single = open_bag(next((tmp_path / "copy").glob("*.mcap")))      # the .mcap file alone
    assert not single.complete and single.topics["/s"].count == 10


def test_single_mcap_file_of_a_closed_bag(tmp_path):
    write_episode(tmp_path / "ep", n=4)
    bag = open_bag(next((tmp_path / "ep").glob("*.mcap")))
    assert bag.complete and bag.message_count == 12
    bag.check()


# ------------------------------------------------------------------------------------ bad bags

def test_truncated_bag_is_one_clear_error(tmp_path):
    write_episode(tmp_path / "ep")
    mcap = next((tmp_path / "ep").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match="corrupt or truncated"):
        open_bag(tmp_path / "ep").check()


def test_corrupt_bag_is_one_clear_error(tmp_path):
    write_episode(tmp_path / "ep")
    mcap = next((tmp_path / "ep").glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    data[-200:-100] = b"\xff" * 100     # the summary section
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagError, match="corrupt"):
        open_bag(tmp_path / "ep").check()


def test_missing_topic_and_unknown_type_are_named(tmp_path):
    bag = open_bag(write_episode(tmp_path / "ep"))
    with pytest.raises(BagError, match="no topic /joint_states"):
        bag.check(["/joint_states", FRONT])
    with pytest.raises(BagError, match=r"unknown message type on .*sensor_msgs/msg/Image"):
        bag.check(known_type=lambda t: t != "sensor_msgs/msg/Image")


def test_newer_format_version_is_refused(tmp_path):
    write_episode(tmp_path / "ep")
    meta = tmp_path / "ep" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("version: 9", "version: 10"))
    with pytest.raises(BagError, match="format version 10 is newer"):
        open_bag(tmp_path / "ep")


def test_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="no such bag"):
        open_bag(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a bag"):
        open_bag(tmp_path / "empty")


# ------------------------------------------------------------------------------------ playback

def test_timeline_rate_start_loop_and_topic_choice(tmp_path):
    bag = open_bag(write_episode(tmp_path / "ep", n=10))
    due = [(d, m.topic) for d, m in timeline(bag, [FRONT], rate=2.0, start=0.5)]
    assert [round(d, 3) for d, _ in due] == [0.0, 0.05, 0.1, 0.15, 0.2]   # frames 5..9, half the gaps
    looped = timeline(bag, [FRONT], rate=1.0, start=0.0, loop=True)
    first_20 = [next(looped)[0] for _ in range(20)]
    assert first_20[10] == pytest.approx(0.9, abs=1e-3)      # the next loop starts one span later
    assert first_20[10:] == pytest.approx([d + first_20[10] for d in first_20[:10]])
    with pytest.raises(ValueError, match="outside the bag"):
        next(timeline(bag, [FRONT], start=5.0))
    with pytest.raises(BagError, match="no topic /x"):
        select_topics(bag, ["/x"])
    assert select_topics(bag, (), exclude=[SIDE]) == [FRONT, "/graspvla/status"]
    assert select_topics(bag, ["/*/color/*"]) == [FRONT, SIDE]
    with pytest.raises(BagError, match=r"no topic /debug/\* in the bag"):
        select_topics(bag, ["/debug/*"])
    assert parse_remaps(["/a:=/b"]) == {"/a": "/b"}
    with pytest.raises(ValueError, match="must be /from:=/to"):
        parse_remaps(["/a=/b"])


def test_pacer_waits_for_due_times_and_measures_lateness():
    now = [0.0]
    ticks = []
    pacer = Pacer(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s), tick=ticks.append,
                  tick_period=0.01)
    pacer.begin()
    assert pacer.wait(0.05) and now[0] == pytest.approx(0.05)
    now[0] = 0.2
    assert pacer.wait(0.1)
    assert pacer.lateness == pytest.approx([0.0, 0.1])
    assert len(ticks) >= 4
    assert not pacer.wait(1.0, stop=lambda: True)


def test_lock_step_cycles_follow_the_recorded_answers(tmp_path):
    """Each recorded chunk answered the observation at its stamp: the cycle releases up to it."""
    t = [1_000_000_000 + i * 100_000_000 for i in range(6)]
    with BagWriter(tmp_path / "ep") as w:
        w.add_topic(FRONT, "sensor_msgs/msg/Image")
        w.add_topic(SIDE, "sensor_msgs/msg/Image")
        w.add_topic(CHUNK, "trajectory_msgs/msg/MultiDOFJointTrajectory")
        for i, ti in enumerate(t):
            w.write(FRONT, ti, image(ti))
            w.write(SIDE, ti + 10, image(ti))
            if i in (2, 3):                       # answers to frames 0 and 2, arriving later
                w.write(CHUNK, ti + 20, chunk(t[0] if i == 2 else t[2]))
    bag = open_bag(tmp_path / "ep")
    played = select_topics(bag, (), exclude=[CHUNK])
    got = cycles(bag, played)
    assert [(c.release_until, c.stamp_ns) for c in got] == [(2, t[0]), (6, t[2])]
    assert got[0].observation == {FRONT: t[0], SIDE: t[0]}
    assert header_stamp_ns(got[1].recorded.data) == t[2]
    seen = [(c.index, {k: header_stamp_ns(m.data) for k, m in latest.items()}) for c, latest in observations(bag, played, got)]
    assert seen == [(0, {FRONT: t[0], SIDE: t[0]}), (1, {FRONT: t[2], SIDE: t[2]})]
    # without recorded answers: each complete pair of camera frames is a cycle
    bare = cycles(bag, played, answer_topic="/none")
    assert [c.release_until for c in bare] == [2, 4, 6, 8, 10, 12] and bare[0].recorded is None


def test_bag_info_command_names_topics_counts_and_episode(tmp_path, capsys):
    from graspvla_ros.cli import main

    write_episode(tmp_path / "ep", n=5)
    assert main(["bag-info", str(tmp_path / "ep"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "15 messages" in out and "pick up the cube" in out
    assert any(FRONT in line and " 5 " in line for line in out.splitlines())
    assert main(["bag-info", str(tmp_path / "nothing")]) == 2
    assert "no such bag" in capsys.readouterr().err

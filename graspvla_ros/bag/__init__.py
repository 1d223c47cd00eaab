"""rosbag2 recording and playback without ROS: MCAP writer with episode metadata, a reader for
this recorder's bags and `ros2 bag record` output (MCAP, sqlite3), and the playback timeline.

Pure core: no rclpy. The nodes (`recorder_node`, `player_node`) are thin adapters over it.
"""
from graspvla_ros.bag.reader import Bag, BagError, Message, open_bag
from graspvla_ros.bag.writer import BagWriter, episode_metadata

__all__ = ["Bag", "BagError", "BagWriter", "Message", "episode_metadata", "open_bag"]

"""rosbag2 recording and playback without ROS: MCAP writer with episode metadata, a reader for
this recorder's bags and `ros2 bag record` output (MCAP, sqlite3), and the playback timeline.

Pure core: no rclpy. The nodes (`recorder_node`, `player_node`) are thin adapters over it. The
names below load their module on first use, so that `graspvla_ros.bag.settings` (which the
launch file reads on the system Python) imports without rosbags.
"""
from graspvla_ros.lazy import attribute_loader

_MODULES = {"Bag": "reader", "BagError": "reader", "Message": "reader", "open_bag": "reader",
            "BagWriter": "writer", "episode_metadata": "writer"}
__all__ = sorted(_MODULES)

__getattr__ = attribute_loader(__name__, _MODULES)

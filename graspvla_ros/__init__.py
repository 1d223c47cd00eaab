"""graspvla_ros: GraspVLA on a Franka arm with two RealSense cameras, over ROS 2.

Layered (README, "Layout"; tests/test_layers.py): a ROS-free core and libraries, the thin rclpy
nodes over them (`graspvla_ros.nodes`), and the applications (`commands`, `cli`, `graph`,
`bringup`, `demo`) on top.
"""

__version__ = "0.1.0"

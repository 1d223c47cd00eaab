"""graspvla_ros: GraspVLA on a Franka arm with two RealSense cameras, over ROS 2.

The package root and its submodules form a pure-Python core that never imports rclpy;
`graspvla_ros.nodes` holds the thin rclpy adapters.
"""

__version__ = "0.1.0"

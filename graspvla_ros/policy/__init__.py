"""The policy's pure core (no rclpy): observations as the official GraspVLA client builds them,
the backend protocol and its backends (`graspvla`, `expert`), instructions and episodes.
`graspvla_ros/nodes/policy_node.py` is the thin ROS adapter."""

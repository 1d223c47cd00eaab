"""The policy's pure core (no rclpy): the cycle with its inputs and episode (`loop`), its
settings (`settings`), observations as the official GraspVLA client builds them
(`observation`), the backend protocol (`backend`) and the backends by name (`backends`:
`graspvla`, `expert`), instructions and episodes (`episode`), debug pictures (`debug`) and
the replay regression (`replay`), and a scripted stand-in policy for the controller's tests and
benchmark (`scripted`). `graspvla_ros/nodes/policy_node.py` is the thin ROS adapter."""

"""RealSense cameras without ROS: `intrinsics` (no pyrealsense2), device sources (`source`), the
driver thread (`driver`) and time mapping (`clock`). The package itself imports none of them, so
calibration and the sim use `intrinsics` without loading pyrealsense2, which must load after
rclpy in a ROS process (nodes/camera_node.py)."""

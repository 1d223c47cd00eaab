"""RealSense cameras without ROS: `intrinsics` (no pyrealsense2), device sources (`source`), the
driver thread (`driver`), time mapping (`clock`) and the cameras' settings (`settings`).

The names below load their module on first use: calibration and the sim use `intrinsics`, and
the launch file reads `settings` on the system Python, without loading pyrealsense2 (which must
load after rclpy in a ROS process: nodes/camera_node.py).
"""
from graspvla_ros.lazy import attribute_loader

_MODULES = {"ClockMapper": "clock", "CameraDriver": "driver", "DriverStatus": "driver", "StampedFrames": "driver",
            "CameraFrames": "source", "DeviceNotFound": "source", "Intrinsics": "intrinsics", "PlaybackFile": "source",
            "RealSenseDevice": "source", "RealSenseStream": "source", "SoftwareCamera": "source",
            "CameraSettings": "settings", "StreamSettings": "settings"}
__all__ = sorted(_MODULES)

__getattr__ = attribute_loader(__name__, _MODULES)

"""RealSense cameras without ROS: device sources, the driver thread and time mapping."""
from graspvla_ros.camera.clock import ClockMapper
from graspvla_ros.camera.driver import CameraDriver, DriverStatus, StampedFrames
from graspvla_ros.camera.source import (CameraFrames, DeviceNotFound, Intrinsics, PlaybackFile,
                                        RealSenseDevice, RealSenseStream, SoftwareCamera, StreamSettings)

__all__ = ["CameraDriver", "CameraFrames", "ClockMapper", "DeviceNotFound", "DriverStatus", "Intrinsics",
           "PlaybackFile", "RealSenseDevice", "RealSenseStream", "SoftwareCamera", "StampedFrames",
           "StreamSettings"]

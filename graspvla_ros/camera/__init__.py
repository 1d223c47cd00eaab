"""RealSense cameras without ROS: device sources, the driver thread and time mapping.

The names below load their module on first use, so that `graspvla_ros.camera.settings` (which
the launch file reads on the system Python) imports without librealsense.
"""
from importlib import import_module

_MODULES = {"ClockMapper": "clock", "CameraDriver": "driver", "DriverStatus": "driver", "StampedFrames": "driver",
            "CameraFrames": "source", "DeviceNotFound": "source", "Intrinsics": "source", "PlaybackFile": "source",
            "RealSenseDevice": "source", "RealSenseStream": "source", "SoftwareCamera": "source",
            "CameraSettings": "settings", "StreamSettings": "settings"}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)

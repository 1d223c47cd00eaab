"""rclpy side of the bag core (graspvla_ros.bag): message classes by type name and QoS between rclpy and rosbag2's offered_qos_profiles."""
from __future__ import annotations

import importlib

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime


def message_class(msgtype: str):
    """The rclpy class of 'pkg/msg/Type'; None when that package is not installed."""
    package, _, name = msgtype.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError, ValueError):
        return None


def subscription_qos(offered: list[QoSProfile], depth: int) -> QoSProfile:
    """A profile compatible with every publisher, as lossless as they allow (what `ros2 bag
    record` does): reliable unless a publisher is best effort, transient local (so a latched
    value is received) only when all publishers are."""
    reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def to_bag_qos(profile: QoSProfile) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, profile.depth,
               QosReliability.RELIABLE if profile.reliability == ReliabilityPolicy.RELIABLE else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
               else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def publisher_qos(recorded: list[Qos], depth: int) -> QoSProfile:
    """Republish as recorded: latched if the recorded publishers were, reliable otherwise too
    (a reliable publisher serves best-effort subscribers as well)."""
    latched = bool(recorded) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in recorded)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

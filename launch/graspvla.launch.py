"""ros2 launch graspvla_ros graspvla.launch.py graph:=robot robot_ip:=172.16.0.2 front_serial:=... side_serial:=...

Built from graspvla_ros.graph, the same description the project's own bringup runner uses.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from graspvla_ros.graph import GRAPH_ARGUMENTS, GRAPHS, PACKAGE, build


def _nodes(context):
    config_dir = os.path.join(get_package_share_directory(PACKAGE), "config")
    graph = LaunchConfiguration("graph").perform(context)
    arguments = {name: LaunchConfiguration(name).perform(context) for name in GRAPH_ARGUMENTS}
    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace or None,
            parameters=[os.path.join(config_dir, f) for f in spec.params_files] + [spec.params],
            remappings=list(spec.remaps.items()),
            output="screen",
            emulate_tty=True,
        )
        for spec in build(graph, arguments)
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("graph", default_value="robot", choices=sorted(GRAPHS),
                              description="robot: real Franka + RealSense; sim: MuJoCo world"),
        *[DeclareLaunchArgument(name, default_value="", description=text) for name, text in GRAPH_ARGUMENTS.items()],
        OpaqueFunction(function=_nodes),
    ])

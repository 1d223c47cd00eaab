"""ros2 launch graspvla_ros graspvla.launch.py graph:=robot robot_ip:=172.16.0.2 front_serial:=...
side_serial:=... checkpoint:=...

Built from graspvla_ros.graph, the same description the project's own bringup runner uses:
the arguments' descriptions come from the node parameters they set, and a graph that would
not work (no checkpoint, a missing camera serial, ...) is refused by `build` with one line
before any node starts. config/ comes from the package's share directory (graph.CONFIG_DIR),
so it runs from a `colcon build` install as well as from a checkout.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from graspvla_ros.graph import CONFIG_DIR, ENVIRONMENT, GRAPH_ARGUMENTS, GRAPHS, HOSTS, PACKAGE, build


def _nodes(context):
    graph = LaunchConfiguration("graph").perform(context)
    arguments = {name: LaunchConfiguration(name).perform(context) for name in GRAPH_ARGUMENTS}
    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace or None,
            parameters=[str(CONFIG_DIR / f) for f in spec.params_files] + [spec.params],
            remappings=list(spec.remaps.items()),
            output="screen",
            emulate_tty=True,
            prefix=" ".join(spec.prefix) or None,
            additional_env=spec.env or None,
        )
        for spec in build(graph, arguments, LaunchConfiguration("host").perform(context))
    ]


def generate_launch_description():
    return LaunchDescription([
        # large images: Fast DDS's default transports drop most 640×480 frames
        *[SetEnvironmentVariable(name, value) for name, value in ENVIRONMENT.items()],
        DeclareLaunchArgument("graph", default_value="robot", choices=list(GRAPHS),
                              description="robot: real Franka + RealSense; sim: MuJoCo world; replay: a recorded episode "
                                          "into the live policy"),
        DeclareLaunchArgument("host", default_value="all", choices=list(HOSTS),
                              description="two machines: `robot` on the real-time PC (cameras, controller), `policy` "
                                          "on the GPU machine, the same arguments on both; `all`: one machine"),
        # empty: not given, the node keeps what the graph or its config/*.yaml sets (the description says which)
        *[DeclareLaunchArgument(name, default_value="", description=argument.description())
          for name, argument in GRAPH_ARGUMENTS.items()],
        OpaqueFunction(function=_nodes),
    ])

"""ament_python package definition; also installs into a plain venv with pip."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "graspvla_ros"

NODES = {
    "controller_node": "graspvla_ros.nodes.controller_node:main",
    "scripted_chunks_node": "graspvla_ros.nodes.scripted_chunks_node:main",
    "camera_node": "graspvla_ros.nodes.camera_node:main",
    "sim_world_node": "graspvla_ros.nodes.sim_world_node:main",
    "calibration_node": "graspvla_ros.nodes.calibration_node:main",
    "recorder_node": "graspvla_ros.nodes.recorder_node:main",
    "player_node": "graspvla_ros.nodes.player_node:main",
    "policy_node": "graspvla_ros.nodes.policy_node:main",
    "model_view_node": "graspvla_ros.nodes.model_view_node:main",
}
TOOLS = {
    "graspvla": "graspvla_ros.cli:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/calibration", glob("calibration/*.yaml") + ["calibration/README.md"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="graspvla_ros developers",
    maintainer_email="graspvla-ros@example.org",
    description="ROS 2 stack running the GraspVLA grasping VLA on a Franka arm with two RealSense cameras.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in {**NODES, **TOOLS}.items()]
    },
)

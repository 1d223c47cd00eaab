"""App-level command-line entry points of the `graspvla` command (graspvla_ros.cli)."""

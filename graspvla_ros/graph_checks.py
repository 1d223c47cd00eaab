"""The checks that refuse a graph that would start but not work, each with one line naming the
argument to set (graph.build runs them for the launch file and bringup alike)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from graspvla_ros.policy.settings import TRANSPORTS


class GraphError(ValueError):
    """A graph that must not start as asked; the message is one line naming the argument to set."""


def configured(spec, name: str, config_dir: Path) -> Any:
    """The value parameter `name` (not a group's) of `spec` will start with: set by the graph, else
    in its config files (what the node reads, which a user may have edited), else None."""
    files = [yaml.safe_load((config_dir / f).read_text()) or {} for f in spec.params_files]
    found = [v for v in (f.get("/**", {}).get("ros__parameters", {}).get(name) for f in files) if v is not None]
    return spec.params[name] if name in spec.params else (found[-1] if found else None)


def check(graph: str, specs: list, config_dir: Path) -> None:
    """GraphError for a graph that would start but not work: the expert outside the simulator, the
    model without a checkpoint, the robot's cameras without their own serials, a replay without a bag."""
    nodes = {s.name: s for s in specs}
    if "policy" in nodes:
        backend = configured(nodes["policy"], "backend", config_dir)
        if backend == "expert" and graph != "sim":
            raise GraphError(f"{graph} graph: the expert backend plans from the simulator's ground truth, which only "
                             "the sim graph has: set backend:=graspvla (the model)")
        checkpoint, tiny = configured(nodes["policy"], "checkpoint", config_dir), configured(nodes["policy"], "tiny", config_dir)
        if backend == "graspvla" and not tiny and not (checkpoint and Path(checkpoint).is_dir()):
            what = f"checkpoint:={checkpoint} is not a directory" if checkpoint else "no GraspVLA checkpoint"
            raise GraphError(f"{graph} graph: {what}: set checkpoint:=<dir> (the official checkpoint: config.json, "
                             "preprocessor.npz, checkpoint/), or tiny:=true to try the graph on tiny random weights")
        transport = configured(nodes["policy"], "transport", config_dir)
        if transport not in TRANSPORTS:
            raise GraphError(f"{graph} graph: transport:={transport}: must be one of {', '.join(TRANSPORTS)}")
        if transport == "model_view" and \
                not configured(nodes["policy"], "jpeg_quality", config_dir):
            raise GraphError(f"{graph} graph: transport:=model_view sends the views as JPEGs, but the policy's "
                             "jpeg_quality is 0 (no JPEG): set it to 1 … 100 in config/policy.yaml (75: the official)")
    if "policy" in nodes and "controller" in nodes:
        strategy = configured(nodes["controller"], "strategy", config_dir)
        history = configured(nodes["policy"], "history", config_dir)
        if (strategy == "official_blocking") != (history == "commanded"):
            raise GraphError(f"{graph} graph: strategy:={strategy} with history:={history}: the official blocking "
                             "client's proprio is its commanded waypoints: set both strategy:=official_blocking and "
                             "history:=commanded, or neither")
    if graph == "robot":
        serials = {view: configured(nodes[f"{view}_camera"], "serial", config_dir) for view in ("front", "side")}
        for view, serial in serials.items():
            if not serial:
                raise GraphError(f"robot graph: no serial number for the {view} camera: set {view}_serial:=<serial> "
                                 "(`rs-enumerate-devices -s` lists the connected RealSense cameras)")
        if serials["front"] == serials["side"]:
            raise GraphError(f"robot graph: front_serial and side_serial are both {serials['front']}: set each "
                             "camera's own serial number")
    if graph == "replay" and not configured(nodes["player"], "bag", config_dir):
        raise GraphError("replay graph: no bag to replay: set bag:=<bag directory or .mcap/.db3 file>")

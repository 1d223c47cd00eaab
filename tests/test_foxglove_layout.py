"""The Foxglove layout (config/foxglove_layout.json) shows topics the stack publishes and records."""
import fnmatch
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _topics(node, found):
    """Every topic a panel names: image topics, 3D topics, and the topic part of message paths."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("imageTopic", "topicPath", "value") and isinstance(value, str):
                found.add(value.split(".", 1)[0])
            elif key == "topics" and isinstance(value, dict):
                found.update(value)
            else:
                _topics(value, found)
    elif isinstance(node, list):
        for item in node:
            _topics(item, found)
    return found


def test_every_panel_shows_a_documented_topic_and_the_layout_is_complete():
    layout = json.loads((ROOT / "config" / "foxglove_layout.json").read_text())
    panels = set(layout["configById"])
    placed = set(re.findall(r'"([A-Za-z0-9]+![A-Za-z0-9_]+)"', json.dumps(layout["layout"])))
    assert placed == panels, f"panels configured but not placed, or placed but not configured: {placed ^ panels}"
    documented = (ROOT / "docs" / "interfaces.md").read_text()
    topics = _topics(layout["configById"], set())
    assert {"/front/color/image_raw", "/side/color/image_raw", "/graspvla/status", "/graspvla/ee_pose"} <= topics
    for topic in topics:
        short = topic.rsplit("/", 1)[-1]
        assert f"`{topic}`" in documented or f"`~/{short}`" in documented or \
            fnmatch.filter([topic], "/graspvla/debug/*"), f"{topic} is in no table of docs/interfaces.md"

"""Debug pictures of a cycle (ROS-free): the view the model got with its predicted bbox drawn,
what policy_node publishes on /graspvla/debug/<view>/bbox_image."""
from __future__ import annotations

import cv2
import numpy as np

from graspvla_ros.preprocess import CLIENT_SIZE, MODEL_SIZE

BBOX_COLOUR = (0, 255, 0)


def bbox_view(view: np.ndarray, bbox) -> np.ndarray:
    """A copy of the 256×256 client `view` with `bbox` (x1 y1 x2 y2 in the 224 px model input,
    as the backends give it) drawn in green, scaled to the view."""
    image = np.ascontiguousarray(view).copy()
    scale = CLIENT_SIZE / MODEL_SIZE
    x1, y1, x2, y2 = (int(round(v * scale)) for v in bbox)
    cv2.rectangle(image, (x1, y1), (x2, y2), BBOX_COLOUR, 2)
    return image

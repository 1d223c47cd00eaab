"""GraspVLA image preprocessing, shared by the cameras (client side) and the model (server side).

The official pipeline is split in two: the robot client centre-crops 480×480 and resizes to
256×256 with cv2 INTER_CUBIC; the model server letterboxes to 224×224 with PIL LANCZOS.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

MODEL_SIZE = 224


def letterbox_to_model(image: np.ndarray, size: int = MODEL_SIZE) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB image to size×size keeping its aspect ratio (PIL LANCZOS),
    pasted at the top-left of a black canvas, as the official server does."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = Image.fromarray(image).resize((nw, nh), Image.LANCZOS)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, (0, 0))
    return np.asarray(canvas)

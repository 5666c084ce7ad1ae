"""Resizing a clean plate (or any frame) to the plate's size."""

from __future__ import annotations

import cv2
import numpy as np


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stretch HxW or HxWxC float32 `image` to `height` x `width`; dtype float32, same channels.

    Plain stretch, no crop: a clean plate shot at another resolution of the same framing
    lines up; residual offsets are the aligner's job. Area averaging when shrinking (no
    aliasing), bilinear when enlarging (no overshoot, so 0..1 data stays in range).
    """
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image.copy()
    shrinking = width * height < w * h
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing axis of size 1
        out = out[:, :, None]
    return out.astype(np.float32, copy=False)

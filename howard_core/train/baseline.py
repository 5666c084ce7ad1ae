"""The classical comparison: a clean-plate difference key with soft thresholds.

What a compositor would build by hand: grade the clean plate to the plate,
take the per-pixel colour distance, ramp it smoothly from 0 at a low threshold
to 1 at a high one, remove speckles and fill pinholes with a little
morphology, and soften the edge. The foreground is the plate itself.
"""

from __future__ import annotations

import cv2
import numpy as np


def _odd(n: float) -> int:
    return max(1, int(round(n)) // 2 * 2 + 1)


def difference_key(src: np.ndarray, bgr: np.ndarray, low: float = 0.06, high: float = 0.2,
                   match_gain: bool = True, denoise: float = 1.0, morph: int = 1,
                   soften: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Key the plate against its clean plate.

    src, bgr: (H, W, 3) float sRGB 0..1. Returns alpha (H, W) float32 0..1 and
    the foreground (H, W, 3), which is `src` (no colour decontamination).

    - match_gain: scale each channel of the clean plate by the median ratio
      plate / clean plate, which undoes an exposure or white-balance change
      because most of a frame is background.
    - denoise: Gaussian sigma (px) applied to both plates before differencing.
    - low, high: Euclidean RGB distance (0..sqrt(3)) where alpha starts to rise
      and where it reaches 1; smoothstep in between.
    - morph: radius (px) of an opening then a closing; 0 disables them.
    - soften: Gaussian sigma (px) on the final alpha.
    """
    plate = src = np.asarray(src, np.float32)
    bgr = np.asarray(bgr, np.float32)
    if src.shape != bgr.shape or src.ndim != 3 or src.shape[2] != 3:
        raise ValueError(f"plate and clean plate must both be (H, W, 3), got {src.shape} and {bgr.shape}")
    if match_gain:
        ok = (bgr > 0.02) & (src > 0.02)  # ratios of near-black pixels are noise
        gain = [np.median(src[..., c][ok[..., c]] / bgr[..., c][ok[..., c]]) if ok[..., c].any() else 1.0
                for c in range(3)]
        bgr = bgr * np.asarray(gain, np.float32)
    if denoise > 0:
        src = cv2.GaussianBlur(src, (0, 0), denoise)
        bgr = cv2.GaussianBlur(bgr, (0, 0), denoise)
    dist = np.sqrt(((src - bgr) ** 2).sum(axis=2))
    t = np.clip((dist - low) / max(high - low, 1e-6), 0, 1)
    alpha = (t * t * (3 - 2 * t)).astype(np.float32)
    if morph > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * morph + 1, 2 * morph + 1))
        alpha = cv2.morphologyEx(alpha, cv2.MORPH_OPEN, kernel)
        alpha = cv2.morphologyEx(alpha, cv2.MORPH_CLOSE, kernel)
    if soften > 0:
        alpha = cv2.GaussianBlur(alpha, (_odd(6 * soften), _odd(6 * soften)), soften)
    return np.clip(alpha, 0, 1), plate

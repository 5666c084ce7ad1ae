"""Fusion: several clean-plate frames, each already aligned to the same plate frame, made into one
cleaner clean plate.

A hand-held clean take films the same background several times; each aligned frame carries its own
sensor noise, its own small misalignments and its own blind spots (disocclusion, where the dense step
kept the homography). Averaged blindly they blur wherever they disagree; so every frame is weighted,
pixel by pixel, by how well it agrees with a target: the plate itself on the background, and the
chosen frame (the reference) under the subject, where the plate shows something else and has no say.
A frame that lines up as well as the best one there counts fully, one that is off by a few noise
levels not at all; where they all agree the noise averages out.

The weights vary smoothly (they come from blurred residuals), so they are measured on a reduced copy
and brought back up to full size: the fusion costs a few full-size passes.

Images are H x W x 3 float32 display-referred RGB (sRGB 0..1), masks H x W bool, all at plate size.
"""

from __future__ import annotations

import cv2
import numpy as np

from howard_core.align import geometry as geo
from howard_core.align import photometric as pm

# Weights: a frame whose blurred residual exceeds the best frame's by TAU (display units, mean absolute
# RGB) counts e^-1 as much; the residuals are blurred by a Gaussian of SIGMA (reduced px) first, so that
# single noisy pixels do not decide, and measured at REDUCED px on the long side.
_TAU = 0.004
_SIGMA = 1.5
_REDUCED = 480
# The reference always keeps this much weight (the best frame has 1), so that every pixel has some, well
# above the tiny constant cv2.blendLinear adds to the weights it divides by.
_FLOOR = 0.02


def fuse(reference: np.ndarray, covered: np.ndarray, others: list[tuple[np.ndarray, np.ndarray]],
         plate: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
    """The fused clean plate, a new H x W x 3 float32 array; outside `covered` it is `reference`.

    reference: the chosen clean-plate frame aligned (and exposure-matched) to `plate`, `covered` where
               it covers the plate (elsewhere it holds a copy of the plate, which stays).
    others:    (aligned frame, where it covers the plate) of each further clean-plate frame.
    plate:     the plate frame they were aligned to.
    subject:   where the plate shows the subject (agreement there is judged against `reference`), or None.
    """
    if not others:
        return reference.copy()
    size = (plate.shape[1], plate.shape[0])
    small = geo.scaled_size(size, _REDUCED)

    def reduced(img):
        return cv2.resize(img, small, interpolation=cv2.INTER_AREA)

    ref_small = reduced(reference)
    target = reduced(plate)
    if subject is not None:
        sub = cv2.resize(subject.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST).astype(bool)
        target[sub] = ref_small[sub]
    small_frames = [ref_small] + [reduced(img) for img, _ in others]
    errors = np.stack([cv2.GaussianBlur(pm.residual_map(target, img), (0, 0), _SIGMA) for img in small_frames])
    for k, (_, valid) in enumerate(others, start=1):
        # Uncovered pixels of a frame hold a copy of the plate: no evidence there, no weight.
        errors[k][cv2.resize(valid.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST) == 0] = np.inf
    weights = np.exp(-np.square((errors - errors.min(axis=0)) / _TAU))
    np.maximum(weights[0], _FLOOR, out=weights[0])
    # Frame by frame into a running weighted mean (cv2.blendLinear normalises by the two weights).
    out = reference
    total = cv2.resize(weights[0], size, interpolation=cv2.INTER_LINEAR)
    for k, (img, valid) in enumerate(others, start=1):
        w = cv2.resize(weights[k], size, interpolation=cv2.INTER_LINEAR)
        # Nor where the reduced map blurs across the edge of its cover, or outside the reference's.
        np.multiply(w, valid & covered, out=w)
        out = cv2.blendLinear(out, img, total, w)
        total += w
    pm.clip01(out)
    cv2.copyTo(reference, (~covered).view(np.uint8), dst=out)
    return out

"""The dense residual warp: what a homography leaves of the clean plate's misalignment, pixel by pixel.

A homography lines up one plane; a real set has depth, so after it the clean plate is still off along
everything nearer or further than that plane (parallax). This stage measures, on a reduced copy, the
per-pixel motion from the plate to the homography-warped clean plate, on background only, and turns it
into a sampling map for the final warp:

1. DIS optical flow (OpenCV) both ways between the plate's luma and the warped clean plate's, both at
   the clean plate's exposure (`fit_exposure` first, so brightness constancy holds).
2. Reliable motion: where the two directions agree (forward/backward check) and the clean plate,
   moved by the flow, then matches the plate within the noise. The rest is either the subject (large
   connected disagreement, grown by a margin: the flow there follows the subject, not the set) or
   background the clean take cannot see or cannot be tracked on (disocclusion, flat areas).
3. Under the subject the motion is not measured but filled in from the surrounding background by
   normalised convolution over a pyramid (push-pull), then smoothed with a guided filter steered by the
   clean plate itself, whose edges are the set's edges there, so that the fill follows depth edges and
   the clean plate under the subject is the background that belongs there.
4. Small unreliable patches (specks, flat texture) are filled like the subject; over large ones (1% of
   the frame or more: the clean take cannot see there, or nothing can be tracked) the homography is
   kept (zero residual motion), feathered so no seam shows.

All images here are h x w float32 at the reduced size; flows are h x w x 2 float32 in reduced pixels,
plate pixel x -> warped-clean pixel x + flow(x). `Residual` carries the statistics the QC records.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

# About 0.04 px median error at 480 px on natural texture, in 2.5 ms per direction on one core; a finer
# last scale (setFinestScale(1)) takes it to 0.03 px at nearly four times the cost.
_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
# After the flow, a pixel disagrees when its residual exceeds this many noise levels, and at least this
# much (display units): the flow interpolates a little noise away, which must not count as disagreement.
_BAD_NOISE = 5
_BAD_FLOOR = 0.04
# Forward and backward flow agree within half a reduced pixel plus 10% of the motion (larger motion is
# measured on coarser DIS scales, so it is less exact).
_FB_PX = 0.5
_FB_SHARE = 0.1
# Disagreement counts as subject in connected patches of at least 0.2% of the frame (16 px at the least);
# smaller ones are noise or small disocclusions.
_SUBJECT_SHARE = 0.002
_SUBJECT_MIN_PX = 16
# Unreliable background patches from 1% of the frame on keep the homography (`estimate`), feathered by a
# Gaussian of this sigma (reduced px) so no seam shows.
_FALLBACK_SHARE = 0.01
_FALLBACK_FEATHER = 2.0
# The guided filter after the fill: box radius 1/30 of the short side (at least 2 px), regulariser.
_GUIDE_SPAN = 30
_GUIDE_MIN_RADIUS = 2
_GUIDE_EPS = 1e-3


@dataclass
class Residual:
    """The residual motion of one frame, at the reduced size.

    flow:      h x w x 2 float32, reduced pixels: plate x -> homography-warped clean plate x + flow(x).
    reliable:  h x w bool, where the motion was measured and trusted (background, consistent).
    subject:   h x w bool, where the plate shows the subject (motion filled in from the surroundings).
    fallback:  h x w bool, background where the motion was unreliable: the homography is kept there.
    scale:     full-resolution plate pixels per reduced pixel.
    """

    flow: np.ndarray
    reliable: np.ndarray
    subject: np.ndarray
    fallback: np.ndarray
    scale: float

    @property
    def magnitude(self) -> float:
        """Mean residual motion over the reliable background, full-resolution plate pixels."""
        if not self.reliable.any():
            return 0.0
        # Lengths of the whole field, then the mask: gathering N x 2 rows first costs five times more.
        return float(_length(self.flow)[self.reliable].mean() * self.scale)

    def shares(self) -> dict:
        """Fractions of the frame: measured background, subject (filled), homography kept."""
        n = self.flow.shape[0] * self.flow.shape[1]
        return {"background": float(self.reliable.sum()) / n, "subject": float(self.subject.sum()) / n,
                "fallback": float(self.fallback.sum()) / n}


def _length(v: np.ndarray) -> np.ndarray:
    """Length of the 2-vectors along the last axis of `v` (float32 stays float32): what
    `np.linalg.norm(v, axis=-1)` gives, bit for bit, at a tenth of its cost (its reduction over an
    axis two long is slow)."""
    x, y = v[..., 0], v[..., 1]
    return np.sqrt(x * x + y * y)


def _u8(gray: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(gray, alpha=255)


def estimate(plate: np.ndarray, warped: np.ndarray, valid: np.ndarray, noise: float, scale: float,
             subject_hint: np.ndarray | None = None, grow: int = 4) -> Residual:
    """The residual motion from `plate` to `warped`, background only.

    plate, warped: h x w x 3 float32 sRGB at the reduced size; `warped` is the clean plate warped by the
                   homography and exposure-matched to the plate.
    valid:  h x w bool, where `warped` has clean-plate pixels.
    noise:  robust noise level of the residual (display units) for the photometric check.
    scale:  full-resolution pixels per reduced pixel (recorded; the work is all in reduced pixels).
    subject_hint: optional h x w bool known to be subject (e.g. the previous frame's matte, grown).
    grow:   subject margin in reduced pixels.
    """
    g_plate = cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY)
    g_warp = cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)
    a, b = _u8(g_plate), _u8(g_warp)
    dis = cv2.DISOpticalFlow_create(_PRESET)
    fwd = dis.calc(a, b, None)
    bwd = dis.calc(b, a, None)
    h, w = a.shape
    to = _grid(w, h) + fwd  # where each plate pixel lands in the warped clean plate
    back = cv2.remap(bwd, to, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fb = _length(fwd + back)
    moved = cv2.remap(warped, to, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mx, my = to[..., 0], to[..., 1]
    inside = valid & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    residual = cv2.transform(cv2.absdiff(plate, moved), np.full((1, 3), 1 / 3, np.float32))
    # Disagreement after the flow: what no motion of the background explains.
    bad = residual > max(_BAD_FLOOR, _BAD_NOISE * noise)
    consistent = fb < _FB_PX + _FB_SHARE * _length(fwd)
    # The subject: large connected disagreement (specks are noise or small disocclusions).
    hot = cv2.morphologyEx(bad.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    big = np.zeros(count, bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(_SUBJECT_MIN_PX, _SUBJECT_SHARE * h * w)
    subject = big[labels]
    if subject_hint is not None:
        subject |= subject_hint
    if grow > 0 and subject.any():
        subject = cv2.dilate(subject.astype(np.uint8),
                             cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))).astype(bool)
    reliable = inside & consistent & ~bad & ~subject
    unreliable = ~reliable & ~subject
    # Small unreliable patches (flat texture, specks) are filled like the subject; large ones (the clean
    # take cannot see there, or nothing can be tracked) keep the homography, with a soft edge.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(unreliable.astype(np.uint8), connectivity=8)
    large = np.zeros(count, bool)
    large[1:] = stats[1:, cv2.CC_STAT_AREA] >= _FALLBACK_SHARE * h * w
    fallback = large[labels] & unreliable
    flow = fill(fwd, reliable, g_warp)
    if fallback.any():
        keep = cv2.GaussianBlur((~fallback).astype(np.float32), (0, 0), _FALLBACK_FEATHER)
        flow *= _two(np.where(fallback, keep, np.float32(1.0)))
    return Residual(flow=flow, reliable=reliable, subject=subject & valid, fallback=fallback & valid,
                    scale=float(scale))


def fill(flow: np.ndarray, known: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """`flow` (h x w x 2) kept where `known`, filled smoothly elsewhere; then edge-aware smoothing.

    Push-pull normalised convolution: the weighted flow and its weights are averaged down a pyramid
    until every hole is covered, then each level is completed from the coarser one where its own weight
    is low. A guided filter (He et al.) steered by `guide` (h x w float32, the warped clean plate's luma)
    then smooths the filled field along the clean plate's edges; measured pixels are put back exactly.
    """
    if not known.any():
        return np.zeros_like(flow)
    # Weights are carried with one copy per flow channel: NumPy broadcasting an h x w x 1 array against
    # h x w x 2 is several times slower than the same arithmetic on equal shapes.
    w0 = _two(known.astype(np.float32))
    levels = [(flow * w0, w0)]
    while min(levels[-1][1].shape[:2]) > 4 and (levels[-1][1] <= 1e-3).any():
        f, w = levels[-1]
        levels.append((cv2.pyrDown(f), cv2.pyrDown(w)))
    f, w = levels[-1]
    est = f / np.maximum(w, 1e-6)
    for f, w in reversed(levels[:-1]):
        up = cv2.resize(est, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        conf = np.minimum(w, 1)  # weights are never negative
        # This level's own estimate f / w where it has weight, the coarser one where it has little. Where
        # w is below 1e-6, f (a weighted sum) is too, and its term vanishes: no separate case is needed.
        est = f * conf / np.maximum(w, 1e-6) + up * (1 - conf)
    est = est.astype(np.float32)
    r = max(_GUIDE_MIN_RADIUS, min(flow.shape[:2]) // _GUIDE_SPAN)
    smooth = _guided(guide, est, r, _GUIDE_EPS)
    cv2.copyTo(np.ascontiguousarray(flow, np.float32), known.view(np.uint8), dst=smooth)
    return smooth


def _two(plane: np.ndarray) -> np.ndarray:
    """An h x w float32 plane as h x w x 2, the same values in both channels."""
    return cv2.merge([plane, plane])


def _guided(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Guided filter of `src` (h x w x 2 float32, both channels at once) by grey `guide` (h x w float32),
    box radius r, regulariser eps."""
    k = (2 * r + 1, 2 * r + 1)
    mean_1 = cv2.boxFilter(guide, -1, k)
    var_i = _two(cv2.boxFilter(guide * guide, -1, k) - mean_1 * mean_1)
    g, mean_i = _two(guide), _two(mean_1)
    mean_p = cv2.boxFilter(src, -1, k)
    cov = cv2.boxFilter(g * src, -1, k) - mean_i * mean_p
    a = cov / (var_i + eps)
    b = mean_p - a * mean_i
    return cv2.boxFilter(a, -1, k) * g + cv2.boxFilter(b, -1, k)


@functools.lru_cache(maxsize=4)
def _grid(w: int, h: int) -> np.ndarray:
    """The pixel grid, h x w x 2 float32 (x, y); shared, never written."""
    g = np.dstack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
    g.flags.writeable = False
    return g


def sampling_map(h: np.ndarray, flow: np.ndarray, plate_size: tuple[int, int],
                 to_small: np.ndarray) -> np.ndarray:
    """Full-resolution map (H x W x 2 float32) for `cv2.remap` of the clean frame: plate px -> clean px.

    h:        homography clean px -> plate px (3x3).
    flow:     residual flow at the reduced size (reduced px).
    to_small: 3x3 mapping plate px -> reduced px (`geometry.resize_matrix`, what `cv2.resize` does).
    The map is computed exactly on the reduced grid and resized linearly (exact for the homography's
    part, which is smooth at that scale; the flow has no finer detail). `cv2.resize` clamps within half
    a reduced pixel of the edges, so those few rows and columns are computed exactly instead.
    """
    w, hh = plate_size
    sh, sw = flow.shape[:2]
    back = np.linalg.inv(to_small)
    m = np.linalg.inv(np.asarray(h, np.float64))
    # Reduced px (plus the flow) -> plate px -> clean px is one homography of the moved grid points.
    moved = _grid(sw, sh) + np.ascontiguousarray(flow, np.float32)
    full = cv2.resize(cv2.perspectiveTransform(moved, m @ back), (w, hh), interpolation=cv2.INTER_LINEAR)
    bx, by = min(w, int(np.ceil(back[0, 0] / 2)) + 1), min(hh, int(np.ceil(back[1, 1] / 2)) + 1)
    cols_all, rows_all = np.arange(w, dtype=np.float64), np.arange(hh, dtype=np.float64)
    near_x = np.clip(np.rint(to_small[0, 0] * cols_all + to_small[0, 2]), 0, sw - 1).astype(int)
    near_y = np.clip(np.rint(to_small[1, 1] * rows_all + to_small[1, 2]), 0, sh - 1).astype(int)
    for rows, cols in ((slice(0, by), slice(None)), (slice(hh - by, hh), slice(None)),
                       (slice(None), slice(0, bx)), (slice(None), slice(w - bx, w))):
        xs, ys = np.meshgrid(cols_all[cols], rows_all[rows])
        f = flow[near_y[rows][:, None], near_x[cols][None, :]].astype(np.float64)
        at = np.dstack([xs + back[0, 0] * f[..., 0], ys + back[1, 1] * f[..., 1]])
        full[rows, cols] = cv2.perspectiveTransform(at, m)
    return full

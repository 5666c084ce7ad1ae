"""Homography helpers shared by the aligner, its tests and the benchmark.

Pixel coordinates follow OpenCV: pixel centres sit at integer coordinates, so a homography `H` is realised
by `cv2.warpPerspective(src, H, size)`. Sizes are `(width, height)`. Homographies are 3x3 float64.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_matrix(src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """3x3 mapping pixel coordinates of an image to those of its `cv2.resize` to `dst_size`.

    `cv2.resize` aligns pixel areas, not pixel centres: x_dst = (x_src + 0.5) * dst_w / src_w - 0.5.
    Ignoring the half pixel would bias every fit made on a downscaled copy.
    """
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def scaled_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """`size` shrunk so that its long side is at most `long_side` (never enlarged), aspect kept."""
    w, h = size
    f = min(1.0, long_side / max(w, h))
    return max(1, round(w * f)), max(1, round(h * f))


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a homography to N x 2 points; returns N x 2 float64."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    p = np.c_[pts, np.ones(len(pts))] @ np.asarray(h, np.float64).T
    return p[:, :2] / p[:, 2:3]


def frame_corners(size: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of a `(width, height)` frame, clockwise from top-left, 4 x 2."""
    w, h = size
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def corner_errors(h_est: np.ndarray, h_true: np.ndarray, plate_size: tuple[int, int]) -> np.ndarray:
    """Misregistration at the plate's four corners, in plate pixels (4 floats).

    Plate pixel p is filled from clean-plate pixel inv(h_est) p, which truly lies at h_true inv(h_est) p
    in the plate: the distance to p is how far the background is off where it is used.
    """
    p = frame_corners(plate_size)
    q = project(np.asarray(h_true) @ np.linalg.inv(h_est), p)
    return np.linalg.norm(q - p, axis=1)


def corner_error(h_est: np.ndarray, h_true: np.ndarray, plate_size: tuple[int, int]) -> float:
    """Mean of `corner_errors`: the usual single accuracy figure for a homography, in plate pixels."""
    return float(corner_errors(h_est, h_true, plate_size).mean())


def _pixel_rect(size: tuple[int, int]) -> np.ndarray:
    """The area a `(width, height)` frame's pixels cover: edges half a pixel beyond the corner centres."""
    w, h = size
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip_to_rect(poly: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A convex polygon (N x 2) clipped to a frame's pixel area (Sutherland-Hodgman, one edge at a time).

    Written out rather than cv2.intersectConvexConvex, which returns nonsense for polygons sharing edges,
    exactly the case of a clean plate that lines up with the plate.
    """
    lo, hi = -0.5, (size[0] - 0.5, size[1] - 0.5)
    for axis, bound, keep_below in ((0, lo, False), (0, hi[0], True), (1, lo, False), (1, hi[1], True)):
        if len(poly) == 0:
            break
        out = []
        for k in range(len(poly)):
            p, q = poly[k], poly[(k + 1) % len(poly)]
            p_in = p[axis] <= bound if keep_below else p[axis] >= bound
            q_in = q[axis] <= bound if keep_below else q[axis] >= bound
            if p_in:
                out.append(p)
            if p_in != q_in:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
        poly = np.array(out).reshape(-1, 2)
    return poly


def _warped_frame(h: np.ndarray, clean_size: tuple[int, int]) -> np.ndarray | None:
    """The clean frame's pixel area mapped into the plate, or None if the map folds or goes to infinity."""
    rect = _pixel_rect(clean_size)
    if np.any(rect @ np.asarray(h)[2, :2] + h[2, 2] <= 1e-9):
        return None
    quad = project(h, rect)
    return quad if cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)) else None


def coverage(h: np.ndarray, clean_size: tuple[int, int], plate_size: tuple[int, int]) -> float:
    """Fraction (0..1) of the plate covered by the clean frame warped by `h` (clean -> plate)."""
    quad = _warped_frame(h, clean_size)
    if quad is None:
        return 0.0
    return float(np.clip(_area(_clip_to_rect(quad, plate_size)) / _area(_pixel_rect(plate_size)), 0, 1))


def overlap(h: np.ndarray, clean_size: tuple[int, int], plate_size: tuple[int, int]) -> float:
    """Intersection over union (0..1) of the plate and the clean frame warped by `h` (clean -> plate).

    Unlike `coverage` it drops when the clean frame sees much more than the plate, so it peaks where the
    two cameras' framings agree.
    """
    quad = _warped_frame(h, clean_size)
    if quad is None:
        return 0.0
    inter = _area(_clip_to_rect(quad, plate_size))
    union = _area(quad) + _area(_pixel_rect(plate_size)) - inter
    return float(np.clip(inter / union, 0, 1)) if union > 0 else 0.0


def implausibility(h: np.ndarray | None, clean_size: tuple[int, int], plate_size: tuple[int, int],
                   max_scale: float) -> str | None:
    """Why `h` (clean -> plate) cannot be a camera move between two takes of a shot, or None if it can.

    A hand-held clean pass shows the same scene at about the same framing, so the clean frame must land
    as a convex, unflipped quadrilateral whose local scale stays within `max_scale` of the plain resize
    between the two frame sizes everywhere over the frame.
    """
    if h is None or not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return "no homography"
    h = h / h[2, 2]
    corners = frame_corners(clean_size)
    den = corners @ h[2, :2] + h[2, 2]
    if np.any(den <= 1e-6):
        return "the horizon crosses the frame"
    quad = project(h, corners)
    if not cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)):
        return "warped frame is not convex"
    # Orientation: a flip (mirror) reverses the winding of the corners.
    if cv2.contourArea(quad.astype(np.float32), oriented=True) * cv2.contourArea(
            corners.astype(np.float32), oriented=True) <= 0:
        return "warped frame is mirrored"
    base = np.sqrt((plate_size[0] * plate_size[1]) / (clean_size[0] * clean_size[1]))
    # Local linear scale at each corner: sqrt(det(Jacobian)) = sqrt(det(H)) / den^1.5.
    local = np.sqrt(abs(np.linalg.det(h)) / den**3) / base
    if local.max() > max_scale or local.min() < 1 / max_scale:
        return f"scale {local.min():.2f}..{local.max():.2f} outside 1/{max_scale:g}..{max_scale:g}"
    return None


def coverage_mask(h: np.ndarray, clean_size: tuple[int, int], plate_size: tuple[int, int],
                  inset: float = 1.5) -> np.ndarray:
    """Plate pixels (H x W bool) that `h` (clean -> plate) fills from inside the clean frame, at least
    `inset` clean pixels inside its corner pixel centres.

    A homography maps the clean frame's border to a quadrilateral, so this is a polygon fill, far cheaper
    than warping a mask. The frame is shrunk first so that every pixel marked covered has its whole
    bilinear footprint inside the clean frame (cubic reaches a little further; the warp
    replicates the border for that last pixel).
    """
    w, hh = clean_size
    # Polygon filling also takes pixels the border merely passes through, up to a pixel outside the exact
    # quadrilateral: the default inset of one pixel more than bilinear needs keeps the mask conservative.
    a = inset
    inner = np.array([[a, a], [w - 1 - a, a], [w - 1 - a, hh - 1 - a], [a, hh - 1 - a]])
    den = inner @ h[2, :2] + h[2, 2]
    mask = np.zeros((plate_size[1], plate_size[0]), np.uint8)
    if np.all(den > 1e-9):
        quad = project(h, inner)
        # Clamp far-off corners (extreme zoom) so the fixed-point polygon fill cannot overflow.
        quad = np.clip(quad, -4 * max(plate_size), 5 * max(plate_size))
        cv2.fillPoly(mask, [np.round(quad * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    else:
        ones = np.ones((hh, w), np.uint8)
        mask = cv2.warpPerspective(ones, h, plate_size, flags=cv2.INTER_NEAREST)
    return mask.astype(bool)

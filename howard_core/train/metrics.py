"""Standard alpha-matting errors (Rhemann et al. 2009; the Deep Image Matting evaluation code).

Inputs are numpy arrays: alpha (H, W) and foreground (H, W, 3), float in 0..1
(foreground in sRGB). `region` (H, W) bool limits a measure to some pixels (a
trimap's unknown band); by default the whole frame counts, as in BGMv2's own
evaluation, which has no trimaps.

The functions return unscaled sums/means; `matting_errors` reports them at the
customary scale, named in its keys:

    sad_div1e3    sum |pred - true| / 1000
    mse_x1e3      mean (pred - true)^2 * 1000
    grad_div1e3   sum (|grad pred| - |grad true|)^2 / 1000, Gaussian-derivative gradients, sigma 1.4
    conn_div1e3   connectivity error / 1000, threshold step 0.1
    fgr_mse_x1e3  mean over pixels with true alpha > 0 and over RGB of (fgr - fgr*)^2 * 1000
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _prep(pred, true, region):
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"alpha mattes must both be (H, W), got {pred.shape} and {true.shape}")
    region = np.ones(pred.shape, bool) if region is None else np.asarray(region, bool)
    return pred, true, region


def sad(pred, true, region=None) -> float:
    """Sum of absolute differences over the region (alpha 0..1, unscaled)."""
    pred, true, region = _prep(pred, true, region)
    return float(np.abs(pred - true)[region].sum())


def mse(pred, true, region=None) -> float:
    """Mean squared error over the region (alpha 0..1, unscaled); 0 for an empty region."""
    pred, true, region = _prep(pred, true, region)
    n = int(region.sum())
    return float(((pred - true) ** 2)[region].sum() / n) if n else 0.0


def _gauss_derivative_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """x- and y-derivative-of-Gaussian kernels, unit L2 norm, sized where the Gaussian falls to 1e-2."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -u * g / sigma**2
    hx = np.outer(g, dg)  # rows: y (smoothing), columns: x (derivative)
    hx /= math.sqrt((hx**2).sum())
    return hx, hx.T.copy()


def gradient_magnitude(alpha, sigma: float = 1.4) -> np.ndarray:
    """|grad alpha| (H, W) with derivative-of-Gaussian filters, replicated borders."""
    hx, hy = _gauss_derivative_kernels(sigma)
    a = np.asarray(alpha, np.float64)
    gx = cv2.filter2D(a, cv2.CV_64F, hx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(a, cv2.CV_64F, hy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def gradient_error(pred, true, region=None, sigma: float = 1.4) -> float:
    """Sum over the region of (|grad pred| - |grad true|)^2, unscaled.

    Unlike the DIM MATLAB code, the mattes are not min-max stretched first
    (mat2gray): that stretch is undefined for a constant matte and rescales a
    prediction by its own range, so we use alpha as is, in 0..1.
    """
    pred, true, region = _prep(pred, true, region)
    d = gradient_magnitude(pred, sigma) - gradient_magnitude(true, sigma)
    return float((d**2)[region].sum())


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a bool mask (all False if the mask is empty)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def connectivity_error(pred, true, region=None, step: float = 0.1, min_degree: float = 0.15) -> float:
    """Connectivity error (Rhemann et al.), unscaled.

    For thresholds t = step, 2*step, .. 1, the source region is the largest
    4-connected component of (pred >= t) & (true >= t). A pixel's level l is the
    last threshold below the first one at which it leaves that region (1 if it
    never does). With d = alpha - l, phi = 1 - d * (d >= min_degree); the error
    is the sum over the region of |phi(pred) - phi(true)|.
    """
    pred, true, region = _prep(pred, true, region)
    n_steps = int(round(1 / step))
    level = np.full(pred.shape, -1.0)
    for i in range(1, n_steps + 1):
        t = i / n_steps
        omega = _largest_component((pred >= t) & (true >= t))
        leaving = (level == -1) & ~omega
        level[leaving] = (i - 1) / n_steps
    level[level == -1] = 1.0
    d_pred, d_true = pred - level, true - level
    phi_pred = 1 - d_pred * (d_pred >= min_degree)
    phi_true = 1 - d_true * (d_true >= min_degree)
    return float(np.abs(phi_pred - phi_true)[region].sum())


def foreground_mse(pred_fgr, true_fgr, true_pha) -> float:
    """Mean over pixels with true alpha > 0 and over the 3 channels of the squared colour error, unscaled.

    pred_fgr, true_fgr (H, W, 3) sRGB 0..1; true_pha (H, W). 0 if alpha is 0 everywhere.
    """
    pred_fgr, true_fgr = np.asarray(pred_fgr, np.float64), np.asarray(true_fgr, np.float64)
    mask = np.asarray(true_pha) > 0
    if not mask.any():
        return 0.0
    return float(((pred_fgr - true_fgr) ** 2)[mask].mean())


def matting_errors(pred_pha, true_pha, pred_fgr=None, true_fgr=None, region=None) -> dict[str, float]:
    """All errors at the customary scale (see the module docstring for the keys and units)."""
    out = {
        "sad_div1e3": sad(pred_pha, true_pha, region) / 1e3,
        "mse_x1e3": mse(pred_pha, true_pha, region) * 1e3,
        "grad_div1e3": gradient_error(pred_pha, true_pha, region) / 1e3,
        "conn_div1e3": connectivity_error(pred_pha, true_pha, region) / 1e3,
    }
    if pred_fgr is not None and true_fgr is not None:
        out["fgr_mse_x1e3"] = foreground_mse(pred_fgr, true_fgr, true_pha) * 1e3
    return out

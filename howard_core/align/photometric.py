"""Photometric pieces of alignment: exposure matching, the robust residual that ranks candidates, and a
coarse estimate of where the subject is.

All images are float32 RGB in the frames' own display-referred space (sRGB 0..1). The exposure model is
per channel `plate ~= gain * clean + bias` in that space: an exposure change is a gain on linear light,
which display encoding turns into nearly a gain (the power-law part of the curve), and the bias absorbs
flare and black-level shifts.
"""

from __future__ import annotations

import cv2
import numpy as np

# Pixels this close to either end of the range are clipped in one take or the other and break the linear
# exposure model, so they take no part in the fit.
_CLIP_LO, _CLIP_HI = 0.01, 0.98
_MIN_PIXELS = 64
# A global gain and bias are pinned down by a few thousand pixels; more only costs time.
_FIT_PIXELS = 3000
# Median absolute deviation -> standard deviation, for Gaussian noise.
_MAD_SIGMA = 1.4826
# The exposure fit: a pixel whose residual is beyond this many robust sigmas (in any channel) is refitted
# without; gains are kept within two stops either way (beyond is not an exposure change but a bad fit);
# a channel whose variance is below this has too little contrast to fit a gain.
_OUTLIER_SIGMAS = 2.5
_GAIN_RANGE = (0.25, 4.0)
_FLAT_VARIANCE = 1e-6
# `ncc` high-passes with a box of this size (score-size px): structure, not brightness gradients.
_HIGHPASS = (9, 9)
# `subject_estimate`: subject beyond this many noise sigmas, and at least this residual (display units).
_SUBJECT_SIGMAS = 6
_SUBJECT_FLOOR = 0.05
# `local_agreement`: windows with less variance than a few noise steps have no structure to agree on.
_TEXTURE_VARIANCE = 1e-4
# `agreeing_background`: local correlation that counts as the same structure, and the least share of the
# covered frame that must agree for the test to be trusted.
_AGREE = 0.7
_AGREE_MIN_SHARE = 0.01
# `background_exposure`: after a fit, the subject is beyond this many sigmas and this residual (looser
# than `subject_estimate`: the fit is refitted without it), grown by a 5 x 5 box.
_REFIT_SIGMAS = 4
_REFIT_FLOOR = 0.03
_REFIT_GROW = (5, 5)


def fit_exposure(clean: np.ndarray, plate: np.ndarray, mask: np.ndarray,
                 iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gain and bias (two float64 arrays of C) so that `gain * clean + bias ~= plate`.

    clean, plate: h x w x C float32, the same pixels of the two takes (clean already warped into place).
    mask: h x w bool, where both show background. The fit is least squares, refitted `iterations` times
    without the pixels whose residual (in any channel) exceeds 2.5 robust sigmas, so what the mask misses
    (subject edges, moving leaves) does not drag it. A channel with too little contrast to fit a gain
    gets gain 1 and a bias only. Pixels clipped in either take are left out: they break the model.
    """
    channels = clean.shape[2]
    gain, bias = np.ones(channels), np.zeros(channels)
    idx = np.flatnonzero(mask)
    idx = idx[:: max(1, len(idx) // _FIT_PIXELS)]
    # Channels x pixels, so that every reduction runs along contiguous memory.
    x = np.ascontiguousarray(clean.reshape(-1, channels)[idx].T, dtype=np.float64)
    y = np.ascontiguousarray(plate.reshape(-1, channels)[idx].T, dtype=np.float64)
    usable = np.all((x > _CLIP_LO) & (x < _CLIP_HI) & (y > _CLIP_LO) & (y < _CLIP_HI), axis=0)
    x, y = x[:, usable], y[:, usable]
    for k in range(iterations + 1):
        if x.shape[1] < _MIN_PIXELS:
            break
        mx, my = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
        dx = x - mx
        var = (dx * dx).mean(1, keepdims=True)
        cov = (dx * (y - my)).mean(1, keepdims=True)
        gain = np.where(var < _FLAT_VARIANCE, 1.0, np.clip(cov / np.maximum(var, 1e-12), *_GAIN_RANGE))
        bias = my - gain * mx
        if k < iterations:
            # Residuals in units of each channel's robust sigma (1.4826 x median absolute residual); a
            # pixel goes if any channel is beyond 2.5 sigmas.
            r = np.abs(y - (gain * x + bias))
            half = r.shape[1] // 2
            r /= np.maximum(_MAD_SIGMA * np.partition(r, half, axis=1)[:, half:half + 1], 1e-6)
            keep = r.max(axis=0) <= _OUTLIER_SIGMAS
            x, y = x[:, keep], y[:, keep]
    return np.ravel(gain).astype(np.float64), np.ravel(bias).astype(np.float64)


def apply_exposure(img: np.ndarray, gain: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`gain * img + bias` per channel, clipped to 0..1; h x w x 3 float32 in, a new array out, or
    written to `out` (same shape, float32; `img` itself to work in place, which spares a full-size
    allocation: every pixel is read before it is written)."""
    m = np.zeros((3, 4), np.float32)
    m[np.arange(3), np.arange(3)] = gain
    m[:, 3] = bias
    return clip01(cv2.transform(img, m, dst=out))


def clip01(img: np.ndarray) -> np.ndarray:
    """Clip a float32 image to 0..1 in place (OpenCV's min/max are several times faster than np.clip).

    The bounds are given per channel: OpenCV reads a bare number as (number, 0, 0, 0).
    """
    cv2.min(img, (1.0, 1.0, 1.0, 1.0), dst=img)
    cv2.max(img, (0.0, 0.0, 0.0, 0.0), dst=img)
    return img


def residual_map(plate: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute RGB difference, h x w float32."""
    return cv2.transform(cv2.absdiff(plate, matched), np.full((1, 3), 1 / 3, np.float32))


def trimmed_mean(values: np.ndarray, keep: float = 0.9) -> float:
    """Mean of the smallest `keep` fraction of `values` (a 1-D float array); nan when empty."""
    n = len(values)
    if n == 0:
        return float("nan")
    k = max(1, int(n * keep))
    return float(np.partition(values, k - 1)[:k].mean())


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of two h x w float32 images over `mask` (-1..1; 0 when flat).

    Both images are high-passed first so that the score reflects matching structure, not matching
    overall brightness gradients, and it is independent of gain and bias.
    """
    idx = np.flatnonzero(mask)
    if len(idx) < _MIN_PIXELS:
        return 0.0
    idx = idx[:: max(1, len(idx) // (4 * _FIT_PIXELS))]
    ha = a - cv2.blur(a, _HIGHPASS)
    hb = b - cv2.blur(b, _HIGHPASS)
    x, y = ha.ravel()[idx].astype(np.float64), hb.ravel()[idx].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 else 0.0


def subject_estimate(residual: np.ndarray, valid: np.ndarray, grow: int) -> np.ndarray:
    """Where plate and matched clean plate disagree beyond noise: a coarse subject mask (h x w bool).

    residual: h x w float32 from `residual_map`; valid: where it is meaningful. The threshold adapts to the
    noise level of the footage; isolated specks are removed and the rest grown by `grow` pixels so that
    soft edges and motion blur around the subject are covered too.
    """
    r = residual[valid]
    if r.size < _MIN_PIXELS:
        return np.zeros_like(valid)
    sigma = _MAD_SIGMA * float(np.median(r))
    hot = ((residual > max(_SUBJECT_FLOOR, _SUBJECT_SIGMAS * sigma)) & valid).astype(np.uint8)
    hot = cv2.morphologyEx(hot, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if grow > 0:
        hot = cv2.dilate(hot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return hot.astype(bool)


def local_agreement(a: np.ndarray, b: np.ndarray, radius: int = 3) -> np.ndarray:
    """Local normalised cross-correlation of two h x w float32 lumas over (2r+1)^2 windows, -1..1.

    Independent of gain and bias, so it tells background (same structure in both takes) from subject
    before any exposure is known; flat windows (no structure to compare) come out 0.
    """
    k = (2 * radius + 1, 2 * radius + 1)
    ma, mb = cv2.boxFilter(a, -1, k), cv2.boxFilter(b, -1, k)
    va = cv2.boxFilter(a * a, -1, k) - ma * ma
    vb = cv2.boxFilter(b * b, -1, k) - mb * mb
    cov = cv2.boxFilter(a * b, -1, k) - ma * mb
    # Windows with less contrast than a few noise steps have no structure to agree on.
    textured = (va > _TEXTURE_VARIANCE) & (vb > _TEXTURE_VARIANCE)
    return np.where(textured, cov / np.sqrt(np.maximum(va * vb, 1e-12)), 0.0).astype(np.float32)


def agreeing_background(warped: np.ndarray, plate: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where the local structure of the two takes agrees (h x w bool, within `valid`): background by a
    test independent of exposure; all of `valid` when almost nothing agrees (blank or foreign frames)."""
    agree = local_agreement(cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY), cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY))
    bg = valid & (agree > _AGREE)
    return bg if bg.sum() >= max(_MIN_PIXELS, _AGREE_MIN_SHARE * valid.sum()) else valid.copy()


def background_exposure(warped: np.ndarray, plate: np.ndarray, valid: np.ndarray, *,
                        priors: tuple = (), iterations: int = 2, margin: float = 0.02, seeded: bool = True):
    """Exposure from confident background only, for plates whatever share of them the subject covers.

    warped, plate: h x w x 3 float32, the clean plate warped into the plate and the plate itself.
    valid: h x w bool, where the clean plate covers the plate (and is not known subject).
    priors: (name, gain, bias) alternatives, e.g. neighbouring frames' exposure.
    Returns (gain, bias, background, source): background (h x w bool) the pixels agreed to be
    background, source "fit", "identity" or a prior's name. Iterative: the first background is where
    the local structure of the two takes agrees (exposure-independent; with `seeded` False, all of
    `valid`, for a mask already agreed); then `iterations` rounds of fit -> residual -> subject
    estimate, and the fit on the background that is left. The fit is
    kept only if it beats every alternative (identity, priors) on that background by more than
    `margin` (relative): an exact clean plate keeps unit gain and zero bias, and a fit never does
    worse than the identity.
    """
    bg = agreeing_background(warped, plate, valid) if seeded else valid.copy()
    for _ in range(iterations):
        gain, bias = fit_exposure(warped, plate, bg)
        residual = residual_map(plate, apply_exposure(warped, gain, bias))
        r = residual[bg]
        if r.size < _MIN_PIXELS:
            break
        sigma = _MAD_SIGMA * float(np.median(r[:: max(1, r.size // _FIT_PIXELS)]))
        subject = (residual > max(_REFIT_FLOOR, _REFIT_SIGMAS * sigma)) & valid
        subject = cv2.morphologyEx(subject.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        bg = valid & ~cv2.dilate(subject, np.ones(_REFIT_GROW, np.uint8)).astype(bool)
        if bg.sum() < _MIN_PIXELS:
            bg = agreeing_background(warped, plate, valid) if seeded else valid.copy()
            break
    gain, bias = fit_exposure(warped, plate, bg)

    idx = np.flatnonzero(bg)
    idx = idx[:: max(1, len(idx) // _FIT_PIXELS)]
    xs = warped.reshape(-1, 3)[idx].astype(np.float64)
    ys = plate.reshape(-1, 3)[idx].astype(np.float64)

    def cost(g, b) -> float:
        # On a sample of the background: the alternatives differ by far more than its sampling noise.
        return trimmed_mean(np.abs(ys - np.clip(xs * g + b, 0, 1)).mean(1))

    fitted = cost(gain, bias)
    best_name, best_g, best_b = "identity", np.ones(3), np.zeros(3)
    best = cost(best_g, best_b)
    for name, g, b in priors:
        c = cost(np.asarray(g, np.float64), np.asarray(b, np.float64))
        if c < best * (1 - margin):
            best_name, best_g, best_b, best = name, np.asarray(g, np.float64), np.asarray(b, np.float64), c
    if np.isfinite(fitted) and (not np.isfinite(best) or fitted < best * (1 - margin)):
        return gain, bias, bg, "fit"
    return best_g, best_b, bg, best_name

"""Training data: synthetic composites made on the fly, and a user's folder of layers.

Every image here is display-referred sRGB in 0..1, float32, like the network's
input. Arrays are (H, W, 3) / (H, W) while being made and (3, H, W) / (1, H, W)
tensors once a dataset hands them out.

A sample is the real-world problem in miniature: the plate `src` is the subject
composited over the true background *with* the subject's cast shadow; the clean
plate `bgr` is that background as a separate shot would see it: off by a small
homography plus local parallax, at another exposure and white balance, with its
own noise and a touch of blur, and without the shadow.

Determinism: sample `i` of a dataset depends only on (split, seed, i), so a
held-out set is reproduced exactly from its seed, and training resumes on the
same data stream. The "train" and "heldout" splits feed different entropy to
numpy's SeedSequence, so no seed of one split can reproduce a sample of the other.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from howard_core.errors import HowardError

SPLITS = {"train": 0x7261696E, "heldout": 0x68656C64}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def sample_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The generator that sample `index` of (`split`, `seed`) is drawn from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    return np.random.default_rng(np.random.SeedSequence([SPLITS[split], int(seed), int(index)]))


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


@dataclass(frozen=True)
class PlateGap:
    """How far the clean plate may be from the background really behind the subject.

    Each magnitude is a maximum (or a standard deviation where stated); every
    sample draws its own value below it, so some samples are nearly perfect.
    Lengths are fractions of max(H, W) so the gap looks the same at any size.
    """

    corner_shift: float = 0.012  # homography: max displacement of each frame corner
    parallax: float = 0.004  # max amplitude of a smooth local displacement field
    exposure: float = 0.12  # std of log2 exposure change (applied in linear light)
    white_balance: float = 0.04  # std of the per-channel log2 gain
    noise: float = 0.02  # max std of the sensor noise, drawn separately per plate
    blur: float = 0.0015  # max Gaussian sigma of the clean plate's extra softness
    shadow_prob: float = 0.6  # chance that the subject casts a shadow into the plate

    @classmethod
    def none(cls, shadow_prob: float = 0.0) -> PlateGap:
        """A perfect clean plate: aligned, same exposure, noise-free, sharp."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, shadow_prob)


@dataclass
class Sample:
    """One composite as numpy arrays, with the parameters that made its clean plate.

    `warp` (3, 3) maps a pixel (x, y, 1) of the clean plate to where the clean
    plate samples the true background, before the parallax field `flow` (H, W, 2)
    is added. `gain` (3,) is the clean plate's multiplier in sRGB space; `shadow`
    (H, W) is the fraction of light the shadow removes from the plate.
    """

    src: np.ndarray
    bgr: np.ndarray
    pha: np.ndarray
    fgr: np.ndarray
    bgr_true: np.ndarray
    shadow: np.ndarray
    warp: np.ndarray
    flow: np.ndarray
    gain: np.ndarray

    def tensors(self) -> dict[str, torch.Tensor]:
        """src, bgr, fgr, bgr_true (3, H, W) and pha (1, H, W), float32 sRGB 0..1."""

        def chw(a: np.ndarray) -> torch.Tensor:
            a = a[:, :, None] if a.ndim == 2 else a
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))

        return {"src": chw(self.src), "bgr": chw(self.bgr), "pha": chw(self.pha), "fgr": chw(self.fgr),
                "bgr_true": chw(self.bgr_true)}


# ---------------------------------------------------------------- procedural pieces


def _random_color(rng, sat=(0.0, 1.0), val=(0.05, 1.0)) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb, np.float32)


def _noise(rng, h: int, w: int, cells: float, octaves: int = 1, persistence: float = 0.5) -> np.ndarray:
    """Smooth fractal value noise (H, W) stretched to 0..1; `cells` = features across the frame."""
    acc = np.zeros((h, w), np.float32)
    amp = 1.0
    for octave in range(octaves):
        n = cells * 2**octave
        gh, gw = max(2, round(n * h / max(h, w)) + 1), max(2, round(n * w / max(h, w)) + 1)
        acc += amp * cv2.resize(rng.random((gh, gw), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= persistence
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _rep3(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) copy; numpy broadcasting of a[:, :, None] against 3 channels is several times slower."""
    return cv2.merge([a, a, a])


def _lerp(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Blend two colours (3,) by t (H, W) into (H, W, 3); per-channel 2-D ops are ~3x faster than broadcasting."""
    d = c1 - c0
    return cv2.merge([t * float(d[k]) + float(c0[k]) for k in range(3)])


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    """Position along direction `angle`, 0..1 across the frame, as (H, W)."""
    u = (np.arange(w, dtype=np.float32)[None] * math.cos(angle)
         + np.arange(h, dtype=np.float32)[:, None] * math.sin(angle))
    return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)


def _pts(points) -> np.ndarray:
    # Drawing with shift=4 keeps 1/16-pixel precision, so small shapes are not snapped to the grid.
    return np.round(np.asarray(points, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)


# Photographs that scikit-image ships inside its wheel, each CC0 or public domain (see the
# docstrings in skimage.data): real texture statistics with nothing downloaded. Pictures of people
# and files of unclear licence are left out.
PHOTOS = ("brick.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png", "rocket.jpg",
          "hubble_deep_field.jpg", "ihc.png", "camera.png")
PHOTO_PROB = 0.45
_photo_cache: list[np.ndarray] = []


def photo_library() -> list[np.ndarray]:
    """The bundled photographs as float32 sRGB (h, w, 3) arrays, read once per process.

    HowardError if scikit-image is missing, rather than quietly training on other data.
    """
    if not _photo_cache:
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        if spec is None or spec.origin is None:
            raise HowardError("synthetic training data needs the photographs shipped with scikit-image; "
                              "install it with: pip install 'howard-core[train]'")
        folder = Path(spec.origin).parent / "data"
        for name in PHOTOS:
            img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
            if img is None:
                raise HowardError(f"{folder / name}: missing or unreadable; reinstall scikit-image")
            _photo_cache.append(img[:, :, ::-1].astype(np.float32) / 255.0)
    return _photo_cache


def photo_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop (H, W, 3) of one bundled photograph, sRGB 0..1.

    The crop is scaled, flipped and sometimes rotated a quarter turn; grey photographs get a tint.
    Then a random per-channel gain and a saturation change so that eight photographs give many
    looks.
    """
    lib = photo_library()
    img = lib[int(rng.integers(len(lib)))]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.25:
        img = np.rot90(img)
    ih, iw = img.shape[:2]
    # Zoom 1 shows the whole short side of the photograph; past 3x the crop is only blur upscaled.
    scale = max(h / ih, w / iw) * rng.uniform(1.0, 3.0)
    ch, cw = min(ih, int(math.ceil(h / scale))), min(iw, int(math.ceil(w / scale)))
    y, x = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = np.ascontiguousarray(img[y:y + ch, x:x + cw])
    out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if ch > h else cv2.INTER_CUBIC)
    grey = out.mean(axis=2, keepdims=True)
    if float(np.abs(out - grey).max()) < 1e-3:  # a grey photograph
        out = grey * _random_color(rng, sat=(0.0, 0.4), val=(0.8, 1.0))
    sat = rng.uniform(0.5, 1.3)
    out = grey + sat * (out - grey)
    out = out * rng.uniform(0.75, 1.25, 3).astype(np.float32) * rng.uniform(0.6, 1.3)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background (H, W, 3) in sRGB 0..1: a photograph or a procedural scene.

    The base is, with probability `PHOTO_PROB`, a crop of a bundled
    photograph; otherwise a linear/radial gradient, coloured fractal noise, or
    a wall/floor "room". Either is overlaid with random shapes, stripes or
    tiles, grain, uneven light and sometimes defocus blur.
    """
    s = max(h, w)
    c0, c1, c2 = (_random_color(rng) for _ in range(3))
    r = rng.random()
    if r < PHOTO_PROB:
        img = photo_background(rng, h, w)
    elif (r := (r - PHOTO_PROB) / (1 - PHOTO_PROB)) < 0.3:
        t = _coords(h, w, rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.4:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            t = np.hypot(np.arange(w, dtype=np.float32)[None] - cx, np.arange(h, dtype=np.float32)[:, None] - cy)
            t = np.clip(t / max(float(t.max()), 1e-6), 0, 1)
        img = _lerp(t, c0, c1)
    elif r < 0.7:
        t = _noise(rng, h, w, rng.uniform(1.5, 8), octaves=int(rng.integers(1, 5)))
        img = np.where(_rep3(t) < 0.5, _lerp(np.clip(2 * t, 0, 1), c0, c1),
                       _lerp(np.clip(2 * t - 1, 0, 1), c1, c2))
    else:
        horizon = int(h * rng.uniform(0.3, 0.85))
        img = np.empty((h, w, 3), np.float32)
        img[:horizon] = c0 * (0.85 + 0.15 * _noise(rng, horizon, w, 3)[:, :, None])
        floor = _noise(rng, h - horizon, w, rng.uniform(4, 16), octaves=2)
        img[horizon:] = _lerp(floor, c1, c1 * 0.6)
    img = np.ascontiguousarray(img, dtype=np.float32)

    if rng.random() < 0.65:
        for _ in range(int(rng.integers(2, 14))):
            shape = np.zeros((h, w), np.uint8)
            kind = rng.integers(0, 4)
            cx, cy, size = rng.uniform(0, w), rng.uniform(0, h), s * rng.uniform(0.03, 0.35)
            if kind == 0:
                p0 = (cx - size * rng.uniform(0.2, 1), cy - size * rng.uniform(0.2, 1))
                p1 = (cx + size * rng.uniform(0.2, 1), cy + size * rng.uniform(0.2, 1))
                cv2.fillPoly(shape, [_pts([p0, (p1[0], p0[1]), p1, (p0[0], p1[1])])], 255, cv2.LINE_AA, 4)
            elif kind == 1:
                cv2.circle(shape, (int(cx * 16), int(cy * 16)), int(size * 16), 255, -1, cv2.LINE_AA, 4)
            elif kind == 2:
                n = int(rng.integers(3, 8))
                ang = np.sort(rng.uniform(0, 2 * math.pi, n))
                rad = size * rng.uniform(0.4, 1.0, n)
                cv2.fillPoly(shape, [_pts(np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1))], 255,
                             cv2.LINE_AA, 4)
            else:
                p0 = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
                p1 = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
                cv2.line(shape, p0, p1, 255, max(1, int(size * 0.15)), cv2.LINE_AA, 4)
            _over(img, None, _random_color(rng), shape, rng.uniform(0.5, 1.0))

    if rng.random() < 0.35:
        freq = rng.uniform(3, 40)
        u = _coords(h, w, rng.uniform(0, math.pi)) * freq
        if rng.random() < 0.5:
            pattern = (np.sin(2 * math.pi * u) > rng.uniform(-0.5, 0.5)).astype(np.float32)
        else:
            v = _coords(h, w, rng.uniform(0, math.pi)) * freq
            pattern = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        pattern = cv2.GaussianBlur(pattern, (0, 0), 0.6)
        stripe = _lerp(pattern, _random_color(rng), _random_color(rng))
        region = _noise(rng, h, w, 2) > rng.uniform(0.0, 0.6)
        img = np.where(_rep3(region.view(np.uint8)) > 0, img + rng.uniform(0.4, 1.0) * (stripe - img), img)

    grain = rng.uniform(0.0, 0.08)
    if grain > 0.01:
        img = img + _rep3(grain * (_noise(rng, h, w, rng.uniform(20, 80)) - 0.5))
    light = 0.75 + 0.45 * _noise(rng, h, w, rng.uniform(0.8, 2.5))
    img = img * _rep3(light)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 3.0) * s / 512 + 0.3)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _blob(cx, cy, rx, ry, rng, wobble=0.08, n=48, angle=0.0) -> np.ndarray:
    """Closed outline (n, 2) of an ellipse whose radius wobbles smoothly."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += wobble / k * rng.standard_normal() * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], 1)


def _mask(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


def _skin(rng) -> np.ndarray:
    light, dark = np.array([0.96, 0.80, 0.70]), np.array([0.30, 0.19, 0.13])
    c = light + rng.random() * (dark - light)
    return np.clip(c * rng.uniform(0.92, 1.08, 3), 0, 1).astype(np.float32)


def _hair_color(rng) -> np.ndarray:
    palette = [(0.05, 0.04, 0.03), (0.25, 0.15, 0.08), (0.55, 0.38, 0.2), (0.85, 0.72, 0.45),
               (0.6, 0.58, 0.56), (0.55, 0.2, 0.08)]
    c = np.array(palette[int(rng.integers(len(palette)))]) * rng.uniform(0.8, 1.2, 3)
    return np.clip(c, 0, 1).astype(np.float32)


def _fabric(rng, h: int, w: int) -> np.ndarray:
    """A cloth colour field (H, W, 3): plain, noisy or striped."""
    c0 = _random_color(rng)
    kind = rng.random()
    if kind < 0.4:
        t = _noise(rng, h, w, rng.uniform(2, 12)) * 0.25
        return _lerp(t, c0, c0 * 0.5)
    c1 = _random_color(rng)
    if kind < 0.7:
        u = _coords(h, w, rng.uniform(0, math.pi)) * rng.uniform(5, 40)
        t = cv2.GaussianBlur((np.sin(2 * math.pi * u) > 0).astype(np.float32), (0, 0), 0.7)
        return _lerp(t, c0, c1)
    return _lerp(_noise(rng, h, w, rng.uniform(3, 20), octaves=2), c0, c1)


def _over(acc_c, acc_a, color, mask, opacity=1.0):
    """Premultiplied 'over' of one layer onto the accumulation (colour, alpha or None), in place.

    `mask` (H, W) uint8 is the layer's coverage, `opacity` a scalar or an
    (H, W) field multiplying it, `color` a (3,) colour or an (H, W, 3) field.
    Work is limited to the mask's bounding box: layers are small next to the frame.
    """
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return
    box = (slice(y, y + bh), slice(x, x + bw))
    a = mask[box].astype(np.float32) * (1 / 255)
    if not np.isscalar(opacity):
        a *= opacity[box]
    elif opacity != 1.0:
        a *= opacity
    c = color[box] if color.ndim == 3 else color
    a3 = a[:, :, None]
    acc_c[box] += (c - acc_c[box]) * a3
    if acc_a is not None:
        acc_a[box] += (1 - acc_a[box]) * a


@dataclass(frozen=True)
class _Figure:
    """Where a `make_subject` figure stands in an h x w frame, in pixels: the head's centre (cx, hy) and
    radius r (which sets the scale of the whole figure), the shoulder line sy and half shoulder width sw, and
    a lean (radians) that shears the figure about the shoulder line."""

    h: int
    w: int
    cx: float
    hy: float
    r: float
    lean: float
    sy: float
    sw: float

    @classmethod
    def random(cls, rng: np.random.Generator, h: int, w: int) -> _Figure:
        r = float(h) * rng.uniform(0.06, 0.14)
        cx = w * rng.uniform(0.2, 0.8)
        hy = h * rng.uniform(0.12, 0.5)
        lean = rng.uniform(-0.15, 0.15)
        sy = hy + r * rng.uniform(1.5, 1.9)
        return cls(h, w, cx, hy, r, lean, sy, r * rng.uniform(1.7, 2.6))

    def tilt(self, pts) -> np.ndarray:
        """Points (..., 2) -> (N, 2) float64, leaning with the figure."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        dy = pts[:, 1] - self.sy
        return np.stack([pts[:, 0] + math.sin(self.lean) * dy, pts[:, 1]], 1)


def _draw_torso(rng, fig: _Figure, color: np.ndarray, alpha: np.ndarray, skin: np.ndarray,
                shirt: np.ndarray) -> None:
    """Torso (running out of the frame's bottom) in `shirt`, then the neck in shaded `skin`, onto the
    accumulation (`color` H x W x 3, `alpha` H x W)."""
    h, w, cx, hy, r, sy, sw = fig.h, fig.w, fig.cx, fig.hy, fig.r, fig.sy, fig.sw
    torso = _mask(h, w)
    bottom_w = sw * rng.uniform(0.7, 1.1)
    outline = [(cx - sw, sy + 0.5 * r), (cx - 0.8 * sw, sy), (cx + 0.8 * sw, sy), (cx + sw, sy + 0.5 * r),
               (cx + bottom_w, h + 2 * r), (cx - bottom_w, h + 2 * r)]
    cv2.fillPoly(torso, [_pts(fig.tilt(outline))], 255, cv2.LINE_AA, 4)
    cv2.fillPoly(torso, [_pts(fig.tilt(_blob(cx, sy + 0.4 * r, sw, 0.6 * r, rng, 0.05)))], 255, cv2.LINE_AA, 4)
    _over(color, alpha, shirt, torso)

    neck = _mask(h, w)
    neck_top, neck_base = fig.tilt([(cx, hy + 0.5 * r), (cx, sy + 0.2 * r)])
    cv2.line(neck, tuple(_pts(neck_top).ravel()), tuple(_pts(neck_base).ravel()), 255,
             max(1, int(0.75 * r)), cv2.LINE_AA, 4)
    _over(color, alpha, skin * 0.85, neck)


def _draw_arms(rng, fig: _Figure, color: np.ndarray, alpha: np.ndarray, skin: np.ndarray,
               shirt: np.ndarray) -> None:
    """Two bent arms (bare or in `shirt`) with hands, each sometimes hidden, onto the accumulation."""
    r = fig.r
    sleeve = skin if rng.random() < 0.4 else shirt
    for side in (-1, 1):
        if rng.random() < 0.15:
            continue  # an arm hidden behind the body or out of frame
        arm = _mask(fig.h, fig.w)
        shoulder = np.array([fig.cx + side * 0.85 * fig.sw, fig.sy + 0.4 * r])
        a1 = math.pi / 2 - side * rng.uniform(0.05, 1.2)  # upper arm, from straight down to raised sideways
        a2 = a1 - side * rng.uniform(-0.5, 1.8)
        seg = r * rng.uniform(1.6, 2.4)
        elbow = shoulder + seg * np.array([math.cos(a1), math.sin(a1)])
        wrist = elbow + seg * np.array([math.cos(a2), math.sin(a2)])
        thick = max(1, int(r * rng.uniform(0.5, 0.8)))
        path = fig.tilt([shoulder, elbow, wrist])
        cv2.polylines(arm, [_pts(path)], False, 255, thick, cv2.LINE_AA, 4)
        _over(color, alpha, sleeve, arm)
        hand = _mask(fig.h, fig.w)
        cv2.fillPoly(hand, [_pts(_blob(*path[2], 0.4 * r, 0.5 * r, rng, 0.15, angle=a2))], 255, cv2.LINE_AA, 4)
        _over(color, alpha, skin, hand)


def _hair_strands(rng, fig: _Figure, long_hair: bool) -> np.ndarray:
    """Coverage (H x W uint8) of thin strands: quadratic curves rooted on the scalp, pointing outwards and
    falling with gravity, drawn at four opacities."""
    cx, hy, r = fig.cx, fig.hy, fig.r
    n = int(rng.integers(20, 140) * max(1.0, r / 20))
    th = rng.uniform(-math.pi - 0.4, 0.4, n) if long_hair else rng.uniform(-math.pi, 0.05, n)
    root = np.stack([cx + 0.85 * r * np.cos(th), hy - 0.12 * r + 0.95 * r * np.sin(th)], 1)
    fall = (2.5 if long_hair else 0.6) * rng.random(n)
    direction = np.stack([np.cos(th), np.sin(th) + fall], 1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    tip = root + r * rng.uniform(0.15, 1.4 if long_hair else 0.6, (n, 1)) * direction
    ctrl = 0.5 * (root + tip) + 0.25 * r * rng.standard_normal((n, 2))
    t = np.linspace(0, 1, 8)[None, :, None]
    curves = (1 - t) ** 2 * root[:, None] + 2 * (1 - t) * t * ctrl[:, None] + t**2 * tip[:, None]
    curves = fig.tilt(curves).reshape(n, 8, 2)
    group = rng.integers(0, 4, n)
    strands = _mask(fig.h, fig.w)
    for g in range(4):
        polys = [_pts(c) for c in curves[group == g]]
        if polys:
            # Later groups overwrite earlier ones where they cross, which varies strand opacity.
            cv2.polylines(strands, polys, False, int(255 * (0.35 + 0.2 * g)), 1, cv2.LINE_AA, 4)
    return strands


def _draw_head_and_hair(rng, fig: _Figure, color: np.ndarray, alpha: np.ndarray, skin: np.ndarray) -> None:
    """Long hair behind the head (sometimes), the head in `skin`, the hair cap and the strands, onto the
    accumulation."""
    cx, hy, r = fig.cx, fig.hy, fig.r
    hair = _hair_color(rng)
    hair_field = _lerp(_noise(rng, fig.h, fig.w, rng.uniform(10, 40)), hair * 0.7, np.minimum(hair * 1.3, 1))
    long_hair = rng.random() < 0.4
    if long_hair:
        # Long hair falls behind the head to the shoulders, so it is drawn before the face.
        back = _mask(fig.h, fig.w)
        fall = [(cx - 0.95 * r, hy - 0.3 * r), (cx + 0.95 * r, hy - 0.3 * r),
                (cx + r * rng.uniform(0.9, 1.4), hy + r * rng.uniform(1.8, 3.0)),
                (cx - r * rng.uniform(0.9, 1.4), hy + r * rng.uniform(1.8, 3.0))]
        cv2.fillPoly(back, [_pts(fig.tilt(fall))], 255, cv2.LINE_AA, 4)
        _over(color, alpha, hair_field * 0.8, back)

    head = _mask(fig.h, fig.w)
    cv2.fillPoly(head, [_pts(_blob(cx, hy, 0.78 * r, r, rng, 0.05, angle=fig.lean))], 255, cv2.LINE_AA, 4)
    _over(color, alpha, skin, head)

    # The hair cap covers the skull down to the hairline (all of it for a subject seen from behind).
    hairline = hy + r * (1.1 if rng.random() < 0.15 else rng.uniform(-0.7, -0.25))
    cap = _blob(cx, hy - 0.08 * r, 0.88 * r, 1.0 * r, rng, 0.1)
    cap = cap[cap[:, 1] < hairline]
    if len(cap) >= 3:
        mass = _mask(fig.h, fig.w)
        cv2.fillPoly(mass, [_pts(fig.tilt(cap))], 255, cv2.LINE_AA, 4)
        _over(color, alpha, hair_field, mass, rng.uniform(0.85, 1.0))
    _over(color, alpha, hair_field, _hair_strands(rng, fig, long_hair))


def _draw_veil(rng, fig: _Figure, color: np.ndarray, alpha: np.ndarray) -> None:
    """Half the time, a semi-transparent cloth (scarf, veil) whose alpha carries the weave's texture."""
    if rng.random() < 0.5:
        cloth = _mask(fig.h, fig.w)
        r = fig.r
        ccx, ccy = fig.cx + rng.uniform(-1.5, 1.5) * fig.sw, fig.sy + rng.uniform(0.0, 3.0) * r
        cv2.fillPoly(cloth, [_pts(_blob(ccx, ccy, rng.uniform(0.6, 2.0) * r, rng.uniform(0.6, 2.5) * r, rng,
                                        0.25, angle=rng.uniform(0, math.pi)))], 255, cv2.LINE_AA, 4)
        weave = 0.7 + 0.3 * _noise(rng, fig.h, fig.w, rng.uniform(20, 60))
        opacity = rng.uniform(0.2, 0.75)
        _over(color, alpha, _fabric(rng, fig.h, fig.w), cloth, weave * opacity)


def make_subject(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One person-like layer: premultiplied colour (H, W, 3) and alpha (H, W), sRGB 0..1.

    Head, neck, torso and arms are smooth random shapes with anti-aliased edges;
    hair adds a mass plus thin strands of partial alpha; half the subjects wear a
    semi-transparent cloth (scarf, veil) whose alpha carries the weave's texture.
    """
    fig = _Figure.random(rng, h, w)
    color = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    skin = _skin(rng)
    shirt = _fabric(rng, h, w)
    _draw_torso(rng, fig, color, alpha, skin, shirt)
    _draw_arms(rng, fig, color, alpha, skin, shirt)
    _draw_head_and_hair(rng, fig, color, alpha, skin)
    _draw_veil(rng, fig, color, alpha)
    shade = 0.6 + 0.55 * _noise(rng, h, w, rng.uniform(0.8, 3))
    color *= _rep3(shade)
    np.minimum(color, _rep3(alpha), out=color)  # premultiplied colour never exceeds alpha
    return color, alpha


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    k = int(math.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    c, dx, dy = k // 2, 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    cv2.line(kernel, (int(round((c - dx) * 16)), int(round((c - dy) * 16))),
             (int(round((c + dx) * 16)), int(round((c + dy) * 16))), 1.0, 1, cv2.LINE_AA, 4)
    return kernel / max(float(kernel.sum()), 1e-6)


def make_foreground(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground colour (H, W, 3) and alpha (H, W), sRGB 0..1, of one or two subjects.

    Softening happens on premultiplied colour so that blurred edges stay
    consistent with the composite: lens softness always, motion blur or
    defocus on some samples. The foreground colour is 0 where alpha is 0
    (it is undefined there, and the losses ignore it).
    """
    s = max(h, w)
    color, alpha = make_subject(rng, h, w)
    if rng.random() < 0.15:
        back_color, back_alpha = make_subject(rng, h, w)
        # The first subject stands in front of the second.
        color = color + back_color * (1 - _rep3(alpha))
        alpha = alpha + back_alpha * (1 - alpha)
    motion = _motion_kernel(rng.uniform(2, 0.05 * s + 3), rng.uniform(0, math.pi)) if rng.random() < 0.3 else None
    sigma = rng.uniform(0.3, 0.9) + (rng.uniform(0, 2.0) * s / 512 if rng.random() < 0.3 else 0.0)

    # Filter only the subject's bounding box (plus the filters' reach): often half the frame or less.
    pad = int(3 * sigma) + 2 + (motion.shape[0] if motion is not None else 0)
    x, y, bw, bh = cv2.boundingRect((alpha > 0).view(np.uint8))
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
    c, a = color[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    if motion is not None:
        c, a = cv2.filter2D(c, -1, motion), cv2.filter2D(a, -1, motion)
    c, a = cv2.GaussianBlur(c, (0, 0), sigma), cv2.GaussianBlur(a, (0, 0), sigma)
    # Snap the float fuzz of the filters; 1/1024 is below 8-bit quantisation.
    a = np.where(a < 1 / 1024, 0.0, np.where(a > 1 - 1 / 1024, 1.0, a)).astype(np.float32)
    a3 = _rep3(a)
    f = np.divide(np.clip(c, 0, a3), a3, out=np.zeros_like(c), where=a3 > 0)
    fgr = np.zeros((h, w, 3), np.float32)
    pha = np.zeros((h, w), np.float32)
    fgr[y0:y1, x0:x1] = np.clip(f, 0, 1)
    pha[y0:y1, x0:x1] = a
    return fgr, pha


# ---------------------------------------------------------------- the plate gap


def make_shadow(rng: np.random.Generator, pha: np.ndarray) -> np.ndarray:
    """A soft cast shadow (H, W) from the alpha: sheared, squashed, offset and blurred, 0..~0.6."""
    h, w = pha.shape
    s = max(h, w)
    base_y = h * rng.uniform(0.6, 1.0)  # where the shadow meets the subject
    squash, shear = rng.uniform(0.4, 1.1), rng.uniform(-0.8, 0.8)
    dx, dy = rng.uniform(-0.15, 0.15) * w, rng.uniform(-0.05, 0.1) * h
    m = np.array([[1.0, shear, -shear * base_y + dx], [0.0, squash, base_y * (1 - squash) + dy]], np.float32)
    # The shadow is far softer than a pixel, so it is made at quarter resolution: 16x less blur work.
    q = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(pha, (w // q, h // q), interpolation=cv2.INTER_AREA)
    m[:, 2] /= q
    shadow = cv2.warpAffine(small, m, (w // q, h // q), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    shadow = cv2.GaussianBlur(shadow, (0, 0), (s * rng.uniform(0.01, 0.04) + 0.5) / q)
    shadow = cv2.resize(shadow, (w, h), interpolation=cv2.INTER_LINEAR)
    return (shadow * rng.uniform(0.2, 0.6)).astype(np.float32)


def _perturbed_homography(rng, h: int, w: int, max_shift: float) -> np.ndarray:
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    radius = max_shift * max(h, w) * rng.random()
    ang = rng.uniform(0, 2 * math.pi, 4)
    jitter = radius * np.sqrt(rng.random(4))[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)
    return cv2.getPerspectiveTransform(corners, (corners + jitter).astype(np.float32)).astype(np.float64)


def _parallax(rng, h: int, w: int, amplitude: float) -> np.ndarray:
    """A smooth displacement field (H, W, 2) in pixels, at most `amplitude` in each axis."""
    amp = amplitude * max(h, w) * rng.random()
    if amp <= 0:
        return np.zeros((h, w, 2), np.float32)
    cells = int(rng.integers(2, 6))
    grid = rng.uniform(-1, 1, (cells, cells, 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1) * amp


def _add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian sensor noise of std `sigma`, seeded from `rng` (OpenCV's generator is ~3x numpy's speed)."""
    if sigma <= 0:
        return img
    noise = np.empty(img.shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, (0.0,) * 3, (float(sigma),) * 3)
    return img + noise


def composite(rng: np.random.Generator, fgr: np.ndarray, pha: np.ndarray, canvas: np.ndarray, margin: int,
              gap: PlateGap, clean_canvas: np.ndarray | None = None) -> Sample:
    """Composite a foreground over a background and make the imperfect clean plate.

    fgr (H, W, 3), pha (H, W); `canvas` (H + 2m, W + 2m, 3) is the background
    with a margin of m pixels on every side, so the clean plate's warp samples
    real content instead of a border. `clean_canvas`, the same shape, is a
    real clean plate of that background: then only noise is added to it, since
    its misalignment and exposure are already real.
    """
    h, w = pha.shape
    m = margin
    s = max(h, w)
    bgr_true = canvas[m:m + h, m:m + w]
    shadow = make_shadow(rng, pha) if rng.random() < gap.shadow_prob else np.zeros((h, w), np.float32)
    pha3 = _rep3(pha)
    src = fgr * pha3 + bgr_true * (1 - _rep3(shadow)) * (1 - pha3)
    src = _add_noise(rng, src, gap.noise * rng.random())

    warp = np.eye(3)
    flow = np.zeros((h, w, 2), np.float32)
    gain = np.ones(3, np.float32)
    if clean_canvas is not None:
        bgr = clean_canvas[m:m + h, m:m + w].copy()
    else:
        if gap.corner_shift > 0:
            warp = _perturbed_homography(rng, h, w, gap.corner_shift)
        if gap.parallax > 0:
            flow = _parallax(rng, h, w, gap.parallax)
        if gap.corner_shift > 0 or gap.parallax > 0:
            grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), 2)
            maps = cv2.perspectiveTransform(grid, warp) + flow + m
            bgr = cv2.remap(canvas, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        else:
            bgr = bgr_true.copy()
        # A gain g in linear light is g**(1/2.2) on a pure power-law sRGB encoding; the
        # piecewise-linear toe of real sRGB is ignored here.
        log2_gain = gap.exposure * rng.standard_normal() + gap.white_balance * rng.standard_normal(3)
        gain = (2.0 ** (log2_gain / 2.2)).astype(np.float32)
        bgr = bgr * gain
        sigma = gap.blur * s * rng.random()
        if sigma > 0.05:
            bgr = cv2.GaussianBlur(bgr, (0, 0), sigma)
    bgr = _add_noise(rng, bgr, gap.noise * rng.random())

    return Sample(src=np.clip(src, 0, 1).astype(np.float32), bgr=np.clip(bgr, 0, 1).astype(np.float32),
                  pha=pha.astype(np.float32), fgr=fgr.astype(np.float32),
                  bgr_true=np.ascontiguousarray(bgr_true, dtype=np.float32), shadow=shadow, warp=warp,
                  flow=flow, gain=gain)


def _margin(h: int, w: int, gap: PlateGap) -> int:
    return int(math.ceil((gap.corner_shift + gap.parallax) * max(h, w))) + 2


class SyntheticComposites(Dataset):
    """Synthetic training/evaluation samples, made on the fly, nothing downloaded.

    `dataset[i]` is a dict of float32 tensors in sRGB 0..1: `src` (3, H, W) the
    plate with the subject and its shadow, `bgr` (3, H, W) the imperfect clean
    plate, `pha` (1, H, W) the true alpha, `fgr` (3, H, W) the true foreground
    colour, `bgr_true` (3, H, W) the background really behind the subject.
    Sample i depends only on (split, seed, i); any index >= 0 is valid, and
    `length` only sets what len() reports.
    """

    def __init__(self, length: int = 10_000, size=256, seed: int = 0, split: str = "train",
                 gap: PlateGap | None = None):
        sample_rng(split, seed, 0)  # validates split and seed
        self.length = int(length)
        self.size = _size_hw(size)
        self.seed = int(seed)
        self.split = split
        self.gap = gap if gap is not None else PlateGap()

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        """Sample `index` as numpy arrays, with the parameters of its plate gap."""
        rng = sample_rng(self.split, self.seed, index)
        h, w = self.size
        m = _margin(h, w, self.gap)
        canvas = make_background(rng, h + 2 * m, w + 2 * m)
        fgr, pha = make_foreground(rng, h, w)
        return composite(rng, fgr, pha, canvas, m, self.gap)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(int(index)).tensors()


# ---------------------------------------------------------------- a user's folder


def read_image(path: Path, gray: bool = False) -> np.ndarray:
    """An 8- or 16-bit image file as float32 0..1: (H, W, 3) RGB, or (H, W) with `gray`."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise HowardError(f"{path}: cannot be read as an image; re-export it as 8- or 16-bit PNG, TIFF or JPEG")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype, 1.0)
    img = img.astype(np.float32) / scale
    if gray:
        if img.ndim == 3:
            # An RGBA alpha file keeps its matte in the last channel; RGB ones are grey anyway.
            img = img[:, :, 3] if img.shape[2] == 4 else img[:, :, 0]
        return np.clip(img, 0, 1)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.clip(img[:, :, 2::-1] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, 2), 0, 1)


def _list_images(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise HowardError(f"{p}: two images named '{p.stem}' ({by_stem[p.stem].name}, {p.name}) in "
                              f"{folder}; keep one file per name")
        by_stem[p.stem] = p
    return by_stem


def _fit_canvas(img: np.ndarray, h: int, w: int, rng, zoom=(1.0, 1.3), crop=None):
    """Random crop of `img` resized to (h, w); returns the result and the crop used (to reuse on a twin)."""
    ih, iw = img.shape[:2]
    if crop is None:
        scale = max(h / ih, w / iw) * rng.uniform(*zoom)
        ch, cw = max(1, min(ih, round(h / scale))), max(1, min(iw, round(w / scale)))
        crop = (int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1)), ch, cw)
    y0, x0, ch, cw = crop
    # Area averaging when shrinking: a plain bilinear warp would alias fine background texture.
    interp = cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=interp), crop


class FolderDataset(Dataset):
    """A user's matting data, composited on the fly, for fine-tuning.

    Layout under `root`::

        fgr/NAME.png    foreground colour, sRGB (8 or 16 bit)
        pha/NAME.png    its alpha, same name and size
        bgr/ANY.jpg     backgrounds (any names, any sizes)
        clean/ANY.jpg   optional: real clean plates, named like the bgr/ image they were shot for

    Sample i uses foreground `i % count` placed at a random scale and position,
    over a random background; when that background has a clean plate, it is
    cropped identically and used as the network's `bgr` (its real gap kept),
    otherwise the synthetic plate gap of `gap` is applied. Same output as
    `SyntheticComposites` and the same (split, seed, i) determinism.
    """

    def __init__(self, root, size=256, seed: int = 0, split: str = "train", gap: PlateGap | None = None,
                 length: int | None = None):
        sample_rng(split, seed, 0)
        self.root = Path(root)
        self.size = _size_hw(size)
        self.seed, self.split = int(seed), split
        self.gap = gap if gap is not None else PlateGap()
        if not self.root.is_dir():
            raise HowardError(f"{self.root}: training data folder not found; pass --data synthetic or a folder "
                              f"holding fgr/, pha/ and bgr/")
        for name in ("fgr", "pha", "bgr"):
            if not (self.root / name).is_dir():
                raise HowardError(f"{self.root}: no '{name}/' folder; a training folder needs fgr/, pha/ and bgr/ "
                                  f"(clean/ optional)")
        self.fgr = _list_images(self.root / "fgr")
        self.pha = _list_images(self.root / "pha")
        self.bgr = _list_images(self.root / "bgr")
        self.clean = _list_images(self.root / "clean") if (self.root / "clean").is_dir() else {}
        for name, found in (("fgr", self.fgr), ("bgr", self.bgr)):
            if not found:
                raise HowardError(f"{self.root / name}: no images ({', '.join(IMAGE_SUFFIXES)}); add some")
        for stem, path in self.fgr.items():
            if stem not in self.pha:
                raise HowardError(f"{path}: no alpha for it in {self.root / 'pha'}; add pha/{stem}.png "
                                  f"(same name, same size)")
        for stem, path in self.pha.items():
            if stem not in self.fgr:
                raise HowardError(f"{path}: alpha without a foreground; add fgr/{stem}.png or remove it")
        for stem, path in self.clean.items():
            if stem not in self.bgr:
                raise HowardError(f"{path}: clean plate without a background of the same name in "
                                  f"{self.root / 'bgr'}; name it like the bgr/ image it was shot for")
        self.names = sorted(self.fgr)
        self.backgrounds = sorted(self.bgr)
        self.length = int(length) if length is not None else len(self.names)

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        rng = sample_rng(self.split, self.seed, index)
        h, w = self.size
        name = self.names[index % len(self.names)]
        fgr, pha = read_image(self.fgr[name]), read_image(self.pha[name], gray=True)
        if fgr.shape[:2] != pha.shape:
            raise HowardError(f"{self.pha[name]}: alpha is {pha.shape[1]}x{pha.shape[0]} but "
                              f"{self.fgr[name].name} is {fgr.shape[1]}x{fgr.shape[0]}; export both at one size")
        layer = np.concatenate([fgr * pha[:, :, None], pha[:, :, None]], axis=2)
        if rng.random() < 0.5:
            layer = layer[:, ::-1]
        # Fit the subject into the frame (not crop it), then scale and shift it a little.
        ih, iw = layer.shape[:2]
        scale = min(h / ih, w / iw) * rng.uniform(0.7, 1.2)
        tx = rng.uniform(min(0, w - iw * scale), max(0, w - iw * scale))
        ty = rng.uniform(min(0, h - ih * scale), max(0, h - ih * scale))
        # Resize first (area-averaged when shrinking, so hair does not alias), then shift into place.
        sw, sh = max(1, round(iw * scale)), max(1, round(ih * scale))
        layer = cv2.resize(np.ascontiguousarray(layer), (sw, sh),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        mat = np.array([[1, 0, tx], [0, 1, ty]], np.float32)
        layer = cv2.warpAffine(layer, mat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        pha = np.clip(layer[:, :, 3], 0, 1)
        fgr = np.divide(layer[:, :, :3], pha[:, :, None], out=np.zeros((h, w, 3), np.float32),
                        where=pha[:, :, None] > 1 / 1024)
        fgr = np.clip(fgr, 0, 1)

        bg_name = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        m = _margin(h, w, self.gap)
        bg = read_image(self.bgr[bg_name])
        canvas, crop = _fit_canvas(bg, h + 2 * m, w + 2 * m, rng)
        clean_canvas = None
        if bg_name in self.clean:
            clean = read_image(self.clean[bg_name])
            if clean.shape != bg.shape:
                raise HowardError(f"{self.clean[bg_name]}: clean plate is {clean.shape[1]}x{clean.shape[0]} but "
                                  f"bgr/{self.bgr[bg_name].name} is {bg.shape[1]}x{bg.shape[0]}; "
                                  f"export both at one size")
            clean_canvas, _ = _fit_canvas(clean, h + 2 * m, w + 2 * m, rng, crop=crop)
        return composite(rng, fgr, pha, canvas, m, self.gap, clean_canvas)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(int(index)).tensors()

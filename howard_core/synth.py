"""Synthetic hand-held shots with ground truth: a plate with a subject and a clean take of the same scene.

`make_shot(...)` (its options: `ShotSpec`) returns a `Shot`: two takes of one textured planar scene filmed
by a moving camera, the plate with a person-like subject composited over it and the clean take without,
each with its own camera path (the clean pass retraces the plate's move approximately), clip length, start,
exposure and sensor noise. Every frame comes with its exact scene->frame homography, so the true
clean-frame-j -> plate-frame-i mapping is known (`Shot.clean_to_plate`), as are the subject's alpha and
colour. `make_depth_shot(...)` (its options: `DepthShotSpec`) films a set with depth instead, and knows every
plate frame's true background.

Conventions (shared by every array here):

- Frames are H x W x 3 float32 RGB, display-referred sRGB in 0..1, pixel centres at integer coordinates
  (OpenCV's convention, so `cv2.warpPerspective(src, H, ...)` realises a homography `H`).
- The plate obeys the compositing equation in display space, the one the matting network uses:
  `plate = alpha * foreground + (1 - alpha) * background + noise`.
- Exposure differences are applied in linear light (a change of exposure is a gain on scene radiance),
  then re-encoded as sRGB.

The scene is rendered once per shot at a higher density than the frames and every frame is a warp of it,
so an HD frame costs a few tens of milliseconds. With `lazy=True` the frame lists are sequences that
render on access (deterministically: frame k always has the same noise), for shots too big to hold.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar, Self

import cv2
import numpy as np

__all__ = ["DepthShotSpec", "Shot", "ShotSpec", "make_depth_shot", "make_shot", "srgb_to_linear", "linear_to_srgb"]

# Scene pixels per frame pixel at zoom 1: supersampling keeps frames sharp and unaliased after warping.
_SCENE_DENSITY = 1.25
_TWO_BYTE_STD = float(np.sqrt(2 * (256**2 - 1) / 12))  # std of U(0..255) - U(0..255)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (any shape, 0..1) -> linear light, float32."""
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light (any shape, >= 0) -> sRGB-encoded values, float32 (not clipped above 1)."""
    x = np.maximum(np.asarray(x, np.float32), 0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Camera paths


def _smooth_path(rng: np.random.Generator, count: int) -> np.ndarray:
    """Coefficients of `count` smooth random signals of unit-ish amplitude (slow drift + hand-held sway)."""
    # Periods in plate frames: a slow drift, a hand-held sway and a small jitter.
    periods = np.stack([rng.uniform(60, 160, count), rng.uniform(12, 30, count), rng.uniform(4, 8, count)], 1)
    amps = np.array([0.6, 0.3, 0.1]) * rng.uniform(0.7, 1.0, (count, 3))
    phases = rng.uniform(0, 2 * np.pi, (count, 3))
    return np.stack([periods, amps, phases], -1)  # count x 3 x 3


def _eval_path(coeffs: np.ndarray, t: float) -> np.ndarray:
    periods, amps, phases = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2]
    return (amps * np.sin(2 * np.pi * t / periods + phases)).sum(-1)


def _pose_matrix(pose: np.ndarray, width: int) -> np.ndarray:
    """Pose (pan x, pan y in frame px, rotation rad, log zoom, keystone x, y) -> 3x3 on centred coords."""
    px, py, rot, logzoom, kx, ky = pose
    s = np.exp(logzoom)
    c, n = np.cos(rot) * s, np.sin(rot) * s
    similarity = np.array([[c, -n, -(c * px - n * py)], [n, c, -(n * px + c * py)], [0, 0, 1]])
    half = width / 2
    keystone = np.array([[1, 0, 0], [0, 1, 0], [kx / half, ky / half, 1]])
    return keystone @ similarity


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0, x], [0, 1, y], [0, 0, 1]])


def _scale(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


# ---------------------------------------------------------------------------------------------------------
# Scene texture


def _fractal_noise(rng: np.random.Generator, w: int, h: int, channels: int, finest: float,
                   coarsest: float, slope: float = 0.6) -> np.ndarray:
    """Multi-octave value noise, h x w x channels float32, roughly zero-mean, unit-ish amplitude.

    Built coarse to fine (upsample the running sum, add a finer random grid), so the cost is a few
    full-size operations whatever the number of octaves. `slope` > 0 favours the coarse octaves.
    """
    cell = coarsest
    acc = None
    while True:
        gw, gh = max(2, int(np.ceil(w / cell)) + 1), max(2, int(np.ceil(h / cell)) + 1)
        grid = rng.standard_normal((gh, gw, channels)).astype(np.float32) * (cell / coarsest) ** slope
        if acc is None:
            acc = grid
        else:
            acc = cv2.resize(acc, (gw, gh), interpolation=cv2.INTER_CUBIC).reshape(gh, gw, channels) + grid
        if cell <= finest:
            break
        cell = max(finest, cell / 2)
    out = cv2.resize(acc, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)
    return out / max(float(out.std()), 1e-6)


def _blend_shape(canvas: np.ndarray, mask_u8: np.ndarray, x0: int, y0: int, tint: np.ndarray,
                 grain: np.ndarray | None) -> None:
    """Paint `tint` (3,) into `canvas` at (x0, y0) through an 8-bit mask, optionally modulated by a
    relative luminance `grain` (mask-sized, ~0 mean); parts off the canvas are dropped."""
    bx, by, bw, bh = cv2.boundingRect(mask_u8)
    mask_u8 = mask_u8[by:by + bh, bx:bx + bw]
    grain = None if grain is None else grain[by:by + bh, bx:bx + bw]
    (d, s) = _window(canvas.shape[:2], bh, bw, x0 + bx, y0 + by)
    region = canvas[d]
    if region.size == 0:
        return
    a = mask_u8[s].astype(np.float32) * np.float32(1 / 255)
    if grain is None:
        colour = np.empty_like(region)
        colour[:] = tint
    else:
        colour = (1 + grain[s])[..., None] * tint
    canvas[d] = cv2.blendLinear(colour, np.ascontiguousarray(region), a, 1 - a)


def _random_shape_mask(rng: np.random.Generator, size: float) -> tuple[np.ndarray, int, int]:
    """An anti-aliased 8-bit mask of one random shape about `size` px across; returns (mask, ox, oy)."""
    n = int(np.ceil(size * 1.5)) + 4
    mask = np.zeros((n, n), np.uint8)
    c = n / 2
    kind = rng.choice(["rect", "ellipse", "poly", "stroke", "ring"], p=[0.3, 0.25, 0.2, 0.15, 0.1])
    sub = 16  # cv2 sub-pixel shift of 4 bits
    if kind == "rect":
        w, h = size * rng.uniform(0.3, 1.0), size * rng.uniform(0.3, 1.0)
        box = cv2.boxPoints(((c, c), (w, h), rng.uniform(0, 180)))
        cv2.fillPoly(mask, [np.round(box * sub).astype(np.int32)], 255, cv2.LINE_AA, 4)
    elif kind == "ellipse":
        axes = (int(size * rng.uniform(0.15, 0.5) * sub), int(size * rng.uniform(0.15, 0.5) * sub))
        cv2.ellipse(mask, (int(c * sub), int(c * sub)), axes, rng.uniform(0, 180), 0, 360, 255, -1,
                    cv2.LINE_AA, 4)
    elif kind == "poly":
        k = rng.integers(3, 8)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = size * rng.uniform(0.2, 0.5, k)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1)
        cv2.fillPoly(mask, [np.round(pts * sub).astype(np.int32)], 255, cv2.LINE_AA, 4)
    elif kind == "stroke":
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)]) * size * 0.5
        p, q = np.round((c - d) * sub).astype(int), np.round((c + d) * sub).astype(int)
        thickness = max(1, int(size * rng.uniform(0.02, 0.1)))
        cv2.line(mask, tuple(map(int, p)), tuple(map(int, q)), 255, thickness, cv2.LINE_AA, 4)
    else:
        r = size * rng.uniform(0.2, 0.45)
        centre = (int(c * sub), int(c * sub))
        cv2.circle(mask, centre, int(r * sub), 255, max(1, int(r * 0.25)), cv2.LINE_AA, 4)
    return mask, int(c), int(c)


def _render_texture(rng: np.random.Generator, w: int, h: int, unit: float, frame_w: int,
                    shapes: int) -> np.ndarray:
    """A natural-ish textured plane, h x w x 3 float32 sRGB in about 0.03..0.95.

    `unit` is the size of one frame pixel in texture pixels: detail goes down to ~2 frame pixels and
    shapes span from a third of the frame width `frame_w` down to a few pixels, whatever the resolution.
    """
    # Low-frequency colour variation plus multi-scale luminance detail.
    colour = _fractal_noise(rng, w, h, 3, finest=unit * 24, coarsest=max(w, h) / 2, slope=1.0)
    lum = _fractal_noise(rng, w, h, 1, finest=unit * 1.5, coarsest=max(w, h) / 3, slope=0.5)
    base = rng.uniform(0.3, 0.55, 3).astype(np.float32)
    img = base + 0.08 * colour + 0.12 * lum
    # Shapes, sizes drawn from a power law so there are many small ones and a few big ones.
    sizes = frame_w * np.exp(rng.uniform(np.log(0.012), np.log(0.3), shapes))
    for size in np.sort(sizes)[::-1]:
        mask, ox, oy = _random_shape_mask(rng, size * unit)
        x, y = int(rng.uniform(0, w)) - ox, int(rng.uniform(0, h)) - oy
        # Muted colours, as painted and weathered surfaces mostly are.
        tint = (0.35 * rng.uniform(0.1, 0.9) + 0.65 * rng.uniform(0.05, 0.95, 3)).astype(np.float32)
        # Most shapes carry their own texture so that flat areas stay rare.
        grain = None
        if rng.random() < 0.65:
            mh, mw = mask.shape
            grain = np.float32(rng.uniform(0.1, 0.3)) * cv2.resize(
                rng.standard_normal((max(2, mh // 6), max(2, mw // 6))).astype(np.float32), (mw, mh),
                interpolation=cv2.INTER_CUBIC)
        _blend_shape(img, mask, x, y, tint, grain)
    return np.clip(img, 0.03, 0.95)


def _render_scene(rng: np.random.Generator, w: int, h: int, unit: float, frame_w: int,
                  frame_h: int, texture: str) -> np.ndarray:
    if texture == "natural":
        # About 200 shapes per frame area, however much scene the camera move needs.
        shapes = int(200 * w * h / (unit * unit * frame_w * frame_h))
        img = _render_texture(rng, w, h, unit, frame_w, shapes=min(shapes, 1000))
    elif texture == "tiles":
        # One tile repeated exactly: the failure case for feature matching (every feature has twins).
        tile_size = max(8, int(round(unit * frame_w / 14)))
        tile = _render_texture(rng, tile_size, tile_size, unit, frame_w, shapes=12)
        reps = (h // tile_size + 1, w // tile_size + 1, 1)
        img = np.tile(tile, reps)[:h, :w]
    else:
        raise ValueError(f"texture must be 'natural' or 'tiles', got {texture!r}")
    # The lens: a little blur so that warped frames are band-limited like a real camera's.
    return cv2.GaussianBlur(img, (0, 0), 0.5 * unit)


# ---------------------------------------------------------------------------------------------------------
# Subject


@dataclass
class _SubjectLook:
    cloth: np.ndarray  # 3
    skin: np.ndarray  # 3
    texture: np.ndarray  # n x n float32 cloth texture, moves with the subject
    phases: np.ndarray
    side: float


def _random_look(rng: np.random.Generator) -> _SubjectLook:
    return _SubjectLook(
        cloth=rng.uniform(0.1, 0.8, 3).astype(np.float32),
        skin=np.array([0.8, 0.6, 0.5], np.float32) * rng.uniform(0.6, 1.1),
        texture=_fractal_noise(rng, 64, 64, 1, finest=2, coarsest=32)[..., 0],
        phases=rng.uniform(0, 2 * np.pi, 10),
        side=rng.uniform(-1, 1),
    )


def _subject_layers(look: _SubjectLook, t: float, width: int, height: int,
                    scale: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Alpha (h x w) and colour (h x w x 3) of the subject in its bounding box, and the box origin.

    A person-like figure: head, neck, torso, two swinging arms, legs running out of frame. Edges are
    anti-aliased and softened; the head gets a wider, hair-like falloff.
    """
    B = scale * height  # body height in pixels
    ph = look.phases
    # Walks slowly across part of the frame and sways.
    sway = 0.1 * np.sin(2 * np.pi * t / 80 + ph[0]) + 0.02 * np.sin(t / 7 + ph[1])
    cx = width * (0.5 + 0.15 * look.side + sway)
    top = height - B * 0.95 + 0.01 * B * np.sin(t / 5 + ph[2])
    pad = int(0.1 * B) + 8
    # The legs run out of frame: keep the box inside the frame so that no work is spent off-screen.
    x0, y0 = max(int(cx - 0.45 * B) - pad, 0), max(int(top) - pad, 0)
    bw = max(1, min(int(cx + 0.45 * B) + pad, width) - x0)
    bh = max(1, min(int(top + 1.1 * B) + pad, height) - y0)
    sub = 16

    def P(x, y):  # absolute px -> fixed-point box coordinates
        return int(round((x - x0) * sub)), int(round((y - y0) * sub))

    body = np.zeros((bh, bw), np.uint8)
    skin = np.zeros((bh, bw), np.uint8)
    head = np.zeros((bh, bw), np.uint8)
    head_c = (cx + 0.01 * B * np.sin(t / 6 + ph[3]), top + 0.07 * B)
    cv2.ellipse(head, P(*head_c), (int(0.055 * B * sub), int(0.07 * B * sub)), 0, 0, 360, 255, -1,
                cv2.LINE_AA, 4)
    neck_w = max(1, int(0.045 * B))
    cv2.line(skin, P(cx, top + 0.12 * B), P(cx, top + 0.18 * B), 255, neck_w, cv2.LINE_AA, 4)
    ys, yh = top + 0.17 * B, top + 0.52 * B
    torso = np.array([[cx - 0.13 * B, ys], [cx + 0.13 * B, ys], [cx + 0.11 * B, yh], [cx - 0.11 * B, yh]])
    cv2.fillPoly(body, [np.array([P(*p) for p in torso], np.int32)], 255, cv2.LINE_AA, 4)
    arm_w = max(1, int(0.05 * B))
    for k, sgn in enumerate((-1, 1)):
        shoulder = np.array([cx + sgn * 0.12 * B, ys + 0.03 * B])
        a_up = sgn * (0.25 + 0.3 * np.sin(2 * np.pi * t / 24 + ph[4 + k]))
        a_lo = a_up + sgn * (0.2 + 0.5 * (1 + np.sin(2 * np.pi * t / 17 + ph[6 + k])))
        elbow = shoulder + 0.17 * B * np.array([np.sin(a_up), np.cos(a_up)])
        hand = elbow + 0.16 * B * np.array([np.sin(a_lo), np.cos(a_lo)])
        cv2.line(body, P(*shoulder), P(*elbow), 255, arm_w, cv2.LINE_AA, 4)
        cv2.line(body, P(*elbow), P(*hand), 255, max(1, int(arm_w * 0.85)), cv2.LINE_AA, 4)
        cv2.circle(skin, P(*hand), int(0.03 * B * sub), 255, -1, cv2.LINE_AA, 4)
        hip = np.array([cx + sgn * 0.06 * B, yh - 0.02 * B])
        swing = 0.12 * np.sin(2 * np.pi * t / 30 + ph[8] + k * np.pi)
        foot = hip + 0.6 * B * np.array([np.sin(swing) + sgn * 0.08, np.cos(swing)])
        cv2.line(body, P(*hip), P(*foot), 255, max(1, int(0.085 * B)), cv2.LINE_AA, 4)

    soft = max(0.6, height / 1080)
    a_body = cv2.GaussianBlur(np.maximum(body, skin).astype(np.float32) / 255, (0, 0), 0.7 * soft)
    a_skin = cv2.GaussianBlur(skin.astype(np.float32) / 255, (0, 0), 0.7 * soft)
    a_head = cv2.GaussianBlur(head.astype(np.float32) / 255, (0, 0), 2.5 * soft)
    alpha = np.maximum(a_body, a_head)

    tex = cv2.resize(look.texture, (bw, bh), interpolation=cv2.INTER_LINEAR)
    shade = np.linspace(1.05, 0.8, bh, dtype=np.float32)[:, None]
    skin_w = np.clip(np.maximum(a_skin, a_head) / np.maximum(alpha, 1e-3), 0, 1)
    cloth_lum = shade * (1 + 0.15 * tex) * (1 - skin_w)
    skin_lum = (0.95 + 0.05 * tex) * skin_w
    colour = cv2.merge([cv2.addWeighted(cloth_lum, float(look.cloth[c]), skin_lum, float(look.skin[c]), 0)
                        for c in range(3)])
    return alpha, np.clip(colour, 0, 1, out=colour), (x0, y0)


# ---------------------------------------------------------------------------------------------------------
# The shot


class _LazyFrames(Sequence):
    """A read-only sequence that renders frame k on access (memoising only the last one)."""

    def __init__(self, count: int, render):
        self._count, self._render, self._last = count, render, (None, None)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self._count))]
        k = range(self._count)[k]
        if self._last[0] != k:
            self._last = (k, self._render(k))
        return self._last[1]


@dataclass
class Shot:
    """A synthetic plate / clean-plate pair with ground truth. See the module docstring for conventions.

    plate:      plate frames, each H x W x 3 float32 sRGB 0..1, subject composited, noisy.
    clean:      clean-take frames, each Hc x Wc x 3 float32 sRGB 0..1, no subject; its own length, start,
                camera path, exposure and noise.
    alpha:      true subject alpha per plate frame, H x W float32 0..1, soft edges.
    foreground: true subject colour per plate frame, H x W x 3 float32 sRGB (zero where alpha is 0).
    plate_homographies / clean_homographies: 3x3 float64, scene pixels -> frame pixels, one per frame.
    plate_times / clean_times: when each frame was taken on the plate's timeline (plate frames), so
                clean frame j shows the camera pose of plate time `clean_times[j]`, up to the clean pass's
                hand-held deviation.
    clean_gain: per-channel linear-light gain of the clean take relative to the plate (exposure + balance).
    scene:      the scene plane itself, Hs x Ws x 3 float32 sRGB at the plate's exposure, in scene pixels
                (what the homographies map from). For a scene with depth (`make_depth_shot`): its far wall.
    params:     the resolved options: the spec's fields but `lazy` (and `depth: True` for a set with depth).
    backgrounds: scenes with depth only: the true noise-free background of every plate frame (plate
                exposure, H x W x 3 float32 sRGB), since no homography maps a clean frame onto it.
    """

    plate: Sequence[np.ndarray]
    clean: Sequence[np.ndarray]
    alpha: Sequence[np.ndarray]
    foreground: Sequence[np.ndarray]
    plate_homographies: list[np.ndarray]
    clean_homographies: list[np.ndarray]
    plate_times: np.ndarray
    clean_times: np.ndarray
    clean_gain: np.ndarray
    plate_size: tuple[int, int]  # (width, height)
    clean_size: tuple[int, int]
    params: dict = field(default_factory=dict)
    scene: np.ndarray | None = field(default=None, repr=False)
    backgrounds: Sequence[np.ndarray] | None = field(default=None, repr=False)

    def clean_to_plate(self, j: int, i: int) -> np.ndarray:
        """True homography (3x3 float64) from clean-frame-j pixels to plate-frame-i pixels."""
        h = self.plate_homographies[i] @ np.linalg.inv(self.clean_homographies[j])
        return h / h[2, 2]

    def matching_clean_index(self, i: float) -> float:
        """The (fractional) clean frame taken at the same moment of the camera move as plate frame i."""
        return float(np.interp(i, self.clean_times, np.arange(len(self.clean_times)),
                               left=-np.inf, right=np.inf)) if len(self.clean_times) > 1 else 0.0

    def plate_background(self, i: int) -> np.ndarray:
        """Noise-free background of plate frame i (plate exposure), H x W x 3 float32 sRGB."""
        if self.backgrounds is not None:
            return self.backgrounds[i]
        w, h = self.plate_size
        return cv2.warpPerspective(self.scene, self.plate_homographies[i], (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)


def _add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return img
    # The difference of two uniform bytes: zero-mean, nearly Gaussian (triangular), and several times
    # faster than standard_normal at HD.
    raw = np.frombuffer(rng.bytes(2 * img.size), np.uint8).reshape(2, *img.shape)
    noise = cv2.subtract(raw[0], raw[1], dtype=cv2.CV_32F)
    cv2.scaleAdd(noise, sigma / _TWO_BYTE_STD, img, dst=img)
    # OpenCV's min/max clip several times faster than np.clip (bounds per channel: a bare number would
    # only apply to the first).
    cv2.min(img, (1.0, 1.0, 1.0, 1.0), dst=img)
    return cv2.max(img, (0.0, 0.0, 0.0, 0.0), dst=img)


# ---------------------------------------------------------------------------------------------------------
# What to render

# The options the generators have always taken by position, in that order.
_POSITIONAL = ("width", "height", "plate_frames", "clean_frames", "seed")


@dataclass(frozen=True)
class _TakeSpec:
    """The options every kind of shot shares: sizes, the clean take's timing, the camera move and the look.

    Frozen and checked on creation. Times are on the plate's timeline, in plate frames. `resolved()` fills
    in the defaults that depend on other options; `Shot.params` records the resolved values.
    """

    maker: ClassVar[str]  # the generator's name, for error messages

    width: int = 640  # plate frame width in pixels (odd sizes are fine)
    height: int = 360  # plate frame height in pixels
    plate_frames: int = 8  # number of plate frames
    clean_frames: int | None = None  # number of clean-take frames; None: as many as the plate
    seed: int = 0  # every random choice of the shot (scene, paths, subject, noise) follows from it
    camera_motion: float = 1.0  # scales the plate camera's hand-held move (each kind says how large it is)
    clean_deviation: float = 0.3  # how far the clean pass strays from the plate's path, relative to that move
    clean_offset: float = 0.0  # plate time of clean frame 0
    # Plate frames per clean frame; None: the clean take spans the same stretch of the move as the plate, so
    # a linear mapping of the two frame ranges lines them up.
    clean_rate: float | None = None
    exposure_stops: float = 0.3  # clean-take exposure relative to the plate, in stops (linear light)
    white_balance: float = 0.03  # spread of the clean take's random per-channel gain (linear light)
    noise: float = 0.01  # per-pixel sensor noise standard deviation, display space, both takes
    subject_scale: float = 0.75  # the person's body height over the frame height
    lazy: bool = False  # frames render on access (deterministically) instead of up front

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"{self.maker} needs frames of at least 16 x 16 pixels")
        if self.plate_frames < 1 or (self.clean_frames is not None and self.clean_frames < 1):
            raise ValueError(f"{self.maker} needs at least one plate frame and one clean frame")

    def resolved(self) -> Self:
        """This spec with `clean_frames` and `clean_rate` filled in where they were left to their default."""
        clean_frames = self.plate_frames if self.clean_frames is None else self.clean_frames
        clean_rate = self.clean_rate
        if clean_rate is None:
            clean_rate = (self.plate_frames - 1) / (clean_frames - 1) if clean_frames > 1 else 1.0
        return replace(self, clean_frames=clean_frames, clean_rate=clean_rate)

    def times(self) -> tuple[np.ndarray, np.ndarray]:
        """(plate_times, clean_times): when each frame of the takes was taken, float64 plate frames (resolved
        spec)."""
        plate_times = np.arange(self.plate_frames, dtype=np.float64)
        return plate_times, self.clean_offset + self.clean_rate * np.arange(self.clean_frames, dtype=np.float64)

    def params(self) -> dict:
        """The options as `Shot.params` records them (resolved spec; `lazy` left out)."""
        return {k: v for k, v in asdict(self).items() if k != "lazy"}


@dataclass(frozen=True)
class ShotSpec(_TakeSpec):
    """What `make_shot` renders: one textured plane filmed by a hand-held camera, with a walking subject.

    `camera_motion` scales the plate camera's pan (4% of the width), roll (1.5 deg), zoom (4%) and keystone
    (1.5%). The plate is `width` x `height`; the clean take has its own size, in which its camera keeps the
    plate camera's field of view across its width.
    """

    maker: ClassVar[str] = "make_shot"

    clean_width: int | None = None  # clean-take frame width in pixels; None: the plate's
    clean_height: int | None = None  # clean-take frame height in pixels; None: the plate's
    texture: str = "natural"  # "natural" (multi-scale noise, shapes, edges) or "tiles" (one tile repeated)
    flicker: float = 0.0  # per-frame random display-space gain spread, both takes
    subject: bool = True  # composite the subject (`subject_scale` of the frame height) into the plate

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.texture not in ("natural", "tiles"):
            raise ValueError(f"texture must be 'natural' or 'tiles', got {self.texture!r}")

    def resolved(self) -> ShotSpec:
        spec = super().resolved()
        return replace(spec, clean_width=self.width if self.clean_width is None else self.clean_width,
                       clean_height=self.height if self.clean_height is None else self.clean_height)


@dataclass(frozen=True)
class DepthShotSpec(_TakeSpec):
    """What `make_depth_shot` renders: a set with depth filmed through a pinhole camera that moves in 3D.

    `camera_motion` scales the hand-held move: sway 0.15 m x 0.08 m x 0.15 m, yaw 1 deg, pitch 0.7, roll 0.8.
    The clean take retraces the plate camera's path in 3D with its own deviation; with `clean_deviation=0`,
    the same timing and no exposure change it is the plate's exact background (up to noise). Both takes are
    `width` x `height`.
    """

    maker: ClassVar[str] = "make_depth_shot"

    # A locked-off plate: the plate camera does not move, only its sensor noise changes (the clean take is
    # still hand-held around the same spot, scaled by `clean_deviation`).
    plate_still: bool = False
    # "person" (the figure of `make_shot`, `subject_scale` of the frame height), "closeup" (head and
    # shoulders covering `subject_cover` of the frame) or None.
    subject: str | None = "person"
    subject_cover: float = 0.7  # the share of the frame a "closeup" subject covers
    subject_still: bool = False  # the subject holds still (with `plate_still`: only the noise moves)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subject not in (None, "person", "closeup"):
            raise ValueError(f"subject must be 'person', 'closeup' or None, got {self.subject!r}")

    def params(self) -> dict:
        return {**super().params(), "depth": True}


def _spec_from_call(kind: type, positional: tuple, spec, overrides: dict):
    """The resolved spec a generator call asks for: `spec` (default: `kind()`) with the positional options
    (`_POSITIONAL`, in order) and the keyword `overrides` applied. Unknown names raise TypeError."""
    maker = kind.maker
    if spec is not None and not isinstance(spec, kind):
        raise TypeError(f"{maker}(spec=...) takes a {kind.__name__}, got {type(spec).__name__}")
    if len(positional) > len(_POSITIONAL):
        raise TypeError(f"{maker}() takes at most {len(_POSITIONAL)} positional arguments "
                        f"({', '.join(_POSITIONAL)}), got {len(positional)}")
    named = dict(zip(_POSITIONAL, positional, strict=False))
    names = [f.name for f in fields(kind)]
    for name in overrides:
        if name in named:
            raise TypeError(f"{maker}() got multiple values for argument {name!r}")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{kind.__name__} has {', '.join(names)}"
            raise TypeError(f"{maker}() got an unexpected keyword argument {name!r}; {hint}")
    return replace(kind() if spec is None else spec, **named, **overrides).resolved()


def _clean_gain(rng: np.random.Generator, spec: _TakeSpec) -> np.ndarray:
    """The clean take's per-channel gain relative to the plate, (3,) float64 linear light: exposure + balance."""
    return (2.0 ** spec.exposure_stops) * (1 + rng.uniform(-spec.white_balance, spec.white_balance, 3))


def _regrade(img: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """sRGB `img` (H x W x 3 float32) at the clean take's exposure: `gain` applied in linear light, clipped to
    0..1 (`img` itself where the gain is 1)."""
    if np.allclose(gain, 1):
        return img
    return np.clip(linear_to_srgb(srgb_to_linear(img) * gain.astype(np.float32)), 0, 1)


def _frame_lists(lazy: bool, count: int, renders) -> list:
    """One frame list per render function (frame index -> array): lazy sequences, or lists rendered frame by
    frame so that render functions sharing a memo of the latest frame (the plate, alpha, ... of one frame)
    render it once."""
    if lazy:
        return [_LazyFrames(count, render) for render in renders]
    per_frame = [tuple(render(i) for render in renders) for i in range(count)]
    return [list(x) for x in zip(*per_frame, strict=True)]


# ---------------------------------------------------------------------------------------------------------
# A planar shot


def _planar_cameras(rng: np.random.Generator, spec: ShotSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plate and clean cameras, one 3x3 float64 per frame: centred camera coordinates -> frame pixels.

    The clean pass is the plate's path plus its own smaller wander; its camera scales to its own width.
    """
    width, height, cw, ch = spec.width, spec.height, spec.clean_width, spec.clean_height
    amp = spec.camera_motion * np.array([0.04 * width, 0.03 * width, np.radians(1.5), 0.04, 0.015, 0.015])
    path = _smooth_path(rng, 6)
    wander = _smooth_path(rng, 6)
    plate_times, clean_times = spec.times()

    def pose(t: float, deviation: float) -> np.ndarray:
        return amp * (_eval_path(path, t) + deviation * _eval_path(wander, t))

    to_plate = _translate((width - 1) / 2, (height - 1) / 2)
    to_clean = _translate((cw - 1) / 2, (ch - 1) / 2) @ _scale(cw / width)
    cam_plate = [to_plate @ _pose_matrix(pose(t, 0.0), width) for t in plate_times]
    cam_clean = [to_clean @ _pose_matrix(pose(t, spec.clean_deviation), width) for t in clean_times]
    return cam_plate, cam_clean


def _planar_scene_frame(spec: ShotSpec, cam_plate: list[np.ndarray], cam_clean: list[np.ndarray]):
    """Where the scene plane lies: ((width, height) in scene pixels, scene pixels per frame pixel, plate and
    clean homographies scene pixels -> frame pixels, 3x3 float64 with h[2, 2] = 1).

    The plane covers everything any frame sees, plus a margin.
    """
    pts = []
    for cams, (fw, fh) in ((cam_plate, (spec.width, spec.height)), (cam_clean, (spec.clean_width, spec.clean_height))):
        corners = np.array([[0, 0, 1], [fw - 1, 0, 1], [fw - 1, fh - 1, 1], [0, fh - 1, 1]], np.float64).T
        for cam in cams:
            p = np.linalg.inv(cam) @ corners
            pts.append((p[:2] / p[2]).T)
    pts = np.concatenate(pts)
    unit = _SCENE_DENSITY * max(1.0, spec.clean_width / spec.width)
    lo, hi = pts.min(0) - 8, pts.max(0) + 8
    size = tuple(int(np.ceil((hi - lo)[k] * unit)) + 1 for k in (0, 1))
    # Scene pixel -> centred camera units.
    from_scene = _translate(*lo) @ _scale(1 / unit)
    plate_h = [c @ from_scene for c in cam_plate]
    clean_h = [c @ from_scene for c in cam_clean]
    return size, unit, [h / h[2, 2] for h in plate_h], [h / h[2, 2] for h in clean_h]


class _PlanarFrames:
    """Renders frame k of either take of a planar shot on demand (deterministically: the same noise and
    flicker every time). Frames are H x W x 3 float32 sRGB 0..1, alpha H x W float32.

    scenes:       (plate, clean) scene planes, Hs x Ws x 3 float32 sRGB, the clean one at its own exposure.
    homographies: (plate, clean) lists of 3x3 float64, scene pixels -> frame pixels.
    frame_seeds:  (plate, clean) seeds of the per-frame noise generators.
    """

    def __init__(self, spec: ShotSpec, scenes: tuple, homographies: tuple, look: _SubjectLook,
                 frame_seeds: np.ndarray):
        self.spec, self.scenes, self.homographies = spec, scenes, homographies
        self.look, self.frame_seeds = look, frame_seeds
        self.plate_times = spec.times()[0]
        self._last_subject: dict = {}

    def _subject(self, i: int):
        # The plate, alpha and foreground of one frame share a render; keep only the latest.
        if i not in self._last_subject:
            self._last_subject.clear()
            s = self.spec
            self._last_subject[i] = _subject_layers(self.look, float(self.plate_times[i]), s.width, s.height,
                                                    s.subject_scale)
        return self._last_subject[i]

    def _view(self, take: int, k: int, size: tuple[int, int]):
        """Frame k of a take (0 plate, 1 clean): the scene plane through the camera, with this frame's flicker;
        returns it and the frame's generator, which then draws its noise."""
        r = np.random.default_rng([int(self.frame_seeds[take]), k])
        img = cv2.warpPerspective(self.scenes[take], self.homographies[take][k], size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
        if self.spec.flicker:
            img *= np.float32(1 + self.spec.flicker * r.standard_normal())
        return img, r

    def plate(self, i: int) -> np.ndarray:
        img, r = self._view(0, i, (self.spec.width, self.spec.height))
        if self.spec.subject:
            a, fg, (x0, y0) = self._subject(i)
            _blend_mask_float(img, a, fg, x0, y0)
        return _add_noise(img, self.spec.noise, r)

    def clean(self, j: int) -> np.ndarray:
        img, r = self._view(1, j, (self.spec.clean_width, self.spec.clean_height))
        return _add_noise(img, self.spec.noise, r)

    def alpha(self, i: int) -> np.ndarray:
        out = np.zeros((self.spec.height, self.spec.width), np.float32)
        if self.spec.subject:
            a, _, (x0, y0) = self._subject(i)
            _paste(out, a, x0, y0)
        return out

    def foreground(self, i: int) -> np.ndarray:
        out = np.zeros((self.spec.height, self.spec.width, 3), np.float32)
        if self.spec.subject:
            a, fg, (x0, y0) = self._subject(i)
            _paste(out, fg * (a > 0)[..., None], x0, y0)
        return out


def make_shot(*positional, spec: ShotSpec | None = None, **overrides) -> Shot:
    """Render a synthetic moving-camera shot of a textured plane, with ground truth.

    Called as it always was, `make_shot(width, height, plate_frames, clean_frames, seed, **options)` (any of
    them by keyword too), or from a spec: `make_shot(spec=ShotSpec(...), **overrides)`. The options and their
    meaning are `ShotSpec`'s fields; an unknown name raises TypeError, a bad value ValueError.
    """
    spec = _spec_from_call(ShotSpec, positional, spec, overrides)
    rng = np.random.default_rng(spec.seed)
    cam_plate, cam_clean = _planar_cameras(rng, spec)
    (sw, sh), unit, plate_h, clean_h = _planar_scene_frame(spec, cam_plate, cam_clean)
    scene = _render_scene(rng, sw, sh, unit, spec.width, spec.height, spec.texture)
    gain = _clean_gain(rng, spec)
    look = _random_look(rng)
    frames = _PlanarFrames(spec, (scene, _regrade(scene, gain)), (plate_h, clean_h), look,
                           rng.integers(0, 2**63, size=2))
    plate, alpha, foreground = _frame_lists(spec.lazy, spec.plate_frames,
                                            (frames.plate, frames.alpha, frames.foreground))
    (clean,) = _frame_lists(spec.lazy, spec.clean_frames, (frames.clean,))
    plate_times, clean_times = spec.times()
    return Shot(plate=plate, clean=clean, alpha=alpha, foreground=foreground, plate_homographies=plate_h,
                clean_homographies=clean_h, plate_times=plate_times, clean_times=clean_times, clean_gain=gain,
                plate_size=(spec.width, spec.height), clean_size=(spec.clean_width, spec.clean_height),
                params=spec.params(), scene=scene)


def _window(shape: tuple[int, int], h: int, w: int, x0: int, y0: int):
    """Slices (destination, source) pasting an h x w patch at (x0, y0) into an array of `shape`, clipped;
    both empty when the patch lies wholly outside (never negative bounds, which would wrap around)."""
    H, W = shape
    xa, ya = min(max(x0, 0), W), min(max(y0, 0), H)
    xb, yb = max(min(x0 + w, W), xa), max(min(y0 + h, H), ya)
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _paste(dst: np.ndarray, src: np.ndarray, x0: int, y0: int) -> None:
    d, s = _window(dst.shape[:2], *src.shape[:2], x0, y0)
    dst[d] = src[s]


def _blend_mask_float(img: np.ndarray, alpha: np.ndarray, fg: np.ndarray, x0: int, y0: int) -> None:
    d, s = _window(img.shape[:2], *alpha.shape, x0, y0)
    a = np.ascontiguousarray(alpha[s])
    img[d] = cv2.blendLinear(np.ascontiguousarray(fg[s]), np.ascontiguousarray(img[d]), a, 1 - a)


# ---------------------------------------------------------------------------------------------------------
# Scenes with depth


def _closeup_shape(width: int, height: int, k: float, cx: float, tilt: float) -> np.ndarray:
    """8-bit mask (height x width) of a head-and-shoulders close-up; `k` grows it sideways and up."""
    sub = 16
    mask = np.zeros((height, width), np.uint8)
    H = float(height)
    shoulders = H * max(0.42, 0.7 - 0.12 * (k - 1))
    head_c = (cx + tilt * H, 0.3 * H + 0.5 * (shoulders - 0.7 * H))
    rx, ry = min(0.28 * k, 0.45) * H, 0.3 * H

    def P(x, y):
        return int(round(x * sub)), int(round(y * sub))

    cv2.ellipse(mask, P(*head_c), (int(rx * sub), int(ry * sub)), np.degrees(tilt), 0, 360, 255, -1,
                cv2.LINE_AA, 4)
    cv2.line(mask, P(cx, head_c[1]), P(cx, shoulders + 0.05 * H), 255, max(1, int(0.35 * rx)), cv2.LINE_AA, 4)
    top, bottom = 0.75 * k * H, 0.95 * k * H
    torso = np.array([P(cx - top, shoulders), P(cx + top, shoulders), P(cx + bottom, H + 8), P(cx - bottom, H + 8)])
    cv2.fillPoly(mask, [torso.astype(np.int32)], 255, cv2.LINE_AA, 4)
    for sgn in (-1, 1):  # rounded shoulders
        cv2.ellipse(mask, P(cx + sgn * (top - 0.1 * k * H), shoulders + 0.06 * H),
                    (int(0.12 * k * H * sub), int(0.08 * H * sub)), 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    return mask


def _closeup_scale(width: int, height: int, cover: float, cx: float) -> float:
    """The `_closeup_shape` size whose mask covers `cover` of the frame (bisection on a small raster)."""
    sw, sh = 160, max(16, int(round(160 * height / width)))
    lo, hi = 0.2, 4.0
    for _ in range(20):
        k = 0.5 * (lo + hi)
        frac = float(_closeup_shape(sw, sh, k, cx * sw / width, 0.0).mean()) / 255
        lo, hi = (k, hi) if frac < cover else (lo, k)
    return 0.5 * (lo + hi)


def _closeup_layers(look: _SubjectLook, t: float, width: int, height: int, k: float,
                    still: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Alpha and colour (full frame) of a close-up subject at time t, origin (0, 0)."""
    ph = look.phases
    tt = 0.0 if still else t
    cx = width * (0.5 + 0.12 * look.side + (0 if still else 0.03 * np.sin(2 * np.pi * tt / 40 + ph[0])))
    tilt = 0.0 if still else 0.02 * np.sin(2 * np.pi * tt / 30 + ph[1])
    mask = _closeup_shape(width, height, k, cx, tilt)
    soft = max(0.6, height / 1080)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.2 * soft)
    tex = cv2.resize(look.texture, (width, height), interpolation=cv2.INTER_LINEAR)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    # Face and neck above the shoulder line in skin tones, cloth below.
    skin_w = np.clip((0.55 - yy) * 12, 0, 1) * np.ones((1, width), np.float32)
    lum_cloth = (1 + 0.2 * tex) * (1 - skin_w)
    lum_skin = (0.9 + 0.08 * tex) * skin_w
    colour = cv2.merge([cv2.addWeighted(lum_cloth, float(look.cloth[c]), lum_skin, float(look.skin[c]), 0)
                        for c in range(3)])
    colour *= (alpha > 0)[..., None]
    return alpha, np.clip(colour, 0, 1, out=colour), (0, 0)


def _look_at(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World -> camera rotation for small yaw (about y), pitch (about x) and roll (about z), radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _depth_cameras(rng: np.random.Generator, spec: DepthShotSpec) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plate and clean camera poses, one per frame: (x, y, z) in metres and (yaw, pitch, roll) in radians,
    (6,) float64. The clean pass retraces the plate's path plus its own wander."""
    amp = spec.camera_motion * np.array([0.15, 0.08, 0.15, np.radians(1.0), np.radians(0.7), np.radians(0.8)])
    path, wander = _smooth_path(rng, 6), _smooth_path(rng, 6)
    plate_times, clean_times = spec.times()

    def camera(t: float, deviation: float) -> np.ndarray:
        return amp * (deviation * _eval_path(wander, t) + (0 if spec.plate_still else _eval_path(path, t)))

    return [camera(t, 0.0) for t in plate_times], [camera(t, spec.clean_deviation) for t in clean_times]


def _depth_planes(rng: np.random.Generator, width: int, height: int) -> list[tuple]:
    """The set, back to front: a far wall (10 m), a panel in mid distance (5 m), a pillar near the camera
    (2.5 m). Each plane is (3x3 float64 texture pixel (u, v, 1) -> world point, texture Ht x Wt x 3 float32
    sRGB at the plate's exposure, coverage Ht x Wt float32 0..1). The focal length is the frame width."""
    f = float(width)
    # Layers: depth and the horizontal place of the panel and the pillar (fractions of the half width).
    half_w, half_h = width / (2 * f), height / (2 * f)
    layers = [(10.0, None), (5.0, rng.uniform(-0.4, 0.0)), (2.5, rng.uniform(0.1, 0.3))]
    planes = []
    for z, x in layers:
        if x is None:  # the wall: everything any camera sees, with a margin for the move
            m = 1.5
            x0, x1, y0, y1 = -z * half_w * m, z * half_w * m, -z * half_h * m, z * half_h * m
        elif z == 5.0:  # panel: a third of the frame wide, two thirds high
            x0, x1 = z * half_w * (2 * x), z * half_w * (2 * x + 0.66)
            y0, y1 = -z * half_h * 0.8, z * half_h * 0.5
        else:  # pillar: narrow and taller than any view
            x0, x1 = z * half_w * (2 * x), z * half_w * (2 * x + 0.22)
            y0, y1 = -z * half_h * 2, z * half_h * 2
        texel = z / (f * _SCENE_DENSITY)  # metres per texture pixel, ~1.25 texels per frame pixel
        tw, th = int(np.ceil((x1 - x0) / texel)) + 1, int(np.ceil((y1 - y0) / texel)) + 1
        tex = cv2.GaussianBlur(_render_texture(rng, tw, th, _SCENE_DENSITY, width,
                                               shapes=int(min(800, 200 * tw * th / (1.56 * width * height)))),
                               (0, 0), 0.5 * _SCENE_DENSITY)
        a = np.ones((th, tw), np.float32)
        if x is not None:  # a one-texel anti-aliased border, transparent outside
            a = np.pad(a[1:-1, 1:-1], 1)
            a = cv2.GaussianBlur(a, (0, 0), 0.6)
        # Texture pixel (u, v) -> world point (x0 + u * texel, y0 + v * texel, z).
        planes.append((np.array([[texel, 0, x0], [0, texel, y0], [0, 0, z]]), tex, a))
    return planes


def _plane_homographies(planes: list[tuple], pose: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """Per plane, the homography texture pixels -> frame pixels (3x3 float64, h[2, 2] = 1) of a camera at
    `pose` (see `_depth_cameras`) with a width x height frame and a focal length of the frame width."""
    f = float(width)
    km = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    r = _look_at(*pose[3:])
    out = []
    for a_mat, _, _ in planes:
        h = km @ r @ (a_mat - np.outer(pose[:3], [0, 0, 1]))
        out.append(h / h[2, 2])
    return out


class _DepthFrames:
    """Renders plate frame i (plate, alpha, foreground, true background) and clean frame j of a shot with
    depth on demand, deterministically. Frames are H x W x 3 float32 sRGB 0..1, alpha H x W float32.

    planes: see `_depth_planes`; gain: the clean take's linear-light gain (3,); poses: (plate, clean) camera
    poses (see `_depth_cameras`); frame_seeds: (plate, clean) seeds of the per-frame noise generators.
    """

    def __init__(self, spec: DepthShotSpec, planes: list[tuple], gain: np.ndarray, poses: tuple,
                 look: _SubjectLook, frame_seeds: np.ndarray):
        self.spec, self.planes, self.look, self.frame_seeds = spec, planes, look, frame_seeds
        self.plate_tex = [t for _, t, _ in planes]
        self.clean_tex = [_regrade(t, gain) for t in self.plate_tex]
        self.plate_h, self.clean_h = ([_plane_homographies(planes, p, spec.width, spec.height) for p in take]
                                      for take in poses)
        self.plate_times = spec.times()[0]
        self.closeup_k = 0.0
        if spec.subject == "closeup":
            centre = spec.width * (0.5 + 0.12 * look.side)
            self.closeup_k = _closeup_scale(spec.width, spec.height, spec.subject_cover, centre)
        self._last: dict = {}

    def _composite(self, hs: list[np.ndarray], textures: list[np.ndarray]) -> np.ndarray:
        """The planes seen through one camera (homographies `hs`), composited back to front."""
        size = (self.spec.width, self.spec.height)
        img = None
        for h, tex, (_, _, a) in zip(hs, textures, self.planes, strict=True):
            layer = cv2.warpPerspective(tex, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            if img is None:
                img = layer
                continue
            w = cv2.warpPerspective(a, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            img = cv2.blendLinear(layer, img, w, 1 - w)
        return img

    def _subject(self, i: int):
        s = self.spec
        t = 0.0 if s.subject_still else float(self.plate_times[i])
        if s.subject == "closeup":
            return _closeup_layers(self.look, t, s.width, s.height, self.closeup_k, s.subject_still)
        return _subject_layers(self.look, t, s.width, s.height, s.subject_scale)

    def render_plate(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(plate, alpha, foreground, background) of plate frame i."""
        bg = self._composite(self.plate_h[i], self.plate_tex)
        img = bg.copy()
        alpha = np.zeros((self.spec.height, self.spec.width), np.float32)
        fg = np.zeros((self.spec.height, self.spec.width, 3), np.float32)
        if self.spec.subject:
            a, colour, (x0, y0) = self._subject(i)
            _blend_mask_float(img, a, colour, x0, y0)
            _paste(alpha, a, x0, y0)
            _paste(fg, colour * (a > 0)[..., None], x0, y0)
        return _add_noise(img, self.spec.noise, np.random.default_rng([int(self.frame_seeds[0]), i])), alpha, fg, bg

    def part(self, k: int):
        """Frame index -> part k of `render_plate`; the four parts share one render of the latest frame."""
        def get(i: int) -> np.ndarray:
            if i not in self._last:
                self._last.clear()
                self._last[i] = self.render_plate(i)
            return self._last[i][k]
        return get

    def clean(self, j: int) -> np.ndarray:
        img = self._composite(self.clean_h[j], self.clean_tex)
        return _add_noise(img, self.spec.noise, np.random.default_rng([int(self.frame_seeds[1]), j]))


def make_depth_shot(*positional, spec: DepthShotSpec | None = None, **overrides) -> Shot:
    """A shot of a set with depth (`DepthShotSpec`), filmed through a pinhole camera that moves in 3D.

    The far wall, mid panel and near pillar are textured planes composited back to front, so the near layers
    slide over the far ones as the camera moves (parallax) and hide or uncover parts of them (occlusion).
    Called as `make_shot` is: positional (width, height, plate_frames, clean_frames, seed) and keyword options,
    or `make_depth_shot(spec=DepthShotSpec(...), **overrides)`. `Shot.backgrounds` holds the true background
    of each plate frame; `plate_homographies` / `clean_homographies` are those of the far wall, for reference.
    """
    spec = _spec_from_call(DepthShotSpec, positional, spec, overrides)
    rng = np.random.default_rng(spec.seed)
    poses = _depth_cameras(rng, spec)
    planes = _depth_planes(rng, spec.width, spec.height)
    gain = _clean_gain(rng, spec)
    look = _random_look(rng)
    frames = _DepthFrames(spec, planes, gain, poses, look, rng.integers(0, 2**63, size=2))
    plate, alpha, foreground, backgrounds = _frame_lists(spec.lazy, spec.plate_frames,
                                                         [frames.part(k) for k in range(4)])
    (clean,) = _frame_lists(spec.lazy, spec.clean_frames, (frames.clean,))
    plate_times, clean_times = spec.times()
    return Shot(plate=plate, clean=clean, alpha=alpha, foreground=foreground,
                plate_homographies=[h[0] for h in frames.plate_h], clean_homographies=[h[0] for h in frames.clean_h],
                plate_times=plate_times, clean_times=clean_times, clean_gain=gain, plate_size=(spec.width, spec.height),
                clean_size=(spec.width, spec.height), params=spec.params(), scene=planes[0][1], backgrounds=backgrounds)

"""Loss curves as a PNG, drawn with OpenCV (no plotting library is installed)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from howard_core.io.atomic import write_bytes_atomic

# BGR colours that stay distinguishable on white.
_COLOURS = [(40, 40, 40), (200, 90, 30), (40, 150, 40), (40, 40, 210), (170, 60, 170), (30, 160, 200),
            (120, 120, 20), (90, 90, 230)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = max(hi - lo, 1e-12)
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.0e}"


def render_loss_plot(history: list[dict], title: str, width: int = 960, height: int = 540) -> np.ndarray:
    """A (height, width, 3) uint8 BGR image of every loss series in `history` against "step".

    `history` is a list of dicts with a "step" key and one float per series;
    the y axis is logarithmic because the terms differ by orders of magnitude.
    """
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 80, 190, 40, 55
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    cv2.putText(img, title, (left, 26), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    names = [k for k in (history[0] if history else {}) if k not in ("step", "it_s")]
    steps = np.array([h["step"] for h in history], np.float64)
    values = {n: np.array([h.get(n, np.nan) for h in history], np.float64) for n in names}
    positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values.values()] or [np.array([])])
    if len(steps) == 0 or positive.size == 0:
        cv2.putText(img, "no losses recorded yet", (x0 + 20, (y0 + y1) // 2), _FONT, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
        return img

    s_lo, s_hi = float(steps.min()), float(steps.max())
    if s_hi == s_lo:
        s_lo, s_hi = s_lo - 1, s_hi + 1
    e_lo, e_hi = math.floor(math.log10(positive.min())), math.ceil(math.log10(positive.max()))
    if e_hi == e_lo:
        e_hi += 1

    def px(step, value):
        x = x0 + (step - s_lo) / (s_hi - s_lo) * (x1 - x0)
        y = y1 - (math.log10(value) - e_lo) / (e_hi - e_lo) * (y1 - y0)
        return int(round(x)), int(round(y))

    grey, axis = (225, 225, 225), (0, 0, 0)
    for e in range(e_lo, e_hi + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if not (10.0**e_lo <= v <= 10.0**e_hi):
                continue
            _, y = px(s_lo, v)
            cv2.line(img, (x0, y), (x1, y), grey if m == 1 else (242, 242, 242), 1)
            if m == 1 or e_hi - e_lo <= 2:
                cv2.putText(img, _fmt(v), (8, y + 4), _FONT, 0.42, axis, 1, cv2.LINE_AA)
    for s in _nice_ticks(s_lo, s_hi):
        x, _ = px(s, 10.0**e_lo)
        cv2.line(img, (x, y0), (x, y1), grey, 1)
        label = _fmt(s)
        tw = cv2.getTextSize(label, _FONT, 0.42, 1)[0][0]
        cv2.putText(img, label, (x - tw // 2, y1 + 18), _FONT, 0.42, axis, 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), axis, 1)
    cv2.putText(img, "step", ((x0 + x1) // 2 - 15, height - 12), _FONT, 0.5, axis, 1, cv2.LINE_AA)
    cv2.putText(img, "y: loss, log scale", (8, height - 12), _FONT, 0.45, axis, 1, cv2.LINE_AA)

    for i, name in enumerate(names):
        colour = _COLOURS[i % len(_COLOURS)]
        v = values[name]
        ok = np.isfinite(v) & (v > 0)
        pts = np.array([px(s, val) for s, val in zip(steps[ok], v[ok], strict=True)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, 2 if name == "loss" else 1, cv2.LINE_AA)
        for p in pts if len(pts) <= 3 else ():
            cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
        ly = y0 + 14 + 20 * i
        cv2.line(img, (x1 + 15, ly - 4), (x1 + 40, ly - 4), colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (x1 + 46, ly), _FONT, 0.45, axis, 1, cv2.LINE_AA)
    return img


def write_loss_plot(path, history: list[dict], title: str) -> None:
    """Render the loss curves and write them to `path` (PNG) atomically."""
    ok, buf = cv2.imencode(".png", render_loss_plot(history, title))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())

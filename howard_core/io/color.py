"""Colour conversion between a plate's own space and the network's working space.

Working space: display-referred sRGB-encoded Rec.709, float32 in 0..1. That is what the
BGMv2 network was trained on (ordinary photos and video).

Colour-space names a user may give (`--colorspace`):

* `srgb` (alias `rec709`): display-referred code values (sRGB stills, Rec.709 video). They
  are fed to the network as they are; no sRGB/BT.1886 re-encoding, since the network
  saw both kinds of footage. Numpy fast path, no OCIO.
* `linear` (alias `lin_rec709`): scene-linear with Rec.709/sRGB primaries. Working =
  sRGB curve of the value clipped to 0..1 (no tone mapping, highlights clip). Numpy fast path.
* anything else: an OpenColorIO colour space (or role or alias) in the config given by
  `ocio_config`, else `$OCIO`, else the built-in `ocio://studio-config-latest` (ACES
  studio config, which includes the camera log spaces). The working space is that
  config's sRGB-encoded Rec.709 space; configs without one are bridged through OCIO's
  built-in config using their interchange roles.

Defaults by file type (when `--colorspace` is not given): EXR/HDR are `linear`,
everything else (PNG, JPEG, TIFF, DPX, movies) is `srgb`.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import numpy as np

from howard_core.errors import HowardError

LINEAR = "linear"
SRGB = "srgb"
_ALIASES = {"linear": LINEAR, "lin_rec709": LINEAR, "srgb": SRGB, "rec709": SRGB}
_LINEAR_EXTS = {".exr", ".sxr", ".mxr", ".hdr", ".rgbe", ".pfm"}
DEFAULT_OCIO_CONFIG = "ocio://studio-config-latest"
# sRGB-encoded Rec.709 as different generations of configs name it, best first.
_WORKING_NAMES = (
    "sRGB Encoded Rec.709 (sRGB)",
    "sRGB - Texture",
    "Utility - sRGB - Texture",
    "srgb_tx",
    "srgb_texture",
    "sRGB",
)


def default_colorspace(path: str | os.PathLike) -> str:
    """`linear` for floating-point image formats (EXR, HDR), `srgb` for everything else."""
    return LINEAR if Path(path).suffix.lower() in _LINEAR_EXTS else SRGB


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """sRGB transfer curve (IEC 61966-2-1) of `linear` clipped to 0..1; float32, same shape."""
    # In place, with float32 constants: numpy's np.where form evaluated both branches over whole
    # HD frames in new arrays and cost 2-3x as much, on every frame read.
    x = np.clip(np.atleast_1d(np.asarray(linear, dtype=np.float32)), 0.0, 1.0)
    out = np.power(x, np.float32(1 / 2.4))
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    np.multiply(x, np.float32(12.92), out=out, where=x <= np.float32(0.0031308))
    out[x >= 1.0] = 1.0  # float32 1.055 - 0.055 is 0.99999994; white must stay white
    return out.reshape(np.shape(linear))


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """Inverse sRGB curve; float32, same shape. Values outside 0..1 are clipped first."""
    x = np.clip(np.atleast_1d(np.asarray(encoded, dtype=np.float32)), 0.0, 1.0)
    out = x + np.float32(0.055)
    out *= np.float32(1 / 1.055)
    np.power(out, np.float32(2.4), out=out)
    np.multiply(x, np.float32(1 / 12.92), out=out, where=x <= np.float32(0.04045))
    return out.reshape(np.shape(encoded))


class ColorConverter:
    """Converts HxWx3 float32 RGB between one colour space and the working space.

    `name` is the canonical space name (`srgb`, `linear` or the OCIO colour-space name).
    Instances are immutable and safe to share between threads (OCIO CPU processors are).
    """

    def __init__(self, name: str, to_working=None, from_working=None, config: str | None = None):
        self.name = name
        self.config = config
        self._to = to_working
        self._from = from_working

    def __repr__(self) -> str:
        where = f" from {self.config}" if self.config else ""
        return f"ColorConverter({self.name!r}{where})"

    @property
    def is_linear(self) -> bool:
        return self.name == LINEAR

    @property
    def is_fast(self) -> bool:
        """True for the numpy fast paths (`srgb`, `linear`), False for OCIO spaces."""
        return self.name in (SRGB, LINEAR)

    def to_working(self, native: np.ndarray) -> np.ndarray:
        """Native HxWx3 float32 (any range) -> working HxWx3 float32 sRGB, clipped to 0..1.

        An sRGB image already inside 0..1 (every decoded 8-10 bit frame) is returned as it is, not
        copied: treat the result as read-only. At HD that is 25 MB less per frame in flight."""
        rgb = _rgb(native)
        if self.name == SRGB:
            if rgb.min() >= 0.0 and rgb.max() <= 1.0:
                return rgb
            out = rgb
        elif self.name == LINEAR:
            return srgb_encode(rgb)
        else:
            out = rgb.copy()
            self._to.applyRGB(out)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    def from_working(self, working: np.ndarray) -> np.ndarray:
        """Working HxWx3 float32 sRGB 0..1 -> HxWx3 float32 in this space (a new array)."""
        rgb = _rgb(working)
        if self.name == SRGB:
            return rgb.copy()
        if self.name == LINEAR:
            return srgb_decode(rgb)
        out = rgb.copy()
        self._from.applyRGB(out)
        return out

    def clipped_away(self, native: np.ndarray, working: np.ndarray | None = None) -> np.ndarray | None:
        """What the working space could not hold of `native` (HxWx3 float32, this space):
        native - from_working(to_working(native)), e.g. scene-linear highlights above 1 and
        negatives; None where that is nothing. `working`: to_working(native), if already made."""
        rgb = _rgb(native)
        if working is rgb:  # to_working found nothing to change
            return None
        if self.is_fast:
            # Both curves map 0..1 onto itself, so only values outside 0..1 are lost; a float32
            # round trip through the curve would only add its rounding error.
            if rgb.min() >= 0.0 and rgb.max() <= 1.0:
                return None
            return rgb - np.clip(rgb, 0.0, 1.0)
        work = self.to_working(rgb) if working is None else working
        return rgb - self.from_working(work)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    return image


def make_converter(colorspace: str | None, ocio_config: str | None = None, path=None) -> ColorConverter:
    """Converter for `colorspace` (default from `path`'s file type); HowardError on unknown names."""
    if colorspace is None or not str(colorspace).strip():
        return ColorConverter(default_colorspace(path) if path is not None else SRGB)
    fast = _ALIASES.get(str(colorspace).strip().lower())
    if fast:
        return ColorConverter(fast)
    return _ocio_converter(str(colorspace).strip(), ocio_config or os.environ.get("OCIO") or DEFAULT_OCIO_CONFIG)


@functools.lru_cache(maxsize=8)
def _load_config(config_path: str):
    import PyOpenColorIO as OCIO

    try:
        return OCIO.Config.CreateFromFile(config_path)
    except Exception as exc:
        raise HowardError(
            f"OCIO config {config_path} cannot be loaded ({exc}); check --ocio-config / $OCIO "
            f"or use a built-in one such as ocio://studio-config-latest"
        ) from exc


@functools.lru_cache(maxsize=32)
def _ocio_converter(name: str, config_path: str) -> ColorConverter:
    import PyOpenColorIO as OCIO

    config = _load_config(config_path)
    space = config.getColorSpace(name)  # resolves roles and aliases too
    if space is None:
        raise HowardError(f"colour space {name!r} is not in OCIO config {config_path}; {_suggest(config, name)}")
    canonical = space.getName()
    working = next((config.getColorSpace(n) for n in _WORKING_NAMES if config.getColorSpace(n)), None)
    try:
        if working is not None:
            fwd = config.getProcessor(canonical, working.getName())
            inv = config.getProcessor(working.getName(), canonical)
        else:
            builtin = _builtin_working_name()
            fwd = OCIO.Config.GetProcessorToBuiltinColorSpace(config, canonical, builtin)
            inv = OCIO.Config.GetProcessorFromBuiltinColorSpace(builtin, config, canonical)
    except Exception as exc:
        raise HowardError(
            f"OCIO config {config_path} cannot convert {canonical!r} to sRGB ({exc}); add an sRGB-encoded "
            f"Rec.709 colour space (e.g. 'sRGB - Texture') or the interchange roles to the config"
        ) from exc
    return ColorConverter(canonical, fwd.getDefaultCPUProcessor(), inv.getDefaultCPUProcessor(), config=config_path)


def _builtin_working_name() -> str:
    builtin = _load_config("ocio://cg-config-latest")
    return next(n for n in _WORKING_NAMES if builtin.getColorSpace(n) is not None)


def _suggest(config, name: str) -> str:
    names = list(config.getColorSpaceNames())
    names += [alias for n in list(names) for alias in config.getColorSpace(n).getAliases()]
    lower = {n.lower(): n for n in names}
    close = [lower[n] for n in difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.5)]
    close += [n for n in names if name.lower() in n.lower() and n not in close]
    if close:
        return "close matches: " + ", ".join(repr(n) for n in close[:5])
    return f"it has {len(names)} spaces, e.g. " + ", ".join(repr(n) for n in names[:5])

"""Frame sinks: where mattes go.

Kinds (`open_sink(spec, kind, ...)`):

* `exr`: half-float EXR per frame, channels R,G,B,A = foreground premultiplied by alpha
  (the comp convention) in the plate's own colour space, alpha as data. Extra layers on
  request, in the same file as named channel groups: `fg.R fg.G fg.B` (straight
  foreground, plate space), `bg.R bg.G bg.B` (aligned clean plate, plate space), `err.Y`
  (error map, data), `ref.Y` (refinement map, data). Any other layer name works too:
  3 channels -> `.R .G .B`, 1 channel -> `.Y`. ZIP compression (lossless) unless
  `compression` names another of `EXR_COMPRESSIONS`.
* `png`: RGBA PNG per frame, straight (unpremultiplied) foreground as PNG requires and
  the original BGMv2 workflow wrote; 8-bit by default, `bit_depth=16` on request. zlib
  level `PNG_DEFAULT_LEVEL` (1) unless `compression` gives another, "0".."9" (see
  `png_level`).
* `alpha`: single-channel alpha per frame. `.exr` -> half float channel `A`;
  `.png`/`.tif` -> 16-bit grey (PNG at the same deflate levels).
* `prores`: one ProRes 4444 .mov with 16-bit alpha, straight foreground.

Colour: EXR stores colour in the plate's native space unchanged. PNG and ProRes are
display formats, so their colour is the working encoding (display-referred sRGB 0..1),
which for sRGB/Rec.709 plates is the plate's own space and for linear/OCIO plates is
their sRGB rendering (clipped, no tone mapping).

Naming: `spec` is a pattern (`out/matte.####.exr`), a pattern-less file name
(`out/matte.exr` -> `out/matte.####.exr`, padding from the plate), or a folder. For a
folder the name comes from the plate, tagged so a plate is never overwritten and kinds
never collide: `plate.####.exr` -> `plate_matte.####.exr` / `plate_alpha.####.png`,
`shot.mov` -> `shot_matte.####.exr`. For a still plate the output is one file.
"""

from __future__ import annotations

import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from howard_core.errors import HowardError
from howard_core.io import images
from howard_core.io.atomic import ensure_writable_dir, missing_folders, remove_empty_folders
from howard_core.io.color import LINEAR, SRGB, ColorConverter, default_colorspace, make_converter
from howard_core.io.frames import SequencePattern
from howard_core.io.source import FrameSource

KINDS = ("exr", "png", "alpha", "prores")
# OpenEXR's codecs. Lossless: none, rle, zips, zip, piz (and pxr24 for half data). Lossy: b44/b44a on every
# channel, alpha included; dwaa/dwab on colour channels only (alpha stays lossless).
EXR_COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")
# Deflate level for PNG outputs: at HD, libpng's default (zlib level 6, adaptive filters) took 0.86 s
# per RGBA frame; `images.encode_png` at level 1 (ISA-L) takes 0.03-0.045 s.
PNG_DEFAULT_LEVEL = 1
PNG_LEVELS = tuple(str(v) for v in range(10))
_EXTS = {"exr": (".exr",), "png": (".png",), "alpha": (".exr", ".png", ".tif", ".tiff"), "prores": (".mov",)}
_TAGS = {"exr": "matte", "png": "matte", "alpha": "alpha", "prores": "matte"}
DEFAULT_PADDING = 4
DEFAULT_FPS = Fraction(24)


class FrameSink:
    """Writes one output, frame by frame; each frame file appears atomically.

    `write(n, rgb_native, alpha, layers)`: `rgb_native` HxWx3 float32 straight (not
    premultiplied) foreground in the plate's native colour space; `alpha` HxW float32
    0..1; `layers` maps layer name -> HxW or HxWx3 float32. Image sequences may be
    written from several threads at once (each frame is its own file); ProRes writes are
    serialised.
    """

    supports_resume = True

    def __init__(self, kind: str, target: SequencePattern | Path, converter: ColorConverter, layers, bit_depth,
                 compression: str = "zip"):
        """`compression`: the EXR codec, or for PNG files the deflate level as text ("0".."9")."""
        self.kind = kind
        self.target = target
        self.converter = converter
        self.layers = list(layers)
        self.bit_depth = bit_depth
        self.compression = compression
        self._lock = threading.Lock()
        self.created_folders: list[Path] = []  # made for this output; removed again by abort() while empty

    @property
    def colorspace(self) -> str:
        return self.converter.name

    def __repr__(self) -> str:
        return f"<FrameSink {self.kind} {self.display}>"

    @property
    def display(self) -> str:
        return self.target.display if isinstance(self.target, SequencePattern) else str(self.target)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def path_for(self, n: int) -> str:
        return str(self.target.path(n) if isinstance(self.target, SequencePattern) else self.target)

    def close(self) -> None:
        """Finish the output. Image sequences have nothing pending: every frame is already final."""

    def abort(self) -> None:
        """Give up after an error: drop anything not yet final, and the folders made for it if empty."""
        self.close()
        remove_empty_folders(self.created_folders)

    def is_complete(self, n: int) -> bool:
        """True when frame n's file exists, decodes fully and has this sink's channels (for --resume)."""
        return images.is_readable(self.path_for(n), tuple(self._channel_names()), tuple(self.layers))

    @property
    def stores_working(self) -> bool:
        """True where the colour written is the working encoding (PNG, ProRes) or none at all (alpha):
        `write` then takes the working foreground as it is and needs no native colour."""
        return self.kind in ("png", "prores", "alpha") and not self.layers

    def write(self, n: int, rgb_native: np.ndarray | None, alpha: np.ndarray, layers: dict | None = None, *,
              working: np.ndarray | None = None) -> None:
        """`working`: the same foreground in the working space (HxWx3 float32 0..1), where the caller has
        it; sinks that `stores_working` write it instead of converting `rgb_native` back, which may then
        be None."""
        if self.kind == "alpha":
            self._write_alpha(n, _check_alpha(alpha))
            return
        if rgb_native is None and not (self.stores_working and working is not None):
            raise ValueError(f"{self.kind} sink needs the native foreground (rgb_native)")
        if self.kind == "png":
            rgb, alpha = _check_frame(working if working is not None else rgb_native, alpha)
            self._write_png(n, rgb if working is not None else self.converter.to_working(rgb), alpha)
            return
        rgb, alpha = _check_frame(rgb_native, alpha)
        self._write_exr(n, rgb, alpha, dict(layers or {}))

    def _write_png(self, n: int, working: np.ndarray, alpha: np.ndarray) -> None:
        # Quantised here, straight into the file's integer type, and stored straight (unpremultiplied).
        import cv2

        bits = 16 if self.bit_depth == 16 else 8
        pixels = cv2.merge([quantize(working, bits), quantize(alpha, bits)])
        images.write_png(self.path_for(n), pixels, int(self.compression))

    def _write_alpha(self, n: int, alpha: np.ndarray) -> None:
        suffix = Path(self.path_for(n)).suffix.lower()
        if suffix == ".exr" and self.compression == "zip":
            images.write_exr(self.path_for(n), alpha.astype(np.float16)[:, :, None], ["A"], _exr_text())
        elif suffix == ".exr":
            images.write_image(self.path_for(n), alpha.astype(np.float16), ["A"], oiio.HALF, alpha_channel=0,
                               attributes={"compression": self.compression, "Software": "Howard"})
        elif suffix == ".png":
            images.write_png(self.path_for(n), quantize(alpha, 16), int(self.compression), srgb=False)
        else:
            images.write_image(self.path_for(n), quantize(alpha, 16), ["Y"], oiio.UINT16)

    def _channel_names(self) -> list[str]:
        if self.kind == "alpha":
            return ["A"] if str(self.path_for(0)).lower().endswith(".exr") else ["Y"]
        # Extra layers are checked by name prefix in is_complete: their width is known only at write().
        return ["R", "G", "B", "A"]

    def _write_exr(self, n: int, rgb: np.ndarray, alpha: np.ndarray, layers: dict) -> None:
        if "fg" in self.layers:
            layers.setdefault("fg", rgb)  # the straight foreground is what we were given
        names = ["R", "G", "B", "A"]
        planes = []
        for name in self.layers:
            if name not in layers:
                raise ValueError(f"EXR sink was opened with layer {name!r} but write() did not get it")
            data = np.asarray(layers[name], dtype=np.float32)
            if data.ndim == 2:
                data = data[:, :, None]
            if data.shape[:2] != rgb.shape[:2] or data.shape[2] not in (1, 3):
                raise ValueError(f"layer {name!r} has shape {data.shape}; expected {rgb.shape[:2]} x 1 or 3")
            suffixes = ("R", "G", "B") if data.shape[2] == 3 else ("Y",)
            planes.append(data)
            names += [f"{name}.{s}" for s in suffixes]
        pixels = pack_half(rgb, alpha, planes)
        # OIIO's interop names for our two fast-path spaces, so OIIO-based tools recognise them.
        interop = {LINEAR: "lin_rec709_scene", SRGB: "srgb_rec709_scene"}.get(self.converter.name)
        if self.compression == "zip" and interop is not None:
            # The default, laid out by Howard itself at a third of OpenImageIO's CPU time, with the
            # header attributes OpenImageIO writes for the same image (colorInteropID is how it
            # stores oiio:ColorSpace, capDate its DateTime).
            images.write_exr(self.path_for(n), pixels, names, _exr_text(colorInteropID=interop))
            return
        attributes = {"compression": self.compression, "oiio:ColorSpace": interop or self.converter.name,
                      "Software": "Howard"}
        images.write_image(self.path_for(n), pixels, names, oiio.HALF, alpha_channel=3, attributes=attributes)


class ProResSink(FrameSink):
    """ProRes 4444 movie; frames must arrive in increasing order and are appended as they come.

    The movie appears under its final name only at `close()`; `abort()` (or leaving the
    `with` block on an error) deletes the partial temp file. Resume is impossible: a
    movie cannot be appended to after it is finalised.
    """

    supports_resume = False

    def __init__(self, path: Path, converter: ColorConverter, fps: Fraction):
        super().__init__("prores", path, converter, (), 10)
        from howard_core.io.movie import ProResWriter

        self._writer = ProResWriter(path, fps)
        self._last: int | None = None

    def is_complete(self, n: int) -> bool:
        raise HowardError(
            f"{self.target}: ProRes output cannot be resumed (a movie is written in one go); "
            f"drop --resume, or write an EXR/PNG sequence to resume it"
        )

    def write(self, n: int, rgb_native: np.ndarray | None, alpha: np.ndarray, layers: dict | None = None, *,
              working: np.ndarray | None = None) -> None:
        rgb, alpha = _check_frame(working if working is not None else rgb_native, alpha)
        with self._lock:
            if self._last is not None and n <= self._last:
                raise ValueError(f"ProRes frames must be written in increasing order; got {n} after {self._last}")
            self._writer.write(np.dstack([rgb if working is not None else self.converter.to_working(rgb), alpha]))
            self._last = n

    def close(self) -> None:
        with self._lock:
            self._writer.finish()

    def abort(self) -> None:
        with self._lock:
            self._writer.abort()
        remove_empty_folders(self.created_folders)




def pack_half(rgb: np.ndarray, alpha: np.ndarray, planes=()) -> np.ndarray:
    """HxWx3 straight colour, HxW alpha and HxWxC float32 `planes` -> one HxWx(4 + sum C) float16
    frame: colour premultiplied by alpha, then alpha, then each plane as it is.

    OpenImageIO's own float -> half conversion costs more than compressing the file, and NumPy's
    took 35-50 ms per HD RGBA frame here; OpenCV's multiply into half floats does the premultiply
    and the conversion in one pass, in 12-13 ms. The float32 product is rounded to the nearest half
    as NumPy rounds it, and values past the half range become inf, as with any half-float writer.
    """
    import cv2

    h, w = alpha.shape
    values = cv2.merge([np.ascontiguousarray(rgb), alpha, *(np.ascontiguousarray(p) for p in planes)])
    ones = np.ones((h, w), np.float32)
    weights = cv2.merge([alpha, alpha, alpha] + [ones] * (values.shape[2] - 3))
    return cv2.multiply(values, weights, dtype=cv2.CV_16F).reshape(h, w, values.shape[2])


def _exr_text(**more: str) -> dict[str, str]:
    """The string attributes of an EXR Howard lays out itself, as OpenImageIO would write them
    (its DateTime is stored as capDate)."""
    return {"Software": "Howard", **more, "capDate": time.strftime("%Y:%m:%d %H:%M:%S")}


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """0..1 float data -> unsigned 8- or 16-bit codes, clipped and rounded to nearest, ties to even, as
    OpenImageIO's own float conversion rounds.

    Finite float32 images (H x W or H x W x C, C <= 4) take one OpenCV pass: its scaled conversion
    rounds the same float32 product to nearest-even and saturates to the code range, which is the
    clip (4-5 ms per HD RGB frame, against 15-17 ms for NumPy's clip, scale, round and cast). It
    would send +inf to 0, so anything else goes the NumPy way (where NaN, which has no code, is 0)."""
    top = 255 if bits == 8 else 65535
    x = np.asarray(x)
    if (x.dtype == np.float32 and x.flags.c_contiguous and (x.ndim == 2 or x.ndim == 3 and x.shape[2] <= 4)
            and np.isfinite(x).all()):
        import cv2

        return cv2.addWeighted(x, float(top), x, 0.0, 0.0, dtype=cv2.CV_8U if bits == 8 else cv2.CV_16U)
    scaled = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0, dtype=np.float32)
    scaled *= np.float32(top)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8 if bits == 8 else np.uint16)


def _check_alpha(alpha) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if alpha.ndim != 2:
        raise ValueError(f"expected alpha HxW, got {alpha.shape}")
    # Alpha is data in 0..1; a network can overshoot slightly and premultiplying by that would brighten edges.
    return np.clip(alpha, 0.0, 1.0)


def _check_frame(rgb, alpha) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb, dtype=np.float32)
    alpha = _check_alpha(alpha)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"expected rgb HxWx3 and alpha HxW, got {rgb.shape} and {alpha.shape}")
    return rgb, alpha


def open_sink(
    spec: str | os.PathLike,
    kind: str,
    like: FrameSource | None = None,
    layers=(),
    colorspace: str | None = None,
    ocio_config: str | None = None,
    bit_depth: int | None = None,
    fps: Fraction | float | None = None,
    tag: str | None = None,
    compression: str | None = None,
) -> FrameSink:
    """Open an output of `kind` (exr, png, alpha, prores) at `spec` (pattern, file name or folder).

    `like`: the plate; supplies name, padding, colour space and fps. `layers`: extra EXR
    layers (exr only). `colorspace`: the space of the `rgb_native` given to `write`
    (default `like.colorspace`, else by the output's file type). `bit_depth`: 8 or 16
    (png only). `fps`: ProRes frame rate (default the plate movie's, else 24). `tag`: the
    suffix a name derived from the plate gets (default by kind, e.g. `plate_matte.####.exr`).
    `compression`: EXR codec, one of `EXR_COMPRESSIONS` (default zip), or for PNG outputs the zlib
    level "0".."9" (default `PNG_DEFAULT_LEVEL`; 9 is smallest and slowest).
    The output folder is created and checked for writability here.
    """
    if kind not in KINDS:
        raise HowardError(f"output kind {kind!r} is not known; use one of {', '.join(KINDS)}")
    if layers and kind != "exr":
        raise HowardError(f"extra layers ({', '.join(layers)}) need an EXR output; use the exr output kind")
    if bit_depth is not None and (kind != "png" or bit_depth not in (8, 16)):
        raise HowardError(f"bit depth {bit_depth} is not available for {kind} output; only png takes 8 or 16")
    if compression is not None:
        compression = str(compression)
    if compression is not None and compression not in EXR_COMPRESSIONS + PNG_LEVELS:
        raise HowardError(f"EXR compression {compression!r} is not known; use one of {', '.join(EXR_COMPRESSIONS)} "
                          f"(or for PNG output a deflate level 0-9)")
    target = _resolve_target(Path(os.fspath(spec)), kind, like, tag)
    where = target.display if isinstance(target, SequencePattern) else str(target)
    is_png = where.lower().endswith(".png")
    if compression in EXR_COMPRESSIONS and not where.lower().endswith(".exr"):
        raise HowardError(f"{where}: EXR compression {compression} applies to EXR output only; drop it or "
                          f"write an .exr output")
    if compression in PNG_LEVELS and not is_png:
        raise HowardError(f"{where}: compression level {compression} applies to PNG output only; EXR takes a "
                          f"codec name ({', '.join(EXR_COMPRESSIONS)})")
    folder = target.folder if isinstance(target, SequencePattern) else target.parent
    created = missing_folders(folder)
    ensure_writable_dir(folder)
    try:
        sink = _make_sink(kind, target, like, layers, colorspace, ocio_config, bit_depth, compression, fps, is_png)
    except BaseException:
        remove_empty_folders(created)
        raise
    sink.created_folders = created
    return sink


def _make_sink(kind, target, like, layers, colorspace, ocio_config, bit_depth, compression, fps, is_png):
    """The sink `open_sink` describes, its folder already made."""
    sample = Path(target.path(like.frame_numbers[0] if like else 0) if isinstance(target, SequencePattern) else target)
    if like is not None and sample.resolve() == Path(like.path_for(like.frame_numbers[0])).resolve():
        raise HowardError(f"{sample}: output would overwrite the input plate; choose another output name or folder")

    if colorspace is not None:
        converter = make_converter(colorspace, ocio_config)
    elif like is not None:
        converter = like.converter
    else:
        converter = ColorConverter(default_colorspace(sample))

    if kind == "prores":
        rate = Fraction(fps) if fps else (like.fps if like is not None and like.fps else DEFAULT_FPS)
        return ProResSink(target, converter, rate)
    default = str(PNG_DEFAULT_LEVEL) if is_png else "zip"
    return FrameSink(kind, target, converter, layers, bit_depth or (8 if kind == "png" else 16), compression or default)


def _resolve_target(spec: Path, kind: str, like: FrameSource | None, tag: str | None) -> SequencePattern | Path:
    exts = _EXTS[kind]
    is_folder = spec.is_dir() or str(spec).endswith(("/", os.sep)) or not spec.suffix
    if is_folder:
        if like is None:
            raise HowardError(
                f"{spec}: is a folder; give an output file name such as {spec / ('matte.####' + exts[0])}"
            )
        return _derive_from(like, spec, kind, tag or _TAGS[kind])

    if spec.suffix.lower() not in exts:
        raise HowardError(f"{spec}: a {kind} output needs a {' or '.join(exts)} file name")
    if kind == "prores":
        if SequencePattern.parse(spec) is not None:
            raise HowardError(f"{spec}: a ProRes output is one movie file; drop the frame number token")
        return spec
    pattern = SequencePattern.parse(spec)
    if pattern is not None:
        return pattern
    if like is not None and like.is_still:
        return spec
    padding = like.pattern.padding if like is not None and like.pattern is not None else DEFAULT_PADDING
    return SequencePattern(spec.parent, spec.stem + ".", spec.suffix, padding)


def _derive_from(like: FrameSource, folder: Path, kind: str, tag: str) -> SequencePattern | Path:
    if kind == "alpha":
        ext = ".exr" if like.path.suffix.lower() == ".exr" else ".png"
    else:
        ext = _EXTS[kind][0]
    if like.pattern is not None:
        prefix = like.pattern.prefix
        sep = prefix[-1] if prefix and prefix[-1] in "._-" else ""
        stem = prefix[: len(prefix) - len(sep)] or "frame"
        if kind == "prores":
            return folder / f"{stem}_{tag}{ext}"
        return SequencePattern(folder, f"{stem}_{tag}{sep or '.'}", ext, like.pattern.padding)
    stem = like.path.stem
    if kind == "prores" or like.is_still:
        return folder / f"{stem}_{tag}{ext}"
    return SequencePattern(folder, f"{stem}_{tag}.", ext, DEFAULT_PADDING)

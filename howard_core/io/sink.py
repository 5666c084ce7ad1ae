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
  the original BGMv2 workflow wrote; 8-bit by default, `bit_depth=16` on request.
* `alpha`: single-channel alpha per frame. `.exr` -> half float channel `A`;
  `.png`/`.tif` -> 16-bit grey.
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
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from howard_core.errors import HowardError
from howard_core.io import images
from howard_core.io.atomic import ensure_writable_dir
from howard_core.io.color import LINEAR, SRGB, ColorConverter, default_colorspace, make_converter
from howard_core.io.frames import SequencePattern
from howard_core.io.source import FrameSource

KINDS = ("exr", "png", "alpha", "prores")
# OpenEXR's codecs. Lossless: none, rle, zips, zip, piz (and pxr24 for half data). Lossy: b44/b44a on every
# channel, alpha included; dwaa/dwab on colour channels only (alpha stays lossless).
EXR_COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")
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
        self.kind = kind
        self.target = target
        self.converter = converter
        self.layers = list(layers)
        self.bit_depth = bit_depth
        self.compression = compression
        self._lock = threading.Lock()

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
        """Give up after an error: drop anything not yet final."""
        self.close()

    def is_complete(self, n: int) -> bool:
        """True when frame n's file exists, decodes fully and has this sink's channels (for --resume)."""
        return images.is_readable(self.path_for(n), tuple(self._channel_names()), tuple(self.layers))

    def write(self, n: int, rgb_native: np.ndarray, alpha: np.ndarray, layers: dict | None = None) -> None:
        rgb, alpha = _check_frame(rgb_native, alpha)
        layers = dict(layers or {})
        if self.kind == "exr":
            self._write_exr(n, rgb, alpha, layers)
        elif self.kind == "png":
            rgba = np.dstack([self.converter.to_working(rgb), alpha])
            pixel_type = oiio.UINT16 if self.bit_depth == 16 else oiio.UINT8
            # Straight alpha: tell OIIO so it stores the colour as given instead of un-premultiplying it.
            straight = {"oiio:UnassociatedAlpha": 1}
            images.write_image(
                self.path_for(n), rgba, ["R", "G", "B", "A"], pixel_type, alpha_channel=3, attributes=straight
            )
        else:  # alpha
            is_exr = Path(self.path_for(n)).suffix.lower() == ".exr"
            pixel_type = oiio.HALF if is_exr else oiio.UINT16
            images.write_image(
                self.path_for(n), alpha, self._channel_names(), pixel_type, alpha_channel=0 if is_exr else -1,
                attributes={"compression": self.compression} if is_exr else None,
            )

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
        # The half-float frame is filled here, channel group by group: OpenImageIO's own float ->
        # half conversion costs more than compressing the file. Values past the half range become
        # inf, as with any half-float writer.
        pixels = np.empty((*rgb.shape[:2], len(names)), np.float16)
        with np.errstate(over="ignore"):
            np.multiply(rgb, alpha[:, :, None], out=pixels[:, :, :3], casting="unsafe")
            pixels[:, :, 3] = alpha
            k = 4
            for data in planes:
                pixels[:, :, k:k + data.shape[2]] = data
                k += data.shape[2]
        # OIIO's interop names for our two fast-path spaces, so OIIO-based tools recognise them.
        space = {LINEAR: "lin_rec709_scene", SRGB: "srgb_rec709_scene"}.get(self.converter.name, self.converter.name)
        attributes = {"compression": self.compression, "oiio:ColorSpace": space, "Software": "Howard"}
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

    def write(self, n: int, rgb_native: np.ndarray, alpha: np.ndarray, layers: dict | None = None) -> None:
        rgb, alpha = _check_frame(rgb_native, alpha)
        with self._lock:
            if self._last is not None and n <= self._last:
                raise ValueError(f"ProRes frames must be written in increasing order; got {n} after {self._last}")
            self._writer.write(np.dstack([self.converter.to_working(rgb), alpha]))
            self._last = n

    def close(self) -> None:
        with self._lock:
            self._writer.finish()

    def abort(self) -> None:
        with self._lock:
            self._writer.abort()


def _check_frame(rgb, alpha) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb, dtype=np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"expected rgb HxWx3 and alpha HxW, got {rgb.shape} and {alpha.shape}")
    # Alpha is data in 0..1; a network can overshoot slightly and premultiplying by that would brighten edges.
    return rgb, np.clip(alpha, 0.0, 1.0)


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
    `compression`: EXR codec, one of `EXR_COMPRESSIONS` (default zip; EXR outputs only).
    The output folder is created and checked for writability here.
    """
    if kind not in KINDS:
        raise HowardError(f"output kind {kind!r} is not known; use one of {', '.join(KINDS)}")
    if layers and kind != "exr":
        raise HowardError(f"extra layers ({', '.join(layers)}) need an EXR output; use the exr output kind")
    if bit_depth is not None and (kind != "png" or bit_depth not in (8, 16)):
        raise HowardError(f"bit depth {bit_depth} is not available for {kind} output; only png takes 8 or 16")
    if compression is not None and compression not in EXR_COMPRESSIONS:
        raise HowardError(f"EXR compression {compression!r} is not known; use one of {', '.join(EXR_COMPRESSIONS)}")
    target = _resolve_target(Path(os.fspath(spec)), kind, like, tag)
    where = target.display if isinstance(target, SequencePattern) else str(target)
    if compression is not None and not where.lower().endswith(".exr"):
        raise HowardError(f"{where}: EXR compression {compression} applies to EXR output only; drop it or "
                          f"write an .exr output")
    folder = target.folder if isinstance(target, SequencePattern) else target.parent
    ensure_writable_dir(folder)

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
    return FrameSink(kind, target, converter, layers, bit_depth or (8 if kind == "png" else 16), compression or "zip")


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

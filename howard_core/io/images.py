"""Still-image reading and writing through OpenImageIO (EXR, DPX, TIFF, PNG, JPEG, ...); PNG
frames are encoded by OpenCV (`encode_png`, where the zlib strategy can be chosen).

Which channels are "the RGB" of a file, first rule that applies:

1. `layer` given: channels `<layer>.R/.G/.B` (any case, `red/green/blue` accepted too), or
   the R,G,B of the EXR part named `layer`; `layer="rgba"` means the plain R,G,B.
2. Plain `R,G,B` channels (first part that has them; PNG/JPEG/TIFF/DPX always do).
3. The first layer, in file order, that has `.R/.G/.B` channels (e.g. `beauty.R ...`).
4. A one- or two-channel image (grey, grey+alpha) has its grey (`Y`, else the first
   channel) copied to R, G and B.
5. Otherwise the first three channels of the first part, whatever their names.

Pixels outside an EXR's data window are black; the image is the display window.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from howard_core.errors import HowardError
from howard_core.io.atomic import atomic_write, write_bytes_atomic

_COLOR_NAMES = (("r", "red"), ("g", "green"), ("b", "blue"))
_ERROR_CHARS = 160  # of OpenImageIO's text in one of our error lines


@dataclass(frozen=True)
class ImageInfo:
    """Header facts about one image file: display size, and where its RGB lives."""

    width: int
    height: int
    subimage: int
    channels: tuple[int, ...]  # 3 channel indices into the subimage; (i, i, i) for grey
    channel_names: tuple[str, ...]


def _open(path: Path):
    if not path.is_file():
        raise HowardError(f"{path}: file not found; check the path")
    inp = oiio.ImageInput.open(str(path), _raw_alpha_config())
    if inp is None:
        raise HowardError(
            f"{path}: not a readable image ({_error_text(oiio.geterror)}); "
            f"the file may be corrupt or half-copied, re-render or re-copy it"
        )
    return inp


def _png_cut_short(path: Path) -> bool:
    """True for a PNG file without its closing IEND chunk near the end: a half-copied or half-written file.

    Caught before decoding because libpng would also print its own "libpng error" line on stderr, beside
    Howard's one-line message. Any other file, or one that cannot be read here, gives False."""
    if path.suffix.lower() != ".png":
        return False
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 1024))
            return b"IEND" not in f.read()  # some writers put bytes after IEND; decoders ignore them
    except OSError:
        return False


def _raw_alpha_config():
    # OIIO premultiplies straight-alpha files (PNG, some TIFF) on read by default; we want the
    # colour as stored, since alpha is dropped and the plate's colour is what the network sees.
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)
    return config


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split()) or "unknown error"


def _error_text(geterror) -> str:
    """The pending OpenImageIO error (`geterror`: oiio.geterror or a reader's) as one line of at most
    _ERROR_CHARS, which also clears it. A garbled header's bytes can appear in the text; they are not
    always UTF-8, and the binding's own decoding then raises, so those bytes are shown escaped (\\xff)."""
    try:
        text = _one_line(geterror())
    except UnicodeDecodeError as exc:
        text = _one_line(bytes(exc.object).decode("utf-8", "backslashreplace"))
    # OpenEXR repeats itself for each failed attempt; the first part names the fault.
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _subimage_specs(inp) -> list:
    specs = []
    while inp.seek_subimage(len(specs), 0):
        specs.append(inp.spec())
    inp.seek_subimage(0, 0)
    _error_text(inp.geterror)  # probing one past the last subimage leaves an error flag; it is not one
    return specs


def _find_rgb(names: list[str], layer: str) -> tuple[int, ...] | None:
    """Indices of `layer`.R/G/B (layer "" = unprefixed) in `names`, or None."""
    lookup = {}
    for i, name in enumerate(names):
        base, _, chan = name.rpartition(".")
        lookup.setdefault((base.lower(), chan.lower()), i)
    picked = []
    for aliases in _COLOR_NAMES:
        idx = next((lookup[(layer.lower(), a)] for a in aliases if (layer.lower(), a) in lookup), None)
        if idx is None:
            return None
        picked.append(idx)
    return tuple(picked)


def _layers(names: list[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        base = name.rpartition(".")[0]
        if base and base not in seen:
            seen.append(base)
    return seen


def pick_rgb(path: Path, specs: list, layer: str | None = None) -> tuple[int, tuple[int, ...]]:
    """(subimage, 3 channel indices) of the colour in a file, following the module rules."""
    all_names = [list(s.channelnames) for s in specs]
    if layer:
        want = "" if layer.lower() in ("rgb", "rgba") else layer
        for sub, names in enumerate(all_names):
            found = _find_rgb(names, want)
            if found is None and str(specs[sub].getattribute("name") or "").lower() == layer.lower():
                found = _find_rgb(names, "")
            if found is not None:
                return sub, found
        layers = sorted({lay for names in all_names for lay in _layers(names)})
        raise HowardError(
            f"{path}: no layer {layer!r} with R,G,B channels; layers found: {', '.join(layers) or 'none'}"
        )
    for sub, names in enumerate(all_names):
        found = _find_rgb(names, "")
        if found is not None:
            return sub, found
    for sub, names in enumerate(all_names):
        for lay in _layers(names):
            found = _find_rgb(names, lay)
            if found is not None:
                return sub, found
    first = all_names[0]
    if len(first) <= 2:
        grey = first.index("Y") if "Y" in first else 0
        return 0, (grey, grey, grey)
    return 0, (0, 1, 2)


def _names_at(specs, subimage: int, channels: tuple[int, ...]) -> tuple[str, ...] | None:
    if subimage >= len(specs) or max(channels) >= specs[subimage].nchannels:
        return None
    return tuple(specs[subimage].channelnames[c] for c in channels)


def probe(path: str | os.PathLike, layer: str | None = None) -> ImageInfo:
    """Read only the header of `path`; HowardError when it is missing or not an image."""
    path = Path(path)
    inp = _open(path)
    try:
        specs = _subimage_specs(inp)
        sub, chans = pick_rgb(path, specs, layer)
        spec = specs[sub]
        return ImageInfo(spec.full_width, spec.full_height, sub, chans, _names_at(specs, sub, chans))
    finally:
        inp.close()


# Integer sample types -> the factor taking them to 0..1, as OpenImageIO's float conversion scales them.
_INTEGER_SCALES = {"uint8": np.float32(1 / 255), "uint16": np.float32(1 / 65535)}


def read_rgb(path: str | os.PathLike, info: ImageInfo, layer: str | None = None) -> np.ndarray:
    """The colour of `path` as HxWx3 float32 in the file's own encoding (no clipping).

    Integer formats come back scaled to 0..1; float formats keep their values, so linear
    highlights above 1 survive. `info` comes from `probe(sibling, layer)` on this or a
    sibling frame; a file laid out differently is re-probed with the same `layer`.
    """
    path = Path(path)
    inp = _open(path)
    try:
        specs = _subimage_specs(inp)
        if _names_at(specs, info.subimage, info.channels) != info.channel_names:
            # A sibling frame with a different channel layout: re-pick for this file.
            info = probe(path, layer)
        spec = specs[info.subimage]
        lo, hi = min(info.channels), max(info.channels) + 1
        if _png_cut_short(path):
            raise HowardError(f"{path}: the PNG is cut short (no end chunk); the file may be truncated or "
                              f"half-copied, re-render or re-copy it")
        stored = str(spec.format)
        scale = _INTEGER_SCALES.get(stored) if not spec.channelformats else None
        # 8- and 16-bit files are read as stored and scaled here: OpenImageIO's own conversion to float
        # took 25 ms of an HD PNG's 83, NumPy's 2, to the same values (OpenImageIO multiplies by 1/max too).
        pixels = inp.read_image(info.subimage, 0, lo, hi, stored if scale is not None else "float")
        if pixels is None or inp.has_error:
            raise HowardError(
                f"{path}: pixel data cannot be read ({_error_text(inp.geterror)}); the file may be truncated "
                f"or corrupt, re-render or re-copy it"
            )
    finally:
        inp.close()
    if scale is not None:
        pixels = np.multiply(pixels, scale, dtype=np.float32)
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, hi - lo)
    picked = [c - lo for c in info.channels]
    # The usual R, G, B in order are the pixels as read: a copy would be a fresh 25 MB per HD frame.
    rgb = pixels if picked == list(range(hi - lo)) else pixels[:, :, picked]
    return _to_display_window(rgb, spec)


def _to_display_window(data: np.ndarray, spec) -> np.ndarray:
    """Place a data window into the display window (EXR overscan is cropped, gaps are black)."""
    if (spec.x, spec.y, spec.width, spec.height) == (
        spec.full_x,
        spec.full_y,
        spec.full_width,
        spec.full_height,
    ):
        return np.ascontiguousarray(data)
    out = np.zeros((spec.full_height, spec.full_width, data.shape[2]), np.float32)
    x0, y0 = max(spec.x, spec.full_x), max(spec.y, spec.full_y)
    x1 = min(spec.x + spec.width, spec.full_x + spec.full_width)
    y1 = min(spec.y + spec.height, spec.full_y + spec.full_height)
    if x1 > x0 and y1 > y0:
        out[y0 - spec.full_y : y1 - spec.full_y, x0 - spec.full_x : x1 - spec.full_x] = data[
            y0 - spec.y : y1 - spec.y, x0 - spec.x : x1 - spec.x
        ]
    return out


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    channel_names: list[str],
    pixel_type,
    alpha_channel: int = -1,
    attributes: dict | None = None,
) -> None:
    """Write HxWxC float32 (or float16) `pixels` atomically to `path` (format from the extension).

    `pixel_type` is an OIIO type (`oiio.HALF`, `oiio.UINT8`, `oiio.UINT16`); integer
    types take 0..1 floats and are clamped and rounded by OIIO. float16 pixels for a HALF
    file, and uint8/uint16 codes for a UINT8/UINT16 file, are stored as they are, with no conversion.
    Pixels are written as given: pass `{"oiio:UnassociatedAlpha": 1}` for straight alpha in
    formats (PNG) that OIIO would otherwise un-premultiply on write.
    """
    pixels = np.asarray(pixels)
    keep = pixels.dtype in (np.float16, np.uint8, np.uint16)  # already in a file type: no conversion
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype if keep else np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    if c != len(channel_names):
        raise ValueError(f"{c} channels of pixels but {len(channel_names)} names")
    spec = oiio.ImageSpec(w, h, c, pixel_type)
    spec.channelnames = tuple(channel_names)
    spec.alpha_channel = alpha_channel
    for key, value in (attributes or {}).items():
        spec.attribute(key, value)
    with atomic_write(path) as tmp:
        out = oiio.ImageOutput.create(str(tmp))
        if out is None:
            raise HowardError(f"{path}: no OpenImageIO writer for this extension ({_error_text(oiio.geterror)})")
        try:
            if not out.open(str(tmp), spec) or not out.write_image(pixels):
                raise HowardError(f"{path}: cannot write image ({_error_text(out.geterror)}); check free disk space")
        finally:
            out.close()


_EXR_MAGIC, _EXR_VERSION = 20000630, 2  # version 2, single-part scanline file
_EXR_ZIP, _EXR_HALF = 3, 1  # the compression and pixel type codes of the OpenEXR file layout
_EXR_ZIP_ROWS = 16  # scanlines per ZIP block


def _exr_attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def encode_exr(pixels: np.ndarray, channel_names, text: dict[str, str] | None = None) -> bytes:
    """Scanline OpenEXR file bytes of HxWxC float16 `pixels` named `channel_names`, ZIP-compressed
    (lossless), stored as they are; `text`: string attributes (e.g. Software, colorInteropID).

    Laid out here, as the OpenEXR file layout defines it, for the same reason as `encode_png`:
    OpenImageIO (through OpenEXR) took 60-65 ms of CPU per HD RGBA half frame of a typical matte
    and about 205 ms on grain, against 21 and 54 ms here, for files 1-9% larger. Each block of 16
    scanlines holds, row by row, each channel's row in name order. ZIP splits a block's bytes into
    the even-indexed then the odd-indexed ones, replaces each byte by its difference from the one
    before (plus 128, modulo 256) and deflates the result as a zlib stream (ISA-L, level 1);
    a block that would not shrink is stored raw, as OpenEXR itself does.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.float16 or pixels.ndim != 3:
        raise ValueError(f"EXR pixels must be HxWxC float16, not {pixels.dtype} {pixels.shape}")
    h, w, c = pixels.shape
    names = list(channel_names)
    if len(names) != c or not h or not w:
        raise ValueError(f"{c} channels of {w}x{h} pixels but {len(names)} names")
    from isal import isal_zlib

    order = sorted(range(c), key=lambda i: names[i].encode())  # the file keeps channels sorted by name
    planar = np.empty((h, c, w), "<f2")
    for k, i in enumerate(order):
        planar[:, k] = pixels[:, :, i]
    rows = planar.view(np.uint8).reshape(h, c * w * 2)
    blocks = []
    for y0 in range(0, h, _EXR_ZIP_ROWS):
        raw = rows[y0:y0 + _EXR_ZIP_ROWS].reshape(-1)
        split = np.concatenate([raw[0::2], raw[1::2]])
        delta = np.empty_like(split)
        delta[0] = split[0]
        np.subtract(split[1:], split[:-1], out=delta[1:])
        delta[1:] += 128
        packed = isal_zlib.compress(delta, 1)
        blocks.append((y0, packed if len(packed) < raw.size else raw.tobytes()))
    channels = b"".join(names[i].encode() + b"\0" + struct.pack("<iB3xii", _EXR_HALF, 0, 1, 1) for i in order)
    window = struct.pack("<4i", 0, 0, w - 1, h - 1)
    attributes = {
        "channels": ("chlist", channels + b"\0"),
        "compression": ("compression", bytes([_EXR_ZIP])),
        "dataWindow": ("box2i", window),
        "displayWindow": ("box2i", window),
        "lineOrder": ("lineOrder", b"\0"),  # increasing y
        "pixelAspectRatio": ("float", struct.pack("<f", 1.0)),
        "screenWindowCenter": ("v2f", struct.pack("<2f", 0.0, 0.0)),
        "screenWindowWidth": ("float", struct.pack("<f", 1.0)),
        **{name: ("string", value.encode()) for name, value in (text or {}).items()},
    }
    header = struct.pack("<2i", _EXR_MAGIC, _EXR_VERSION) + b"".join(
        _exr_attribute(name, *attributes[name]) for name in sorted(attributes)) + b"\0"
    offsets, at = [], len(header) + 8 * len(blocks)
    for _, data in blocks:
        offsets.append(at)
        at += 8 + len(data)
    return b"".join([header, struct.pack(f"<{len(offsets)}Q", *offsets),
                     *(struct.pack("<2i", y0, len(data)) + data for y0, data in blocks)])


def write_exr(path: str | os.PathLike, pixels: np.ndarray, channel_names, text: dict[str, str] | None = None) -> None:
    """Write `pixels` to the EXR file `path` atomically (see `encode_exr` for what it takes)."""
    _write_file(path, encode_exr(pixels, channel_names, text))


# sRGB (perceptual intent) with the gAMA and cHRM values the PNG specification pairs with it, for
# decoders that do not know the sRGB chunk: the colour chunks OpenImageIO writes itself.
_PNG_SRGB_CHUNKS = (
    (b"sRGB", bytes([0])),
    (b"gAMA", struct.pack(">I", 45455)),
    (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, level: int = 1, srgb: bool = True) -> bytes:
    """PNG file bytes of HxW or HxWxC (C = 1, 3 or 4: grey, RGB, RGBA) uint8 or uint16 `pixels`,
    stored as they are (straight alpha). `level`: 0..9, as zlib's (0 stores, 9 is smallest and
    slowest). `srgb`: tag the colour as sRGB (sRGB, gAMA and cHRM chunks); leave it off for data
    such as an alpha matte.

    Encoded here, as the PNG specification lays the file out, because both halves of an encoder
    can then be chosen for speed. Each row gets the PNG filter that leaves it the smallest bytes
    (libpng's heuristic): Sub or Up at levels 1-3, any of the five from 4. Levels 1-3 deflate with
    ISA-L's levels 1-3; 4-9 with zlib's, and keep the smallest of that and the faster levels' files.
    At level 1 an HD RGBA frame took 29-44 ms, against 88-122 ms through OpenCV's libpng with zlib's
    run-length matching (OpenImageIO's: about 150 ms); the file was 34% smaller on a clean frame and
    3% larger on a grainy one.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3) or (
            pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)):
        raise ValueError(f"PNG pixels must be HxW[xC] uint8/uint16, C in 1, 3, 4; not {pixels.dtype} {pixels.shape}")
    level = int(level)
    if not 0 <= level <= 9:
        raise ValueError(f"PNG level must be 0..9, not {level}")
    h, w = pixels.shape[:2]
    if not h or not w:
        raise ValueError(f"a PNG needs at least one pixel; got {w}x{h}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    # PNG stores 16-bit samples big-endian; filters work on bytes, `bpp` bytes to the pixel.
    samples = np.ascontiguousarray(pixels, dtype=">u2" if pixels.dtype == np.uint16 else np.uint8)
    bpp = channels * samples.dtype.itemsize
    rows = samples.view(np.uint8).reshape(h, w * bpp)
    if level == 0:
        stream = zlib.compress(_filter_rows(rows, bpp, 0), 0)
    else:
        from isal import isal_zlib

        fast = _filter_rows(rows, bpp, 1)
        if level <= 3:
            stream = isal_zlib.compress(fast, level)
        else:
            # Neither the heuristic's pick among all five filters nor zlib's deeper search always
            # deflates best (ISA-L's Huffman coding can win on grain): the slow levels keep the
            # smallest of their own streams and the fast levels', so no higher level is larger.
            streams = [isal_zlib.compress(fast, fast_level) for fast_level in (1, 2, 3)]
            streams += [zlib.compress(_filter_rows(rows, bpp, level), level), zlib.compress(fast, level)]
            stream = min(streams, key=len)
    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # grey, RGB, RGBA
    header = struct.pack(">IIBBBBB", w, h, 8 * samples.dtype.itemsize, colour_type, 0, 0, 0)
    chunks = [(b"IHDR", header), *(_PNG_SRGB_CHUNKS if srgb else ()), (b"IDAT", stream), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def _filter_rows(rows: np.ndarray, bpp: int, level: int) -> np.ndarray:
    """(H, 1 + stride) uint8: each row of `rows` (H, stride) after its filter-type byte, filtered.

    Every filter is taken over the raw bytes, so all rows are filtered at once; the decoder undoes
    them row by row. Arithmetic is modulo 256, as the specification defines it."""
    h, stride = rows.shape
    kinds = (0,) if level == 0 else (1, 2) if level <= 3 else (0, 1, 2, 3, 4)
    candidates = np.empty((len(kinds), h, 1 + stride), np.uint8)
    costs = np.empty((len(kinds), h), np.uint32)
    for k, kind in enumerate(kinds):
        out = candidates[k, :, 1:]
        candidates[k, :, 0] = kind
        if kind == 0:  # None
            out[:] = rows
        elif kind == 1:  # Sub: the byte one pixel to the left
            out[:, :bpp] = rows[:, :bpp]
            np.subtract(rows[:, bpp:], rows[:, :-bpp], out=out[:, bpp:])
        elif kind == 2:  # Up: the byte above
            out[0] = rows[0]
            np.subtract(rows[1:], rows[:-1], out=out[1:])
        else:  # Average (3) and Paeth (4) of left a, above b and above-left c
            a = np.zeros((h, stride), np.int16)
            a[:, bpp:] = rows[:, :-bpp]
            b = np.zeros((h, stride), np.int16)
            b[1:] = rows[:-1]
            if kind == 3:
                prediction = (a + b) >> 1
            else:
                c = np.zeros((h, stride), np.int16)
                c[1:, bpp:] = rows[:-1, :-bpp]
                estimate = a + b - c
                pa, pb, pc = np.abs(estimate - a), np.abs(estimate - b), np.abs(estimate - c)
                prediction = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            np.subtract(rows, prediction.astype(np.uint8), out=out)
        if len(kinds) > 1:
            # The bytes read as signed, summed in magnitude: small where the filter predicted well.
            # (The absolute value of int8 -128 stays -128, which read unsigned is the 128 it should be.)
            costs[k] = np.abs(out.view(np.int8)).view(np.uint8).sum(axis=1, dtype=np.uint32)
    if len(kinds) == 1:
        return candidates[0]
    return candidates[np.argmin(costs, axis=0), np.arange(h)]


def write_png(path: str | os.PathLike, pixels: np.ndarray, level: int = 1, srgb: bool = True) -> None:
    """Write `pixels` to the PNG file `path` atomically (see `encode_png` for what it takes)."""
    _write_file(path, encode_png(pixels, level, srgb))


def _write_file(path: str | os.PathLike, data: bytes) -> None:
    """An encoded image written atomically; a failure is one clear error naming the file."""
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise HowardError(f"{path}: cannot write image ({exc.strerror or exc}); check free disk space and "
                          f"permissions") from None


def is_readable(path: str | os.PathLike, required_channels: tuple[str, ...] = (), required_layers=()) -> bool:
    """True when `path` opens, all its pixels decode, and it has `required_channels` and layers."""
    path = Path(path)
    if not path.is_file() or _png_cut_short(path):
        return False
    inp = oiio.ImageInput.open(str(path), _raw_alpha_config())
    if inp is None:
        _error_text(oiio.geterror)  # clear the pending error so it does not leak into a later message
        return False
    try:
        spec = inp.spec()
        names = list(spec.channelnames)
        if any(name not in names for name in required_channels):
            return False
        if any(not any(n.startswith(layer + ".") for n in names) for layer in required_layers):
            return False
        pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
        ok = pixels is not None and not inp.has_error
        _error_text(inp.geterror)
        return ok
    finally:
        inp.close()

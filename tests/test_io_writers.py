"""The PNG writers (quantised in numpy as OpenImageIO would, at the deflate level asked for, losslessly) and
Howard's own ZIP EXR writer (read back bit for bit through OpenImageIO's OpenEXR)."""

import json
import os

import numpy as np
import OpenImageIO as oiio
import pytest
from test_io_sinks import read_back
from test_pipeline import constant_model

from howard_core.errors import HowardError
from howard_core.io import images, open_sink
from howard_core.io.sink import PNG_DEFAULT_LEVEL, quantize
from howard_core.synth import make_shot

W, H = 160, 96


def _read(path):
    """(integer codes HxWxC as stored, spec): the sinks tests' float read-back, scaled back to codes."""
    pixels, _, spec = read_back(path)
    top = 255 if spec.format == oiio.UINT8 else 65535
    return np.rint(pixels * top).astype(np.uint8 if top == 255 else np.uint16), spec


def _frame():
    made = make_shot(width=W, height=H, plate_frames=1, clean_frames=1, seed=5)
    return made.plate[0], made.alpha[0]


def test_quantize_rounds_like_openimageio(tmp_path):
    rng = np.random.default_rng(1)
    # Random values (out of range too) and every exact code; exact ties between two codes are left out.
    x = np.concatenate([rng.random(4000, np.float32) * 1.2 - 0.1, np.arange(256, dtype=np.float32) / 255,
                        np.arange(65536, dtype=np.float32)[::7] / 65535]).reshape(1, -1)
    for bits, fmt in ((8, oiio.UINT8), (16, oiio.UINT16)):
        path = str(tmp_path / f"q{bits}.png")
        out = oiio.ImageOutput.create(path)
        out.open(path, oiio.ImageSpec(x.shape[1], 1, 1, fmt))
        out.write_image(x[:, :, None])  # OIIO's own float conversion
        out.close()
        np.testing.assert_array_equal(quantize(x, bits), _read(path)[0][:, :, 0])


@pytest.mark.parametrize("bits", [8, 16])
def test_quantize_rounds_ties_to_even_and_clips_in_every_layout(bits):
    top = 2 ** bits - 1
    codes = np.arange(top + 1, dtype=np.float64)
    ties = ((codes + 0.5) / top).astype(np.float32)  # halfway between two codes (as near as float32 gets)
    near = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, 1), (codes / top).astype(np.float32),
                           np.float32([-0.3, -0.0, 1.0, 1.7, 3e38, -3e38])])
    near = near[: near.size // 12 * 12]
    # The rounding the docstring promises: the float32 product, nearest with ties to even, clipped.
    expected = np.rint(np.clip(near, 0, 1) * np.float32(top)).astype(np.uint8 if bits == 8 else np.uint16)
    for shape in ((1, -1), (-1, 3), (-1, 4), (-1, 2, 3)):
        x = near.reshape(shape)
        np.testing.assert_array_equal(quantize(x, bits), expected.reshape(shape), err_msg=str(shape))
        np.testing.assert_array_equal(quantize(x.astype(np.float64), bits), expected.reshape(shape))
        np.testing.assert_array_equal(quantize(x.T, bits), expected.reshape(shape).T)  # not contiguous
    odd = np.float32([[np.inf, -np.inf, np.nan, 0.5]])
    assert quantize(odd, bits).tolist() == [[top, 0, 0, expected[near == 0.5][0]]]  # inf clips; NaN is 0


@pytest.mark.parametrize("bits", [8, 16])
def test_png_levels_change_the_size_never_the_pixels(tmp_path, bits):
    rgb, alpha = _frame()
    decoded, sizes = {}, {}
    for level in ("0", "1", "6", "9"):
        with open_sink(tmp_path / level / "m.####.png", "png", colorspace="srgb", bit_depth=bits,
                       compression=level) as sink:
            sink.write(1, rgb, alpha)
        path = tmp_path / level / "m.0001.png"
        decoded[level], spec = _read(path)
        sizes[level] = os.path.getsize(path)
        assert spec.nchannels == 4 and spec.format == (oiio.UINT8 if bits == 8 else oiio.UINT16)
    expected = quantize(np.dstack([rgb, alpha]), bits)
    for level, pixels in decoded.items():
        np.testing.assert_array_equal(pixels, expected, err_msg=f"level {level}")
    assert sizes["0"] > sizes["1"] >= sizes["9"]


def test_png_default_level_and_working_colour_give_the_same_file(tmp_path):
    rgb, alpha = _frame()
    with open_sink(tmp_path / "a" / "m.####.png", "png", colorspace="srgb") as sink:
        assert sink.compression == str(PNG_DEFAULT_LEVEL) and sink.stores_working
        sink.write(1, rgb, alpha)
    with open_sink(tmp_path / "b" / "m.####.png", "png", colorspace="linear") as sink:
        sink.write(1, None, alpha, working=rgb)  # a linear plate's display rendering, already made
    assert (tmp_path / "a" / "m.0001.png").read_bytes() == (tmp_path / "b" / "m.0001.png").read_bytes()
    with open_sink(tmp_path / "c" / "m.####.exr", "exr", colorspace="linear") as sink:
        assert not sink.stores_working
        with pytest.raises(ValueError, match="needs the native foreground"):
            sink.write(1, None, alpha, working=rgb)


def test_alpha_png_is_16_bit_at_the_level_asked(tmp_path):
    _, alpha = _frame()
    for level in ("0", "9"):
        with open_sink(tmp_path / level / "a.####.png", "alpha", compression=level) as sink:
            sink.write(3, None, alpha)
        pixels, spec = _read(tmp_path / level / "a.0003.png")
        assert spec.format == oiio.UINT16 and spec.nchannels == 1
        np.testing.assert_array_equal(pixels[:, :, 0], quantize(alpha, 16))
    assert os.path.getsize(tmp_path / "0" / "a.0003.png") > os.path.getsize(tmp_path / "9" / "a.0003.png")


def test_levels_and_codecs_are_refused_on_the_wrong_format(tmp_path):
    with pytest.raises(HowardError, match=r"m\.####\.exr: compression level 3 applies to PNG output only"):
        open_sink(tmp_path / "m.####.exr", "exr", compression="3")
    with pytest.raises(HowardError, match="compression '10' is not known"):
        open_sink(tmp_path / "m.####.png", "png", compression="10")
    assert not any(tmp_path.glob("*.png")) and not any(tmp_path.glob("*.exr"))


def test_png_level_reaches_the_files_and_the_report(tmp_path):
    from howard_core.cli import main
    from howard_core.model import save_checkpoint

    made = make_shot(width=W, height=H, plate_frames=2, clean_frames=1, seed=6)
    with open_sink(tmp_path / "plate" / "plate.####.png", "png", colorspace="srgb") as sink:
        for k in range(2):
            sink.write(1001 + k, made.plate[k], np.ones((H, W), np.float32))
    with open_sink(tmp_path / "clean.png", "png", colorspace="srgb") as sink:
        sink.write(0, made.clean[0], np.ones((H, W), np.float32))
    model = save_checkpoint(tmp_path / "const.pt", constant_model(0.5))
    out = tmp_path / "out"
    assert main(["matte", str(tmp_path / "plate" / "plate.####.png"), str(tmp_path / "clean.0000.png"), "-o",
                 str(out / "m.####.png"), "--model", str(model), "--frames", "1002", "--compression", "9",
                 "--progress", "none"]) == 0
    report = json.loads(next(out.glob("howard_report.*.json")).read_text())
    assert report["settings"]["compression"] == "9"
    assert _read(next(out.glob("m.*.png")))[1].nchannels == 4


def _chunks(path):
    """The PNG chunk types of a file, in order, and the data of the sRGB chunk (or None)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, srgb, i = [], None, 8
    while i < len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        kinds.append(kind.decode())
        if kind == b"sRGB":
            srgb = data[i + 8:i + 8 + length]
        i += 12 + length
    return kinds, srgb


def test_colour_pngs_are_tagged_srgb_and_alpha_pngs_are_not(tmp_path):
    rgb, alpha = _frame()
    with open_sink(tmp_path / "m.####.png", "png", colorspace="srgb") as sink:
        sink.write(1, rgb, alpha)
    with open_sink(tmp_path / "a.####.png", "alpha", colorspace="srgb") as sink:
        sink.write(1, None, alpha)
    kinds, srgb = _chunks(tmp_path / "m.0001.png")
    assert kinds[0] == "IHDR" and kinds[-1] == "IEND" and {"sRGB", "gAMA", "cHRM"} <= set(kinds)
    assert kinds.index("sRGB") < kinds.index("IDAT") and srgb == b"\x00"
    kinds, srgb = _chunks(tmp_path / "a.0001.png")
    assert srgb is None and "gAMA" not in kinds
    # OpenImageIO reads the added chunks as sRGB and the alpha back bit for bit.
    inp = oiio.ImageInput.open(str(tmp_path / "m.0001.png"))
    assert "srgb" in inp.spec().getattribute("oiio:ColorSpace").lower()
    inp.close()
    codes, spec = _read(tmp_path / "a.0001.png")
    assert spec.nchannels == 1 and spec.format == oiio.UINT16
    np.testing.assert_array_equal(codes[:, :, 0], quantize(alpha, 16))


def test_a_png_that_cannot_be_written_is_one_clear_error_and_no_file(tmp_path):
    from howard_core.io import images

    folder = tmp_path / "taken"
    folder.write_text("a file where the output folder should be")
    with pytest.raises(HowardError, match=r"taken.*cannot write image"):
        images.write_png(folder / "m.0001.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8/uint16"):
        images.encode_png(np.zeros((4, 4, 4), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("shape, dtype", [((33, 17, 4), np.uint8), ((33, 17, 3), np.uint16), ((33, 17), np.uint8),
                                          ((33, 17, 1), np.uint16), ((1, 1, 4), np.uint8)])
def test_every_level_decodes_bit_for_bit_in_libpng_and_openimageio(tmp_path, shape, dtype):
    import cv2

    rng = np.random.default_rng(7)
    top = 256 if dtype == np.uint8 else 65536
    # Noise beside smooth ramps and flat runs, so every filter type wins some rows.
    pixels = rng.integers(0, top, shape).astype(dtype)
    ramp = (np.arange(shape[1]) * (top // 64) % top).astype(dtype)
    pixels[: shape[0] // 3] = ramp.reshape(1, -1, *([1] * (len(shape) - 2)))
    pixels[shape[0] // 3: shape[0] // 2] = top // 2
    for level in range(10):
        path = tmp_path / f"p{level}.png"
        path.write_bytes(images.encode_png(pixels, level, srgb=False))
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # libpng, with its CRC and zlib checks
        if back.ndim == 3:
            back = cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA if back.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(back.reshape(pixels.shape), pixels, err_msg=f"level {level}")
        read, spec = _read(path)
        assert spec.format == (oiio.UINT8 if dtype == np.uint8 else oiio.UINT16)
        np.testing.assert_array_equal(read.reshape(pixels.shape), pixels, err_msg=f"level {level}")
    with pytest.raises(ValueError, match="level must be 0..9"):
        images.encode_png(pixels, 10)
    with pytest.raises(ValueError, match="at least one pixel"):
        images.encode_png(np.zeros((0, 4, 3), np.uint8))


def _unfilter(filtered: np.ndarray, bpp: int) -> np.ndarray:
    """The PNG specification's reconstruction, byte by byte: an independent check of the encoder's filters."""
    h, stride = filtered.shape[0], filtered.shape[1] - 1
    out = np.zeros((h, stride), np.int64)
    for y in range(h):
        kind = filtered[y, 0]
        for x in range(stride):
            a = out[y, x - bpp] if x >= bpp else 0
            b = out[y - 1, x] if y else 0
            c = out[y - 1, x - bpp] if x >= bpp and y else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[y, x] = (int(filtered[y, x + 1]) + (0, a, b, (a + b) // 2, paeth)[kind]) % 256
    return out.astype(np.uint8)


def test_all_five_png_filters_reconstruct_the_rows():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (24, 13, 4)).astype(np.uint8)
    pixels[:8] = (np.arange(13) * 19 % 256).astype(np.uint8)[None, :, None]  # horizontal ramps: Sub
    pixels[8:12] = pixels[7]  # repeated rows: Up
    pixels[12:16] = np.cumsum(rng.integers(0, 9, (4, 13, 4)), axis=0).astype(np.uint8) + 100  # drifts
    rows = pixels.reshape(24, -1)
    for level, kinds in ((0, {0}), (1, {1, 2}), (9, {0, 1, 2, 3, 4})):
        filtered = images._filter_rows(rows, 4, level)
        assert set(filtered[:, 0].tolist()) <= kinds
        np.testing.assert_array_equal(_unfilter(filtered, 4), rows, err_msg=f"level {level}")
    used = set(images._filter_rows(rows, 4, 9)[:, 0].tolist())
    assert {1, 2} <= used and len(used) >= 3  # the heuristic picks per row, not one filter for all



def _exr_header(path):
    """{attribute name: (type, raw value)} of a single-part EXR file, parsed as the file layout defines it."""
    import struct

    data = open(path, "rb").read()
    assert struct.unpack("<2i", data[:8]) == (20000630, 2)
    at, attributes = 8, {}
    while data[at]:
        end = data.index(b"\0", at)
        name = data[at:end].decode()
        at = end + 1
        end = data.index(b"\0", at)
        kind = data[at:end].decode()
        (size,) = struct.unpack("<i", data[end + 1:end + 5])
        attributes[name] = (kind, data[end + 5:end + 5 + size])
        at = end + 5 + size
    return attributes


def _read_exr(path):
    inp = oiio.ImageInput.open(str(path))
    try:
        spec = inp.spec()
        return np.asarray(inp.read_image(0, 0, 0, spec.nchannels, "half")), spec
    finally:
        inp.close()


@pytest.mark.parametrize("shape", [(96, 160), (17, 33), (1, 1), (16, 5), (33, 2)])
def test_own_exr_reads_back_bit_for_bit(tmp_path, shape):
    h, w = shape
    rng = np.random.default_rng(h * w)
    plate, alpha = _frame()
    smooth = np.dstack([plate[:h, :w] * alpha[:h, :w, None], alpha[:h, :w]])
    # A matte-like frame (mostly black where alpha is 0) compresses; noise does not and is stored raw.
    for pixels in (smooth.astype(np.float16), rng.normal(0, 30, (h, w, 4)).astype(np.float16)):
        pixels.view(np.uint16)[0, 0, 0] = 0x7C00  # +inf, and NaN, survive as they are
        pixels.view(np.uint16)[-1, -1, 1] = 0x7E00
        images.write_exr(tmp_path / "own.exr", pixels, ["R", "G", "B", "A"], {"Software": "Howard"})
        back, spec = _read_exr(tmp_path / "own.exr")
        assert (spec.width, spec.height, tuple(spec.channelnames)) == (w, h, ("R", "G", "B", "A"))
        assert spec.get_string_attribute("compression") == "zip"
        assert np.array_equal(back.view(np.uint16), pixels.view(np.uint16))


def test_own_exr_layers_and_header_are_what_openimageio_writes(tmp_path):
    plate, alpha = _frame()
    rng = np.random.default_rng(4)
    rgb, err = plate * alpha[..., None], rng.random((H, W), np.float32) * 0.2
    names = ["R", "G", "B", "A", "fg.R", "fg.G", "fg.B", "err.Y"]
    pixels = np.dstack([rgb, alpha, plate, err]).astype(np.float16)
    images.write_exr(tmp_path / "own.exr", pixels, names,
                     {"Software": "Howard", "colorInteropID": "lin_rec709_scene", "capDate": "2026:12:02 10:00:00"})
    images.write_image(tmp_path / "oiio.exr", pixels, names, oiio.HALF, alpha_channel=3,
                       attributes={"compression": "zip", "oiio:ColorSpace": "lin_rec709_scene", "Software": "Howard"})
    own, theirs = _exr_header(tmp_path / "own.exr"), _exr_header(tmp_path / "oiio.exr")
    assert sorted(own) == sorted(theirs)  # the same attributes, in the same (sorted) order
    for name in theirs:
        if name != "capDate":
            assert own[name] == theirs[name], name
    back_own, spec_own = _read_exr(tmp_path / "own.exr")
    back_theirs, spec_theirs = _read_exr(tmp_path / "oiio.exr")
    assert tuple(spec_own.channelnames) == tuple(spec_theirs.channelnames)
    assert spec_own.get_string_attribute("oiio:ColorSpace") == "lin_rec709_scene"
    assert np.array_equal(back_own.view(np.uint16), back_theirs.view(np.uint16))


def test_exr_sink_writes_zip_itself_and_other_codecs_through_openimageio(tmp_path):
    plate, alpha = _frame()
    for codec in ("zip", "piz"):
        sink = open_sink(tmp_path / codec / "m.####.exr", "exr", compression=codec, layers=["err"])
        sink.write(7, plate, alpha, {"err": alpha * 0.5})
        sink.close()
        back, spec = _read_exr(tmp_path / codec / "m.0007.exr")
        assert spec.get_string_attribute("compression") == codec
        assert spec.get_string_attribute("Software") == "Howard" and spec.get_string_attribute("oiio:ColorSpace")
        assert sink.is_complete(7)
        last_back = back
    # Both writers store the same half-float pixels.
    zip_back, _ = _read_exr(tmp_path / "zip" / "m.0007.exr")
    assert np.array_equal(zip_back.view(np.uint16), last_back.view(np.uint16))


def test_alpha_exr_holds_the_matte_as_half_floats(tmp_path):
    _, alpha = _frame()
    for codec in ("zip", "piz"):  # Howard's own writer, then OpenImageIO's
        sink = open_sink(tmp_path / codec / "a.####.exr", "alpha", compression=codec)
        sink.write(3, None, alpha)
        back, spec = _read_exr(tmp_path / codec / "a.0003.exr")
        assert tuple(spec.channelnames) == ("A",) and spec.get_string_attribute("compression") == codec
        assert np.array_equal(back[:, :, 0].view(np.uint16), alpha.astype(np.float16).view(np.uint16))
        assert sink.is_complete(3)

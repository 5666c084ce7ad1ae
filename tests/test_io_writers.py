"""The PNG writers: quantised in numpy as OpenImageIO would, at the zlib level asked for, losslessly."""

import json
import os

import numpy as np
import OpenImageIO as oiio
import pytest
from test_io_sinks import read_back
from test_pipeline import constant_model

from howard_core.errors import HowardError
from howard_core.io import open_sink
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

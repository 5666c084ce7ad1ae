"""Image sources: formats, channel picking, sequences, stills, folders, missing frames."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import OpenImageIO as oiio
import pytest

from howard_core.errors import HowardError
from howard_core.io import open_source, resize_to
from howard_core.io.color import srgb_encode

W, H = 37, 23  # odd on purpose


@pytest.fixture(autouse=True)
def _no_ocio_env(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


def write(path, pixels, names=None, fmt=oiio.FLOAT, **attrs):
    """Write a test image with OpenImageIO directly (independent of the code under test)."""
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    spec = oiio.ImageSpec(w, h, c, fmt)
    if names:
        spec.channelnames = tuple(names)
    for key, value in attrs.items():
        setattr(spec, key, value)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(pixels), out.geterror()
    out.close()
    return path


def ramp(c=3, h=H, w=W, seed=0, top=1.0):
    return (np.random.default_rng(seed).random((h, w, c)) * top).astype(np.float32)


def half(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def write_sequence(folder, frames, ext="exr", name="plate", pad=4, fmt=oiio.HALF):
    """Frame n's pixels all equal n / 10000, so a read proves which file was read."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        write(folder / f"{name}.{n:0{pad}d}.{ext}", np.full((H, W, 3), n / 10000, np.float32), fmt=fmt)


@pytest.mark.parametrize("fmt", [oiio.HALF, oiio.FLOAT])
def test_exr_with_arbitrary_channel_names(tmp_path, fmt):
    data = ramp(seed=1, top=3.0)  # linear highlights above 1
    path = write(tmp_path / "odd.exr", data, names=["u", "v", "w"], fmt=fmt)
    with open_source(path) as src:
        assert (src.width, src.height, src.is_still, src.colorspace) == (W, H, True, "linear")
        native = src.read_native(0)
        assert native.shape == (H, W, 3) and native.dtype == np.float32
        expected = half(data) if fmt == oiio.HALF else data
        np.testing.assert_allclose(native, expected, rtol=1e-6)
        assert native.max() > 1.0  # read_native does not clip
        np.testing.assert_allclose(src.read(0), srgb_encode(expected), atol=1e-6)


def test_exr_lowercase_and_spelled_out_channel_names(tmp_path):
    data = ramp(c=4, seed=2)
    path = write(tmp_path / "a.exr", data, names=["a", "blue", "green", "red"])
    np.testing.assert_allclose(open_source(path).read_native(0), data[:, :, [3, 2, 1]], rtol=1e-6)


def test_multilayer_exr_picks_plain_rgb_then_first_layer_then_named(tmp_path):
    data = ramp(c=7, seed=3)
    plain = write(tmp_path / "plain.exr", data, names=["diffuse.R", "diffuse.G", "diffuse.B", "R", "G", "B", "Z"])
    np.testing.assert_allclose(open_source(plain).read_native(0), data[:, :, 3:6], rtol=1e-6)
    np.testing.assert_allclose(open_source(plain, layer="diffuse").read_native(0), data[:, :, 0:3], rtol=1e-6)

    names = ["depth.Z", "beauty.R", "beauty.G", "beauty.B", "spec.R", "spec.G", "spec.B"]
    layered = write(tmp_path / "layered.exr", data, names=names)
    np.testing.assert_allclose(open_source(layered).read_native(0), data[:, :, 1:4], rtol=1e-6)
    np.testing.assert_allclose(open_source(layered, layer="spec").read_native(0), data[:, :, 4:7], rtol=1e-6)
    with pytest.raises(HowardError) as err:
        open_source(layered, layer="nope")
    assert "'nope'" in str(err.value) and "beauty" in str(err.value) and str(layered) in str(err.value)


def test_sequence_whose_channel_layout_changes_keeps_the_layer(tmp_path):
    # Same channel count, but frame 2 has fg one channel later (OpenEXR keeps channels sorted).
    a, b = ramp(c=4, seed=13), ramp(c=4, seed=14)
    write(tmp_path / "r.0001.exr", a, names=["A", "fg.R", "fg.G", "fg.B"])
    write(tmp_path / "r.0002.exr", np.dstack([b, b[:, :, :1]]), names=["A", "B", "fg.R", "fg.G", "fg.B"])
    src = open_source(tmp_path / "r.####.exr", layer="fg")
    np.testing.assert_allclose(src.read_native(1), a[:, :, 1:], rtol=1e-6)
    np.testing.assert_allclose(src.read_native(2), np.dstack([b, b[:, :, :1]])[:, :, 2:], rtol=1e-6)


def test_multipart_exr_layer_by_part_name(tmp_path):
    path = tmp_path / "parts.exr"
    a, b = ramp(seed=4), ramp(seed=5, top=2.0)
    s1 = oiio.ImageSpec(W, H, 3, oiio.FLOAT)
    s1.channelnames = ("diffuse.R", "diffuse.G", "diffuse.B")
    s1.attribute("name", "diffuse")
    s2 = oiio.ImageSpec(W, H, 3, oiio.FLOAT)
    s2.channelnames = ("R", "G", "B")
    s2.attribute("name", "beauty")
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), [s1, s2])
    out.write_image(a)
    assert out.open(str(path), s2, "AppendSubimage")
    out.write_image(b)
    out.close()
    # Plain R,G,B wins even in the second part; the other part is reachable by name.
    np.testing.assert_allclose(open_source(path).read_native(0), b, rtol=1e-6)
    np.testing.assert_allclose(open_source(path, layer="diffuse").read_native(0), a, rtol=1e-6)
    np.testing.assert_allclose(open_source(path, layer="beauty").read_native(0), b, rtol=1e-6)


def test_exr_data_window_is_placed_in_display_window(tmp_path):
    data = ramp(h=10, w=12, seed=6) + 0.5
    path = write(tmp_path / "dw.exr", data, x=20, y=5, full_x=0, full_y=0, full_width=W, full_height=H)
    src = open_source(path)
    assert (src.width, src.height) == (W, H)
    img = src.read_native(0)
    np.testing.assert_allclose(img[5:15, 20:32], data, rtol=1e-6)
    assert img[:5].max() == 0 and img[:, :20].max() == 0 and img[15:].max() == 0


def test_linear_exr_round_trip_through_working_space(tmp_path):
    data = ramp(seed=7, top=2.0)
    src = open_source(write(tmp_path / "lin.exr", data, fmt=oiio.HALF))
    native = src.read_native(0)
    working = src.read(0)
    assert working.min() >= 0 and working.max() <= 1 and native.max() > 1.5
    back = src.from_working(working)
    inside = native <= 1.0
    np.testing.assert_allclose(back[inside], native[inside], atol=1e-4)
    np.testing.assert_allclose(back[~inside], 1.0, atol=1e-6)  # highlights clip in the working space
    np.testing.assert_allclose(src.to_working(native), working, atol=1e-6)


@pytest.mark.parametrize("fmt, scale", [(oiio.UINT8, 255), (oiio.UINT16, 65535)])
def test_png_8_and_16_bit(tmp_path, fmt, scale):
    codes = np.random.default_rng(8).integers(0, scale + 1, (H, W, 3))
    path = write(tmp_path / "p.png", codes / scale, fmt=fmt)
    src = open_source(path)
    assert src.colorspace == "srgb"
    np.testing.assert_allclose(src.read_native(0), codes / scale, atol=0.5 / scale)
    np.testing.assert_array_equal(src.read(0), src.read_native(0))  # sRGB in = working space


@pytest.mark.parametrize("ext, fmt, bits", [("png", oiio.UINT8, 8), ("png", oiio.UINT16, 16), ("tif", oiio.UINT8, 8),
                                             ("tif", oiio.UINT16, 16), ("dpx", oiio.UINT16, 10), ("jpg", oiio.UINT8, 8),
                                             ("tga", oiio.UINT8, 8), ("png", oiio.UINT8, 4)])
def test_integer_files_read_as_openimageio_converts_them(tmp_path, ext, fmt, bits):
    # Every code value the file can hold (a random sample of 16-bit ones), compared with OpenImageIO's
    # own float conversion of the same file: Howard reads integers as stored and scales them itself.
    if ext not in oiio.get_string_attribute("extension_list"):
        pytest.skip(f"OIIO built without {ext}")
    top = 255 if fmt == oiio.UINT8 else 65535
    codes = np.arange(top + 1) if top == 255 else np.random.default_rng(5).integers(0, top + 1, 3 * 64 * 96)
    codes = np.resize(codes, 3 * 64 * 96).reshape(64, 96, 3)
    path = tmp_path / f"i.{ext}"
    spec = oiio.ImageSpec(96, 64, 3, fmt)
    if bits not in (8, 16):
        spec.attribute("oiio:BitsPerSample", bits)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(codes.astype(np.uint8 if fmt == oiio.UINT8 else np.uint16))
    out.close()
    inp = oiio.ImageInput.open(str(path))
    want = inp.read_image(0, 0, 0, 3, "float")
    inp.close()
    got = open_source(path).read_native(0)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 10


def test_grey_png_becomes_rgb(tmp_path):
    grey = ramp(c=1, seed=9)
    src = open_source(write(tmp_path / "g.png", grey, fmt=oiio.UINT16))
    img = src.read_native(0)
    assert img.shape == (H, W, 3)
    np.testing.assert_allclose(img[:, :, 0], grey[:, :, 0], atol=1e-4)
    np.testing.assert_array_equal(img[:, :, 0], img[:, :, 2])


def test_jpeg(tmp_path):
    flat = np.zeros((H, W, 3), np.float32)
    flat[:, :, 0], flat[:, :, 1], flat[:, :, 2] = 0.8, 0.4, 0.1
    img = open_source(write(tmp_path / "j.jpg", flat, fmt=oiio.UINT8)).read_native(0)
    np.testing.assert_allclose(img, flat, atol=4 / 255)  # lossy, but a flat colour survives


def test_tiff_16_bit_with_alpha_drops_alpha(tmp_path):
    data = ramp(c=4, seed=10)
    img = open_source(write(tmp_path / "t.tif", data, fmt=oiio.UINT16)).read_native(0)
    np.testing.assert_allclose(img, data[:, :, :3], atol=1e-4)


def test_straight_alpha_png_keeps_its_stored_colour(tmp_path):
    rgba = np.dstack([np.full((H, W, 3), 0.8, np.float32), np.full((H, W), 0.5, np.float32)])
    spec = oiio.ImageSpec(W, H, 4, oiio.UINT8)
    spec.attribute("oiio:UnassociatedAlpha", 1)
    out = oiio.ImageOutput.create(str(tmp_path / "s.png"))
    out.open(str(tmp_path / "s.png"), spec)
    out.write_image(rgba)
    out.close()
    # OIIO would premultiply to 0.4 by default; the plate's colour is what is stored.
    np.testing.assert_allclose(open_source(tmp_path / "s.png").read_native(0), 0.8, atol=0.5 / 255)


@pytest.mark.skipif("dpx" not in oiio.get_string_attribute("format_list"), reason="OIIO built without DPX")
def test_dpx(tmp_path):
    data = ramp(seed=11)
    src = open_source(write(tmp_path / "d.dpx", data, fmt=oiio.UINT16))
    assert src.colorspace == "srgb"
    np.testing.assert_allclose(src.read_native(0), data, atol=1e-4)


def test_colorspace_override_via_ocio(tmp_path):
    data = np.full((H, W, 3), 0.18, np.float32)
    src = open_source(write(tmp_path / "aces.exr", data), colorspace="ACEScg")
    assert src.colorspace == "ACEScg"
    np.testing.assert_allclose(src.read(0), srgb_encode(data), atol=1e-3)
    assert open_source(write(tmp_path / "lin.png", data, fmt=oiio.UINT16), colorspace="linear").colorspace == "linear"


@pytest.mark.parametrize("pattern", ["plate.####.exr", "plate.%04d.exr", "plate.@@@@.exr"])
def test_sequence_patterns_and_discovery(tmp_path, pattern):
    write_sequence(tmp_path, [1001, 1002, 1003, 1004])
    with open_source(tmp_path / pattern) as src:
        assert src.kind == "sequence" and not src.is_still
        assert src.frame_numbers == [1001, 1002, 1003, 1004] and len(src) == 4
        assert src.path_for(1003) == str(tmp_path / "plate.1003.exr")
        assert src.pattern.padding == 4
        for n in (1003, 1001):
            np.testing.assert_allclose(src.read_native(n), half(n / 10000), rtol=1e-6)


def test_unpadded_sequence(tmp_path):
    write_sequence(tmp_path, [8, 9, 10, 11], pad=1, ext="png", fmt=oiio.UINT16)
    src = open_source(tmp_path / "plate.%d.png")
    assert src.frame_numbers == [8, 9, 10, 11]
    np.testing.assert_allclose(src.read_native(10), 10 / 10000, atol=1e-4)


def test_explicit_frames(tmp_path):
    write_sequence(tmp_path, range(1001, 1011))
    src = open_source(tmp_path / "plate.####.exr", frames=[1002, 1004, 1006])
    assert src.frame_numbers == [1002, 1004, 1006] and src.missing_frames == []
    np.testing.assert_allclose(src.read_native(1006), half(0.1006), rtol=1e-6)


def test_stepped_sequence_is_not_missing_frames(tmp_path):
    write_sequence(tmp_path, [1001, 1003, 1005])
    assert open_source(tmp_path / "plate.####.exr").frame_numbers == [1001, 1003, 1005]


def test_missing_frame_is_an_error_naming_it(tmp_path):
    write_sequence(tmp_path, [1001, 1002, 1004, 1005])
    with pytest.raises(HowardError) as err:
        open_source(tmp_path / "plate.####.exr")
    msg = str(err.value)
    assert str(tmp_path / "plate.1003.exr") in msg and "--missing hold" in msg and "--frames" in msg
    with pytest.raises(HowardError) as err:
        open_source(tmp_path / "plate.####.exr", frames=[1004, 1005, 1006, 1007])
    assert str(tmp_path / "plate.1006.exr") in str(err.value) and "1006-1007" in str(err.value)


def test_missing_hold_repeats_the_previous_frame(tmp_path):
    write_sequence(tmp_path, [1002, 1003, 1006])
    src = open_source(tmp_path / "plate.####.exr", frames=list(range(1000, 1009)), missing="hold")
    assert src.missing_frames == [1000, 1001, 1004, 1005, 1007, 1008]
    held = {n: float(src.read_native(n)[0, 0, 0]) for n in src.frame_numbers}
    expected = {1000: 1002, 1001: 1002, 1002: 1002, 1003: 1003, 1004: 1003, 1005: 1003}
    expected |= {1006: 1006, 1007: 1006, 1008: 1006}
    for n, source_frame in expected.items():
        assert held[n] == pytest.approx(float(half(source_frame / 10000)), rel=1e-6), n


def test_frame_deleted_after_open_is_reported(tmp_path):
    write_sequence(tmp_path, [1, 2, 3])
    src = open_source(tmp_path / "plate.####.exr")
    (tmp_path / "plate.0002.exr").unlink()
    with pytest.raises(HowardError, match="plate.0002.exr"):
        src.read_native(2)


def test_sequence_with_a_frame_of_another_size(tmp_path):
    write_sequence(tmp_path, [1, 2])
    write(tmp_path / "plate.0003.exr", np.zeros((H + 1, W, 3)))
    src = open_source(tmp_path / "plate.####.exr")
    with pytest.raises(HowardError, match="plate.0003.exr"):
        src.read_native(3)


def test_still_answers_every_frame(tmp_path):
    data = ramp(seed=12)
    path = write(tmp_path / "clean.png", data, fmt=oiio.UINT16)
    src = open_source(path, frames=[1001, 1002])
    assert src.is_still and src.frame_numbers == [1001, 1002]
    a, b = src.read_native(1001), src.read_native(99999)
    np.testing.assert_array_equal(a, b)
    a[:] = 0  # callers own what they get back
    np.testing.assert_allclose(src.read_native(5), data, atol=1e-4)
    assert open_source(path).frame_numbers == [0]


def test_one_frame_of_a_sequence_is_a_still(tmp_path):
    write_sequence(tmp_path, [1001, 1002])
    src = open_source(tmp_path / "plate.1002.exr")
    assert src.is_still
    np.testing.assert_allclose(src.read_native(1001), half(0.1002), rtol=1e-6)


def test_folder_with_one_sequence(tmp_path):
    write_sequence(tmp_path / "shot", [9998, 9999, 10000])
    (tmp_path / "shot" / "notes.txt").write_text("hi")
    src = open_source(tmp_path / "shot")
    assert src.frame_numbers == [9998, 9999, 10000]
    np.testing.assert_allclose(src.read_native(10000), half(1.0), rtol=1e-6)
    write_sequence(tmp_path / "shot", [1, 2], name="other")
    with pytest.raises(HowardError, match="2 sequences"):
        open_source(tmp_path / "shot")


def test_plate_and_clean_plate_of_different_sizes(tmp_path):
    clean = write(tmp_path / "clean.png", np.full((H, W, 3), 0.25), fmt=oiio.UINT16)
    write(tmp_path / "plate.0001.png", np.zeros((30, 50, 3)), fmt=oiio.UINT16)
    plate = open_source(tmp_path / "plate.####.png")
    bg = open_source(clean)
    assert (plate.width, plate.height, bg.width, bg.height) == (50, 30, W, H)
    fitted = resize_to(bg.read(1), plate.width, plate.height)
    assert fitted.shape == (30, 50, 3) and fitted.dtype == np.float32
    np.testing.assert_allclose(fitted, 0.25, atol=1e-4)
    assert resize_to(np.zeros((30, 50, 1), np.float32), W, H).shape == (H, W, 1)
    assert resize_to(np.zeros((30, 50), np.float32), W, H).shape == (H, W)


def test_reads_from_worker_threads_match_serial_reads(tmp_path):
    frames = list(range(1, 9))
    write_sequence(tmp_path, frames)
    src = open_source(tmp_path / "plate.####.exr")
    serial = [src.read(n) for n in frames]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(src.read, frames))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)

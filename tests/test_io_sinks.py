"""Output sinks: EXR with layers, PNG, alpha-only, ProRes 4444; naming, atomicity, resume."""

import os
import types

import av
import numpy as np
import OpenImageIO as oiio
import pytest

from howard_core.errors import HowardError
from howard_core.io import images, open_sink, open_source
from howard_core.io.color import srgb_encode

W, H = 37, 23


@pytest.fixture(autouse=True)
def _no_ocio_env(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


def read_back(path):
    """(pixels HxWxC float32, channel names, pixel format) straight from OpenImageIO."""
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)  # the values as stored, no premultiply on read
    inp = oiio.ImageInput.open(str(path), config)
    assert inp is not None, oiio.geterror()
    spec = inp.spec()
    pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
    inp.close()
    return np.asarray(pixels).reshape(spec.height, spec.width, spec.nchannels), list(spec.channelnames), spec


def make_plate(folder, ext="exr", frames=(1001, 1002), fmt=oiio.HALF):
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        spec = oiio.ImageSpec(W, H, 3, fmt)
        out = oiio.ImageOutput.create(str(folder / f"plate.{n:04d}.{ext}"))
        out.open(str(folder / f"plate.{n:04d}.{ext}"), spec)
        out.write_image(np.full((H, W, 3), 0.5, np.float32))
        out.close()
    return open_source(folder / f"plate.####.{ext}")


def frame_data(seed=0, top=2.0):
    rng = np.random.default_rng(seed)
    rgb = (rng.random((H, W, 3)) * top).astype(np.float32)
    alpha = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    return rgb, alpha


def half(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def test_exr_sink_with_layers(tmp_path):
    plate = make_plate(tmp_path / "in")
    rgb, alpha = frame_data()
    err, ref = alpha * 0.25, (alpha > 0.5).astype(np.float32)
    bg = rgb[::-1].copy()
    with open_sink(tmp_path / "out", "exr", like=plate, layers=["fg", "err", "ref", "bg"]) as sink:
        assert sink.path_for(1001) == str(tmp_path / "out" / "plate_matte.1001.exr")
        sink.write(1001, rgb, alpha, {"err": err, "ref": ref, "bg": bg})
    pixels, names, spec = read_back(tmp_path / "out" / "plate_matte.1001.exr")
    assert names[:4] == ["R", "G", "B", "A"] and spec.alpha_channel == 3
    assert set(names) == {"R", "G", "B", "A", "fg.R", "fg.G", "fg.B", "err.Y", "ref.Y", "bg.R", "bg.G", "bg.B"}
    assert spec.format == oiio.HALF and spec.getattribute("compression") == "zip"
    assert spec.getattribute("oiio:ColorSpace") == "lin_rec709_scene"  # the linear plate's space
    ch = {name: pixels[:, :, i] for i, name in enumerate(names)}
    np.testing.assert_allclose(ch["A"], half(alpha), rtol=1e-3)
    for i, c in enumerate("RGB"):
        np.testing.assert_allclose(ch[c], half(rgb[:, :, i] * alpha), rtol=1e-3, atol=1e-4)  # premultiplied
        np.testing.assert_allclose(ch[f"fg.{c}"], half(rgb[:, :, i]), rtol=1e-3)  # straight, > 1 kept
        np.testing.assert_allclose(ch[f"bg.{c}"], half(bg[:, :, i]), rtol=1e-3)
    np.testing.assert_allclose(ch["err.Y"], half(err), rtol=1e-3)
    np.testing.assert_array_equal(ch["ref.Y"], ref)
    assert ch["fg.R"].max() > 1.5  # scene-linear values are not clipped in EXR


def test_exr_sink_alpha_is_clipped_before_premultiplying(tmp_path):
    rgb = np.full((H, W, 3), 0.5, np.float32)
    alpha = np.full((H, W), 1.2, np.float32)
    with open_sink(tmp_path / "m.####.exr", "exr") as sink:
        sink.write(3, rgb, alpha)
    pixels, _, _ = read_back(tmp_path / "m.0003.exr")
    np.testing.assert_allclose(pixels[:, :, 3], 1.0)
    np.testing.assert_allclose(pixels[:, :, 0], 0.5)


@pytest.mark.parametrize("codec", ["piz", "rle", "dwaa", "none"])
def test_exr_compression_is_what_the_file_says_and_alpha_stays_exact(tmp_path, codec):
    rgb, alpha = frame_data(seed=4, top=1.0)
    with open_sink(tmp_path / "m.####.exr", "exr", compression=codec) as sink:
        sink.write(7, rgb, alpha)
    with open_sink(tmp_path / "a.####.exr", "alpha", compression=codec) as sink:
        sink.write(7, rgb, alpha)
    pixels, _, spec = read_back(tmp_path / "m.0007.exr")
    assert spec.getattribute("compression") == codec
    assert read_back(tmp_path / "a.0007.exr")[2].getattribute("compression") == codec
    np.testing.assert_array_equal(pixels[:, :, 3], half(alpha))  # DWA is lossy on colour only
    tolerance = 0.05 if codec == "dwaa" else 1e-3
    np.testing.assert_allclose(pixels[:, :, :3], half(rgb * alpha[:, :, None]), atol=tolerance)


def test_exr_compression_errors_name_the_fix(tmp_path):
    with pytest.raises(HowardError, match="compression 'zip9' is not known; use one of none, rle"):
        open_sink(tmp_path / "x" / "m.####.exr", "exr", compression="zip9")
    with pytest.raises(HowardError, match=r"m\.####\.png: EXR compression piz applies to EXR output only"):
        open_sink(tmp_path / "x" / "m.####.png", "png", compression="piz")
    assert not (tmp_path / "x").exists()  # refused before the output folder is made


def test_exr_sink_missing_layer_is_a_programming_error(tmp_path):
    sink = open_sink(tmp_path / "m.####.exr", "exr", layers=["err"])
    with pytest.raises(ValueError, match="err"):
        sink.write(1, *frame_data())
    assert os.listdir(tmp_path) == []


def test_png_sink_is_straight_8_bit_in_display_encoding(tmp_path):
    plate = make_plate(tmp_path / "in")  # linear EXR plate
    rgb, alpha = frame_data(top=1.0)
    with open_sink(tmp_path / "out", "png", like=plate) as sink:
        sink.write(1002, rgb, alpha)
    path = tmp_path / "out" / "plate_matte.1002.png"
    pixels, names, spec = read_back(path)
    assert names == ["R", "G", "B", "A"] and spec.format == oiio.UINT8
    np.testing.assert_allclose(pixels[:, :, 3], alpha, atol=0.5 / 255 + 1e-6)
    # Straight (not premultiplied), sRGB-encoded from the linear plate space.
    np.testing.assert_allclose(pixels[:, :, :3], srgb_encode(rgb), atol=0.5 / 255 + 1e-6)


def test_png_sink_16_bit_from_srgb_plate(tmp_path):
    plate = make_plate(tmp_path / "in", ext="png", fmt=oiio.UINT16)
    assert plate.colorspace == "srgb"
    rgb, alpha = frame_data(top=1.0)
    with open_sink(tmp_path / "out" / "fg.png", "png", like=plate, bit_depth=16) as sink:
        assert sink.path_for(7) == str(tmp_path / "out" / "fg.0007.png")  # padding from the plate
        sink.write(7, rgb, alpha)
    pixels, _, spec = read_back(tmp_path / "out" / "fg.0007.png")
    assert spec.format == oiio.UINT16
    np.testing.assert_allclose(pixels, np.dstack([rgb, alpha]), atol=0.5 / 65535 + 1e-6)


def test_alpha_sinks(tmp_path):
    plate = make_plate(tmp_path / "in")
    rgb, alpha = frame_data()
    with open_sink(tmp_path / "a", "alpha", like=plate) as sink:  # EXR plate -> EXR alpha
        sink.write(1001, rgb, alpha)
    pixels, names, spec = read_back(tmp_path / "a" / "plate_alpha.1001.exr")
    assert names == ["A"] and spec.format == oiio.HALF
    np.testing.assert_allclose(pixels[:, :, 0], half(alpha))

    for ext in ("png", "tif"):
        with open_sink(tmp_path / "a" / f"matte.%05d.{ext}", "alpha") as sink:
            sink.write(12, rgb, alpha)
            assert sink.is_complete(12) and not sink.is_complete(13)
        pixels, names, spec = read_back(tmp_path / "a" / f"matte.00012.{ext}")
        assert pixels.shape == (H, W, 1) and spec.format == oiio.UINT16
        np.testing.assert_allclose(pixels[:, :, 0], alpha, atol=1 / 65535)


def test_naming_rules(tmp_path):
    plate = make_plate(tmp_path / "in")
    assert open_sink(tmp_path / "o" / "x.@@@.exr", "exr").path_for(5) == str(tmp_path / "o" / "x.005.exr")
    assert open_sink(tmp_path / "o" / "x.exr", "exr").path_for(5) == str(tmp_path / "o" / "x.0005.exr")
    assert open_sink(tmp_path / "o2", "prores", like=plate).path_for(5) == str(tmp_path / "o2" / "plate_matte.mov")
    still = open_source(tmp_path / "in" / "plate.1001.exr")
    assert open_sink(tmp_path / "o3", "png", like=still).path_for(9) == str(tmp_path / "o3" / "plate.1001_matte.png")
    assert (tmp_path / "o3").is_dir()  # missing output folders are created up front
    with pytest.raises(HowardError, match="overwrite the input"):
        open_sink(tmp_path / "in" / "plate.####.exr", "exr", like=plate)
    with pytest.raises(HowardError, match="file name"):
        open_sink(tmp_path / "o", "exr")
    with pytest.raises(HowardError, match=r"\.exr"):
        open_sink(tmp_path / "o" / "x.png", "exr")
    with pytest.raises(HowardError, match="kind"):
        open_sink(tmp_path / "o" / "x.png", "gif")
    with pytest.raises(HowardError, match="EXR"):
        open_sink(tmp_path / "o" / "x.png", "png", layers=["err"])


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(HowardError) as err:
        open_sink(blocker / "renders" / "m.####.exr", "exr")
    assert str(blocker / "renders") in str(err.value) and "\n" not in str(err.value)


def test_a_failure_mid_write_leaves_no_frame(tmp_path, monkeypatch):
    class DyingOutput:
        def __init__(self, path):
            self.path = path

        def open(self, path, spec):
            with open(path, "wb") as f:
                f.write(b"v/1\x01 half a header")
            return True

        def write_image(self, pixels):
            raise OSError("disk full")

        def close(self):
            pass

    fake = types.SimpleNamespace(
        ImageSpec=oiio.ImageSpec,
        HALF=oiio.HALF,
        ImageOutput=types.SimpleNamespace(create=DyingOutput),
        geterror=oiio.geterror,
    )
    monkeypatch.setattr(images, "oiio", fake)
    sink = open_sink(tmp_path / "out" / "m.####.exr", "exr", compression="piz")  # written through OIIO
    with pytest.raises(OSError, match="disk full"):
        sink.write(1, *frame_data())
    assert os.listdir(tmp_path / "out") == []


def test_a_failure_mid_write_of_howards_own_exr_leaves_no_frame(tmp_path, monkeypatch):
    import errno
    import pathlib

    def half_then_full(self, data):
        with open(self, "wb") as f:
            f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    sink = open_sink(tmp_path / "out" / "m.####.exr", "exr")  # zip: Howard's own encoder
    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full)
    with pytest.raises(HowardError, match=r"m\.0001\.exr: cannot write image \(No space left on device\)"):
        sink.write(1, *frame_data())
    assert os.listdir(tmp_path / "out") == []


def test_is_complete_for_resume(tmp_path):
    sink = open_sink(tmp_path / "m.####.exr", "exr", layers=["err"])
    rgb, alpha = frame_data()
    assert not sink.is_complete(1)
    sink.write(1, rgb, alpha, {"err": alpha})
    assert sink.is_complete(1)
    data = (tmp_path / "m.0001.exr").read_bytes()
    (tmp_path / "m.0002.exr").write_bytes(data[: len(data) // 2])  # killed by an older tool
    assert not sink.is_complete(2)
    open_sink(tmp_path / "m.####.exr", "exr").write(3, rgb, alpha)  # no err layer
    assert not sink.is_complete(3)


def read_movie(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt)
        frames = [f.to_ndarray(format="rgba64le").astype(np.float32) / 65535 for f in container.decode(stream)]
    return info, frames


def test_prores_4444_round_trip(tmp_path):
    plate = make_plate(tmp_path / "in", ext="png", fmt=oiio.UINT8)
    rgb, alpha = frame_data(top=1.0)
    target = tmp_path / "out" / "matte.mov"
    with open_sink(target, "prores", like=plate, fps=25) as sink:
        assert not sink.supports_resume
        for n in (1001, 1002, 1003):
            sink.write(n, rgb * (n - 1000) / 3, alpha)
        assert not target.exists()  # only complete movies appear
    assert os.listdir(target.parent) == ["matte.mov"]
    (codec, pix_fmt), frames = read_movie(target)
    assert codec == "prores" and pix_fmt.startswith("yuva444p")
    assert len(frames) == 3 and frames[0].shape == (H, W, 4)
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(frame[:, :, 3], alpha, atol=2e-3)
        assert np.abs(frame[:, :, :3] - rgb * (i + 1) / 3).mean() < 0.01
    with pytest.raises(HowardError, match="cannot be resumed"):
        sink.is_complete(1001)


def test_prores_abort_leaves_nothing(tmp_path):
    rgb, alpha = frame_data(top=1.0)
    with pytest.raises(RuntimeError):
        with open_sink(tmp_path / "m.mov", "prores") as sink:
            sink.write(0, rgb, alpha)
            raise RuntimeError("network crashed")
    assert os.listdir(tmp_path) == []
    sink = open_sink(tmp_path / "m.mov", "prores")
    sink.write(5, rgb, alpha)
    with pytest.raises(ValueError, match="increasing"):
        sink.write(4, rgb, alpha)
    sink.abort()
    assert os.listdir(tmp_path) == []


def test_half_frames_are_rounded_as_numpy_rounds_them_extremes_included():
    from howard_core.io.sink import pack_half

    rng = np.random.default_rng(4)
    rgb = (rng.normal(0, 3, (H, W, 3)) ** 3).astype(np.float32)  # past the half range both ways
    rgb[0, 0] = [np.inf, -np.inf, np.nan]
    rgb[1, 0] = [6e-8, 1e-8, 65519.99]  # half subnormal, to zero, the last value that rounds to 65504
    alpha = rng.random((H, W)).astype(np.float32)
    alpha[:2, 0] = 1.0
    err, bg = rng.random((H, W, 1)).astype(np.float32), rng.random((H, W, 3)).astype(np.float32) * 1e5
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.concatenate([rgb * alpha[:, :, None], alpha[:, :, None], err, bg], axis=2).astype(np.float16)
    got = pack_half(rgb, alpha, [err, bg])
    assert got.dtype == np.float16 and got.shape == (H, W, 8)
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    assert np.isinf(got[..., 7]).any() and np.isnan(got[0, 0, 2]) and list(got[1, 0, :3]) == [6e-8, 0, 65504]
    plain = pack_half(rgb[:, ::2], alpha[:, ::2])  # views are taken as they are
    np.testing.assert_array_equal(plain.view(np.uint16), expected[:, ::2, :4].view(np.uint16))


def test_abort_removes_only_the_empty_folders_it_made(tmp_path):
    plate = make_plate(tmp_path / "in")
    rgb, alpha = frame_data()
    sink = open_sink(tmp_path / "a" / "b" / "c" / "m.####.exr", "exr", like=plate)
    assert (tmp_path / "a" / "b" / "c").is_dir()
    sink.abort()
    assert not (tmp_path / "a").exists()  # all three were made for this output, and left empty
    (tmp_path / "kept").mkdir()
    open_sink(tmp_path / "kept" / "new" / "m.####.exr", "exr", like=plate).abort()
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "new").exists()
    with open_sink(tmp_path / "d" / "e" / "m.####.exr", "exr", like=plate) as sink:
        sink.write(1001, rgb, alpha)
    sink.abort()  # a frame is final: it and its folders stay
    assert (tmp_path / "d" / "e" / "m.1001.exr").is_file()
    with pytest.raises(HowardError, match="overwrite the input plate"):
        open_sink(tmp_path / "in" / "plate.####.exr", "exr", like=plate)
    assert (tmp_path / "in" / "plate.1001.exr").is_file()

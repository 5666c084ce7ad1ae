"""The main job, `howard_core.matte`, end to end on small files the tests write.

Alpha from the untrained default weights means nothing, so the tests that check pixel
values use a model whose output is known: the decoder's last convolution zeroed, with
its bias making alpha a constant `c`, the foreground residual 0 and the error 0. Then
no patch is refined (sampling mode refines only where the error is above 0), alpha is
`c` everywhere and the network's foreground is the plate itself, so every value the
pipeline writes follows from the plate, the clean plate and `c`.
"""

import json

import av
import cv2
import numpy as np
import OpenImageIO as oiio
import pytest
import torch

from howard_core.io import open_source
from howard_core.model.network import MattingRefine
from howard_core.pipeline import LAYERS, matte
from howard_core.synth import make_shot, srgb_to_linear

HALF = dict(rtol=2e-3, atol=2e-4)  # half-float storage: 11 significant bits

# --------------------------------------------------------------------------------------------------
# helpers (test_cli.py imports these too)


def constant_model(c: float) -> MattingRefine:
    """A MattingRefine whose alpha is `c` everywhere, foreground = plate, error = 0."""
    torch.manual_seed(0)
    model = MattingRefine("mobilenetv2").eval()
    with torch.no_grad():
        conv = model.decoder.conv4
        conv.weight.zero_()
        conv.bias.zero_()
        conv.bias[0] = c
    return model


def write_image(path, pixels, pixel_type=oiio.HALF):
    """HxWx3 array -> image file via OpenImageIO (independent of Howard's writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, c = pixels.shape
    spec = oiio.ImageSpec(w, h, c, pixel_type)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(np.ascontiguousarray(pixels)), out.geterror()
    out.close()


def write_sequence(folder, name, frames, first, ext="exr"):
    """Write frames (HxWx3; float for EXR, uint8 for PNG) as folder/name.####.ext; returns the pattern.

    EXR frames are stored as half floats: the values a test must compare against are
    `stored(frame)` (what the file holds), not the float32 array."""
    for k, frame in enumerate(frames):
        write_image(folder / f"{name}.{first + k:04d}.{ext}", frame, oiio.HALF if ext == "exr" else oiio.UINT8)
    return str(folder / f"{name}.####.{ext}")


def stored(frame):
    return np.asarray(frame, np.float16).astype(np.float32)


def read_channels(path) -> tuple[dict, oiio.ImageSpec]:
    """{channel name: HxW float32} and the spec of an image file."""
    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    pixels = buf.get_pixels(oiio.FLOAT)
    spec = buf.spec()
    return {name: pixels[..., k] for k, name in enumerate(spec.channelnames)}, spec


def rgb(channels, layer=""):
    prefix = f"{layer}." if layer else ""
    return np.stack([channels[prefix + c] for c in "RGB"], axis=2)


def linear_plates(shot):
    """The shot's plate in scene-linear light, with values sRGB cannot hold: highlights above 1
    (a lamp, up to 12.5) and a small negative (noise below black)."""
    frames = []
    for frame in shot.plate:
        lin = srgb_to_linear(frame)
        lin[2:10, 3:14] = (4.0, 12.5, 1.5)
        lin[20:24, 30:40, 2] = -0.03
        frames.append(lin)
    return frames


def visible_files(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# --------------------------------------------------------------------------------------------------
# 1. linear EXR in, EXR out


@pytest.fixture(scope="module")
def small_shot():
    return make_shot(96, 64, plate_frames=4, clean_frames=5, seed=3)


def test_linear_exr_round_trips_plate_colour_and_writes_all_layers(tmp_path, small_shot):
    plates = linear_plates(small_shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    rep = matte(plate, clean, tmp_path / "out", layers=list(LAYERS), model=constant_model(1.0))

    frames = [1001, 1002, 1003, 1004]
    assert rep["frames_done"] == 4 and rep["frames_skipped"] == 0
    assert rep["settings"]["colorspace"] == "linear" and rep["settings"]["clean_colorspace"] == "linear"
    assert visible_files(tmp_path / "out") == ["howard_report.1001-1004.json"] + [
        f"plate_matte.{n}.exr" for n in frames]
    on_disk = json.loads((tmp_path / "out" / "howard_report.1001-1004.json").read_text())
    assert [r["frame"] for r in on_disk["frames"]] == frames

    for k, n in enumerate(frames):
        ch, spec = read_channels(tmp_path / "out" / f"plate_matte.{n}.exr")
        assert spec.format == oiio.TypeDesc(oiio.HALF)
        assert set(spec.channelnames) == {"R", "G", "B", "A", "fg.R", "fg.G", "fg.B", "err.Y", "ref.Y",
                                          "bg.R", "bg.G", "bg.B"}
        assert spec.channelnames[:4] == ("R", "G", "B", "A")
        truth = stored(plates[k])
        assert truth.max() == 12.5 and truth.min() < 0  # the values sRGB cannot hold are there
        np.testing.assert_array_equal(ch["A"], 1.0)
        # Opaque: the plate comes back exactly, highlights above 1 and negatives included.
        np.testing.assert_allclose(rgb(ch, "fg"), truth, **HALF)
        np.testing.assert_allclose(rgb(ch), truth, **HALF)
        np.testing.assert_array_equal(ch["err.Y"], 0.0)
        np.testing.assert_array_equal(ch["ref.Y"], 0.0)
        bg = rgb(ch, "bg")
        assert np.isfinite(bg).all() and bg.min() >= 0 and bg.max() <= 1.0


def test_ocio_plate_space_round_trips_through_the_pipeline(tmp_path, small_shot):
    # ACEScg through OCIO (not a numpy fast path): the writer needs the working copy to find what clipped.
    plates = linear_plates(small_shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    rep = matte(plate, clean, tmp_path / "out", model=constant_model(1.0), colorspace="ACEScg",
                clean_colorspace="linear", layers=["bg"], align=False)
    assert rep["settings"]["colorspace"] == "ACEScg"
    ch, _ = read_channels(tmp_path / "out" / "plate_matte.1002.exr")
    truth = stored(plates[1])
    np.testing.assert_array_equal(ch["A"], 1.0)
    # Opaque: the plate comes back in its own space, highlights (12.5) and negatives included.
    np.testing.assert_allclose(rgb(ch), truth, rtol=5e-3, atol=2e-3)
    assert rgb(ch).max() > 12


def test_partial_alpha_premultiplies_in_plate_space_and_bg_is_the_clean_plate(tmp_path, small_shot):
    c = 0.5
    plates = linear_plates(small_shot)
    cleans = [srgb_to_linear(f) for f in small_shot.clean[:4]]
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_sequence(tmp_path / "clean", "clean", cleans, 1001)
    # Without alignment (a locked-off clean plate of the same size) plate frame k uses clean frame k.
    rep = matte(plate, clean, tmp_path / "out" / "m.####.exr", layers=["bg", "fg"], model=constant_model(c),
                align=False)
    assert [r["clean_frame"] for r in rep["frames"]] == [0, 1, 2, 3]
    assert rep["frames"][1]["clean_source"] == str(tmp_path / "clean" / "clean.1002.exr")

    for k, n in enumerate((1001, 1002, 1003, 1004)):
        ch, spec = read_channels(tmp_path / "out" / f"m.{n}.exr")
        assert spec.channelnames == ("R", "G", "B", "A", "bg.R", "bg.G", "bg.B", "fg.R", "fg.G", "fg.B")
        truth = stored(plates[k])
        np.testing.assert_allclose(ch["A"], c, **HALF)
        fg = rgb(ch, "fg")
        inside = (truth >= 0) & (truth <= 1)
        np.testing.assert_allclose(fg[inside], truth[inside], **HALF)
        # What the working space clipped away comes back in proportion to alpha.
        clipped = np.clip(truth, 0, 1)
        np.testing.assert_allclose(fg[~inside], clipped[~inside] + c * (truth - clipped)[~inside], **HALF)
        np.testing.assert_allclose(rgb(ch), c * fg, **HALF)  # premultiplied, in linear light
        # The aligned clean plate layer: the clean plate itself here, in the plate's (linear) space.
        np.testing.assert_allclose(rgb(ch, "bg"), np.clip(stored(cleans[k]), 0, 1), **HALF)


# --------------------------------------------------------------------------------------------------
# 2. PNG in, PNG out


def test_png_sequence_gives_straight_8bit_rgba_png(tmp_path, small_shot):
    c = 0.6
    to_u8 = lambda f: (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    plates = [to_u8(f) for f in small_shot.plate]
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1, ext="png")
    clean = write_sequence(tmp_path / "clean", "clean", [to_u8(f) for f in small_shot.clean], 1, ext="png")
    rep = matte(plate, clean, tmp_path / "out" / "matte.png", model=constant_model(c))
    assert rep["output_kind"] == "png" and rep["settings"]["colorspace"] == "srgb"

    assert visible_files(tmp_path / "out") == ["howard_report.1-4.json"] + [f"matte.{n:04d}.png" for n in (1, 2, 3, 4)]
    for k in range(4):
        # OpenCV's decoder hands back the stored bytes (OpenImageIO would premultiply on read).
        bgra = cv2.imread(str(tmp_path / "out" / f"matte.{k + 1:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert bgra.dtype == np.uint8 and bgra.shape == (64, 96, 4)
        # Straight colour: the plate's own 8-bit values, not multiplied by alpha.
        np.testing.assert_array_equal(bgra[..., 2::-1], plates[k])
        np.testing.assert_array_equal(bgra[..., 3], round(c * 255))


# --------------------------------------------------------------------------------------------------
# 3. movies


def write_mp4(path, frames, fps=24):
    """sRGB float frames -> H.264 (or MPEG-4 Part 2) mp4 through PyAV."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            img = (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_clean_plate_movie_with_exr_plate(tmp_path, small_shot):
    plates = linear_plates(small_shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_mp4(tmp_path / "clean.mp4", list(small_shot.clean))
    rep = matte(plate, clean, tmp_path / "out", layers=["bg"], model=constant_model(1.0))
    # The movie is read as sRGB (its own file type), the plate as linear.
    assert rep["settings"]["clean_colorspace"] == "srgb" and rep["settings"]["colorspace"] == "linear"
    assert rep["frames_done"] == 4
    with open_source(clean) as movie:
        clean_range = (0, len(movie) - 1)
    for k, n in enumerate((1001, 1002, 1003, 1004)):
        assert clean_range[0] <= rep["frames"][k]["clean_frame"] <= clean_range[1]
        ch, _ = read_channels(tmp_path / "out" / f"plate_matte.{n}.exr")
        np.testing.assert_allclose(rgb(ch), stored(plates[k]), **HALF)
        bg = rgb(ch, "bg")
        assert np.isfinite(bg).all() and bg.max() > 0.05  # the movie's picture, in linear light


def test_plate_movie_to_png(tmp_path, small_shot):
    plate = write_mp4(tmp_path / "shot.mp4", list(small_shot.plate))
    clean = write_mp4(tmp_path / "clean.mp4", list(small_shot.clean))
    rep = matte(plate, clean, tmp_path / "out", format="png", model=constant_model(1.0))
    assert rep["frames_done"] == 4
    # A movie's frames count from 0; the name comes from the movie's.
    assert visible_files(tmp_path / "out") == ["howard_report.0-3.json"] + [f"shot_matte.{k:04d}.png"
                                                                           for k in range(4)]
    with open_source(plate) as movie:
        for k in range(4):
            ch, _ = read_channels(tmp_path / "out" / f"shot_matte.{k:04d}.png")
            decoded = movie.read_native(k)
            np.testing.assert_allclose(rgb(ch), decoded, atol=0.5 / 255 + 1e-6)
            np.testing.assert_array_equal(ch["A"], 1.0)


# --------------------------------------------------------------------------------------------------
# 4. different sizes, lengths and start: the clean frames chosen are the true ones


def test_larger_longer_offset_clean_plate_aligns_to_the_truth(tmp_path):
    # The clean take is 320x180 against a 256x144 plate, 9 frames against 4, and starts two plate
    # frames before the plate does (clean frame j was shot at plate time j - 2).
    shot = make_shot(256, 144, plate_frames=4, clean_frames=9, seed=5, clean_width=320, clean_height=180,
                     clean_offset=-2.0, clean_rate=1.0)
    plate = write_sequence(tmp_path / "plate", "plate", [srgb_to_linear(f) for f in shot.plate], 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 101)
    rep = matte(plate, clean, tmp_path / "out", clean_offset=2.0, clean_scale=1.0)  # default (untrained) model

    assert rep["frames_done"] == 4 and rep["flagged_frames"] == []
    ch, spec = read_channels(tmp_path / "out" / "plate_matte.1001.exr")
    assert (spec.width, spec.height) == (256, 144)
    corners = np.array([[0, 0, 1], [255, 0, 1], [255, 143, 1], [0, 143, 1]], np.float64).T
    for i, rec in enumerate(rep["frames"]):
        j = rec["clean_frame"]
        assert not rec["flagged"] and rec["fallback"] is None, rec["reason"]
        assert rec["coverage"] > 0.9
        assert abs(j - shot.matching_clean_index(i)) <= 1
        assert rec["clean_source"].endswith(f"clean.{101 + j:04d}.exr")
        # The fitted clean->plate homography against the true one: where the plate's corners land
        # in the chosen clean frame.
        ours = np.linalg.inv(np.array(rec["homography"])) @ corners
        true = np.linalg.inv(shot.clean_to_plate(j, i)) @ corners
        assert np.abs(ours[:2] / ours[2] - true[:2] / true[2]).max() < 0.5


# --------------------------------------------------------------------------------------------------
# misc API behaviour


def test_missing_frame_held_from_the_previous_one(tmp_path, small_shot):
    plates = linear_plates(small_shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    (tmp_path / "plate" / "plate.1002.exr").unlink()
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    rep = matte(plate, clean, tmp_path / "out", missing="hold", model=constant_model(1.0), align=False)
    assert rep["frames_done"] == 4
    held, _ = read_channels(tmp_path / "out" / "plate_matte.1002.exr")
    np.testing.assert_allclose(rgb(held), stored(plates[0]), **HALF)
    last, _ = read_channels(tmp_path / "out" / "plate_matte.1003.exr")
    np.testing.assert_allclose(rgb(last), stored(plates[2]), **HALF)


def test_resume_of_a_finished_clip_does_nothing_and_keeps_its_report(tmp_path, small_shot):
    # A farm re-queues a chunk that already finished: nothing is redone, and the QC of the run that
    # did the work is not replaced by an empty one.
    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    model = constant_model(0.5)
    first = matte(plate, clean, tmp_path / "out", model=model, align=False)
    report = tmp_path / "out" / "howard_report.1001-1004.json"
    kept = report.read_bytes()
    frames = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("plate_matte.*.exr")}
    again = matte(plate, clean, tmp_path / "out", model=model, align=False, resume=True)
    assert again["frames_done"] == 0 and again["frames_skipped"] == 4
    assert again["report"] == first["report"] == str(report)
    assert report.read_bytes() == kept and len(json.loads(kept)["frames"]) == 4
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("plate_matte.*.exr")} == frames


def test_inference_threads_are_recorded_and_restored(tmp_path, small_shot, monkeypatch):
    from howard_core import pipeline, runtime
    from howard_core.errors import HowardError

    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    before = torch.get_num_threads()
    seen = []
    real_to_tensor = pipeline.to_tensor  # called by inference for every batch, as it runs
    monkeypatch.setattr(pipeline, "to_tensor", lambda f: (seen.append(torch.get_num_threads()), real_to_tensor(f))[1])
    rep = matte(plate, clean, tmp_path / "one", model=constant_model(0.5), align=False, threads=1)
    assert rep["settings"]["threads"] == 1 and set(seen) == {1} and len(seen) == 8
    assert rep["settings"]["cpu_budget"]["mode"] == "fixed"
    assert torch.get_num_threads() == before  # the caller's setting comes back
    # Measured by default: within the cores this process may use (one here) and torch's setting.
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    seen.clear()
    rep = matte(plate, clean, tmp_path / "auto", model=constant_model(0.5), align=False)
    budget = rep["settings"]["cpu_budget"]
    assert budget["mode"] == "measured" and budget["cores"] == 1 and budget["ceiling"] == 1
    assert set(seen) == {1} and rep["settings"]["threads"] == 1 and budget["frames_by_threads"] == {"1": 4}
    assert torch.get_num_threads() == before
    with pytest.raises(HowardError, match="threads must be at least 1"):
        matte(plate, clean, tmp_path / "bad", model=constant_model(0.5), threads=0)
    with pytest.raises(HowardError, match="queue size must be at least 1"):
        matte(plate, clean, tmp_path / "bad", model=constant_model(0.5), queue_size=0)
    assert not (tmp_path / "bad").exists()


def test_two_cores_infer_two_frames_at_once_and_hand_them_on_in_order(tmp_path, monkeypatch):
    import threading

    from howard_core import pipeline, runtime

    shot = make_shot(384, 216, plate_frames=6, clean_frames=8, seed=21)
    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    one = matte(plate, clean, tmp_path / "one", precision="fp32", threads=1)  # one frame at a time
    assert one["settings"]["cpu_budget"]["streams"] == 1

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen, written = [], []
    both_in = threading.Barrier(2, timeout=20)  # frames 1 and 2 must be inferred at the same time
    real_infer, real_write = pipeline.MatteJob._infer_batch, pipeline.MatteJob.write

    def infer(self, batch, threads):
        if batch[0].number in (1002, 1003):
            both_in.wait()
        done = real_infer(self, batch, threads)
        seen.append((batch[0].number, threading.current_thread().name, torch.get_num_threads()))
        return done

    monkeypatch.setattr(pipeline.MatteJob, "_infer_batch", infer)
    monkeypatch.setattr(pipeline.MatteJob, "write", lambda self, item: (written.append(item.number),
                                                                         real_write(self, item))[1])
    try:
        two = matte(plate, clean, tmp_path / "two", precision="fp32")
        assert torch.get_num_threads() == 2  # the caller's thread keeps its own setting
    finally:
        torch.set_num_threads(before)
    budget = two["settings"]["cpu_budget"]
    assert budget["streams"] == 2 and budget["threads_per_stream"] == 1 and budget["threads"] == 2
    assert written == list(range(1001, 1007)) and [f["frame"] for f in two["frames"]] == written
    # One thread each, on two worker threads, the first frame too (so it is the same in any chunk).
    assert sorted(s[0] for s in seen) == written and {s[2] for s in seen} == {1}
    assert len({s[1] for s in seen}) == 2 and all(s[1].startswith("howard-infer") for s in seen)
    for f in range(1001, 1007):
        a = read_channels(tmp_path / "one" / f"plate_matte.{f}.exr")[0]["A"]
        b = read_channels(tmp_path / "two" / f"plate_matte.{f}.exr")[0]["A"]
        assert (b > 0.5).sum() > 0 and np.abs(b - shot.alpha[f - 1001]).mean() < 0.03  # the subject, matted
        np.testing.assert_array_equal(b, a, err_msg=f"frame {f}")  # one thread per frame in both runs


def test_alpha_only_and_prores_outputs(tmp_path, small_shot):
    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    model = constant_model(0.25)
    matte(plate, clean, tmp_path / "alpha", format="alpha", model=model, align=False)
    for n in (1001, 1002, 1003, 1004):
        ch, spec = read_channels(tmp_path / "alpha" / f"plate_alpha.{n}.exr")
        assert spec.channelnames == ("A",)
        np.testing.assert_allclose(ch["A"], 0.25, **HALF)

    rep = matte(plate, clean, tmp_path / "mov" / "shot.mov", model=model, align=False)
    assert rep["output_kind"] == "prores" and visible_files(tmp_path / "mov") == ["howard_report.1001-1004.json",
                                                                                 "shot.mov"]
    with av.open(str(tmp_path / "mov" / "shot.mov")) as movie:
        stream = movie.streams.video[0]
        assert stream.codec_context.name == "prores" and stream.codec_context.pix_fmt.startswith("yuva")
        frames = [f.to_ndarray(format="rgba64le") for f in movie.decode(stream)]
    assert len(frames) == 4
    for f in frames:
        np.testing.assert_allclose(f[..., 3] / 65535, 0.25, atol=2e-3)  # 16-bit alpha in ProRes 4444


# --------------------------------------------------------------------------------------------------
# 8. the bundled default weights pull a real matte


def test_bundled_demo_weights_matte_the_subject_of_a_handheld_shot(tmp_path):
    # A shot the model never trained on (the take generator, not the training generator): hand-held
    # plate, clean take with its own path, exposure and length, through the whole pipeline.
    shot = make_shot(384, 216, plate_frames=2, clean_frames=4, seed=21)
    plate = write_sequence(tmp_path / "plate", "plate", [srgb_to_linear(f) for f in shot.plate], 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    rep = matte(plate, clean, tmp_path / "out", precision="fp32")
    assert rep["model"]["trained"] is True and rep["model"]["demo"] is True
    for k in range(2):
        alpha = read_channels(tmp_path / "out" / f"plate_matte.{1001 + k}.exr")[0]["A"]
        truth = shot.alpha[k]
        inter = ((alpha > 0.5) & (truth > 0.5)).sum()
        union = ((alpha > 0.5) | (truth > 0.5)).sum()
        assert inter / union > 0.75, (k, inter / union)  # measured 0.84 and 0.87
        assert np.abs(alpha - truth).mean() < 0.025, k  # measured 0.014 and 0.011


def test_report_versions_name_the_installed_libraries():
    import PyOpenColorIO

    from howard_core.pipeline import versions

    v = versions()  # read from package metadata where the module is not loaded yet
    assert v["av"] == av.__version__ and v["opencolorio"] == PyOpenColorIO.__version__
    assert v["torch"] == torch.__version__ and v["numpy"] == np.__version__


# --------------------------------------------------------------------------------------------------
# chunks and resumed runs give exactly the whole-clip run's frames (farm chunks rely on it)


def test_chunks_and_resumed_runs_equal_the_whole_clip_exactly(tmp_path):
    from howard_core.align.sequence import SEGMENT_FRAMES

    # Small frames, so feature fits often fail and frames fall back to the previous fit: the state one
    # frame hands the next, which a chunk starting mid-clip must rebuild. 30 frames cross a segment.
    n = SEGMENT_FRAMES + 6
    shot = make_shot(96, 64, plate_frames=n, clean_frames=n + 3, seed=3)
    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    full = matte(plate, clean, tmp_path / "full", threads=1)
    assert any("previous" in str(r.get("fallback")) for r in full["frames"])  # the state is used here

    def alpha(folder, f):
        return read_channels(folder / f"plate_matte.{f}.exr")[0]["A"]

    last = 1000 + n
    chunks = [list(range(1001, 1011)), list(range(1011, 1025)), list(range(1025, last + 1))]
    for chunk in chunks:  # starts inside segment 0, at segment 1's first frame
        matte(plate, clean, tmp_path / "chunks", frames=chunk, threads=1)
    matte(plate, clean, tmp_path / "tail", frames=[1003, 1027, last], threads=1)  # gaps everywhere
    (tmp_path / "full" / "plate_matte.1005.exr").rename(tmp_path / "kept_1005.exr")
    (tmp_path / "full" / "plate_matte.1026.exr").unlink()
    matte(plate, clean, tmp_path / "full", threads=1, resume=True)  # a farm retry: only the missing two
    for f in range(1001, last + 1):
        reference = alpha(tmp_path / "chunks", f)
        np.testing.assert_array_equal(alpha(tmp_path / "full", f), reference, err_msg=f"frame {f}")
    np.testing.assert_array_equal(read_channels(tmp_path / "kept_1005.exr")[0]["A"], alpha(tmp_path / "full", 1005))
    for f in (1003, 1027, last):
        np.testing.assert_array_equal(alpha(tmp_path / "tail", f), alpha(tmp_path / "chunks", f), err_msg=f"{f}")


@pytest.mark.parametrize("batch", [1, 2])
def test_later_frames_are_aligned_only_once_the_first_batch_is_written(tmp_path, small_shot, monkeypatch, batch):
    from howard_core import pipeline
    from howard_core.align.sequence import SequenceAligner

    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    order = []
    real_align, real_write = SequenceAligner.align_frame, pipeline.MatteJob.write
    monkeypatch.setattr(SequenceAligner, "align_frame",
                        lambda self, i, *a, **k: (order.append(("align", i)), real_align(self, i, *a, **k))[1])
    monkeypatch.setattr(pipeline.MatteJob, "write",
                        lambda self, item: (real_write(self, item), order.append(("write", item.number - 1001))))
    rep = matte(plate, clean, tmp_path / "out", model=constant_model(0.5), batch_size=batch, queue_size=4)
    assert rep["frames_done"] == 4
    first_written = order.index(("write", batch - 1))
    assert sorted(order[:first_written + 1]) == sorted([("align", i) for i in range(batch)] +
                                                       [("write", i) for i in range(batch)])
    assert sorted(order) == sorted([(stage, i) for stage in ("align", "write") for i in range(4)])


def test_a_failing_first_inference_ends_the_job_with_its_error(tmp_path, small_shot):
    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    model = constant_model(0.5)

    def broken(*args, **kwargs):
        raise RuntimeError("inference broke")

    model.backbone.forward = broken  # the aligner meanwhile waits for the first frame's output
    with pytest.raises(RuntimeError, match="inference broke"):
        matte(plate, clean, tmp_path / "out", model=model, queue_size=4)
    assert not list((tmp_path / "out").glob("*.exr"))


def test_opencv_runs_single_threaded_beside_cpu_inference_and_is_given_back(tmp_path, small_shot, monkeypatch):
    import cv2

    from howard_core.align.sequence import SequenceAligner

    plate = write_sequence(tmp_path / "plate", "plate", linear_plates(small_shot), 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in small_shot.clean], 1)
    seen = []
    real_align = SequenceAligner.align_frame
    monkeypatch.setattr(SequenceAligner, "align_frame",
                        lambda self, i, *a, **k: (seen.append(cv2.getNumThreads()), real_align(self, i, *a, **k))[1])
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)  # the caller's own setting
    try:
        rep = matte(plate, clean, tmp_path / "out", model=constant_model(0.5))
        assert seen == [3, 1, 1, 1]  # the first frame is aligned while torch loads, before inference runs
        assert rep["settings"]["cpu_budget"]["opencv_threads"] == 1
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)

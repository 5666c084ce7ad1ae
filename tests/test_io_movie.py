"""Movie input: frame-accurate sequential and random access, numbering, errors."""

import random
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from howard_core.errors import HowardError
from howard_core.io import open_source

W, H, COUNT, BITS = 64, 48, 30, 8


def index_image(k):
    """Frame k as 8 vertical stripes, stripe b white when bit b of k is set (survives compression)."""
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (k >> b) & 1:
            img[:, b * 8 : (b + 1) * 8] = 255
    return img


def decode_index(rgb):
    return sum(1 << b for b in range(BITS) if rgb[:, b * 8 + 2 : b * 8 + 6].mean() > 0.5)


def write_movie(path, codec, count=COUNT):
    """Short GOPs with B-frames, so random access needs real seeking and reordering."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options={"g": "5", "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for k in range(count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_image(k), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module", params=["libx264", "mpeg4"])
def movie(request, tmp_path_factory):
    if request.param not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {request.param} encoder")
    return write_movie(tmp_path_factory.mktemp("mov") / f"clip_{request.param}.mp4", request.param)


def test_movie_basics(movie):
    with open_source(movie) as src:
        assert src.kind == "movie" and not src.is_still
        assert src.frame_numbers == list(range(COUNT)) and len(src) == COUNT
        assert (src.width, src.height, src.colorspace) == (W, H, "srgb")
        assert float(src.fps) == 25
        assert "frame 7" in src.path_for(7) and str(movie) in src.path_for(7)
        img = src.read(0)
        assert img.shape == (H, W, 3) and img.dtype == np.float32


def test_sequential_reads_are_frame_accurate(movie):
    with open_source(movie) as src:
        assert [decode_index(src.read_native(k)) for k in range(COUNT)] == list(range(COUNT))


def test_random_access_is_frame_accurate(movie):
    order = list(range(COUNT)) * 2
    random.Random(4).shuffle(order)
    order += [29, 0, 28, 1, 17, 16, 15, 3, 3, 4, 20]  # backward steps, repeats, big jumps
    with open_source(movie) as src:
        assert [decode_index(src.read_native(k)) for k in order] == order


def test_explicit_frames_and_out_of_range(movie):
    src = open_source(movie, frames=[3, 5, 10])
    assert src.frame_numbers == [3, 5, 10]
    assert decode_index(src.read_native(10)) == 10
    with pytest.raises(HowardError) as err:
        open_source(movie, frames=[28, 29, 30, 31])
    assert str(movie) in str(err.value) and "30-31" in str(err.value) and "--missing hold" in str(err.value)


def test_start_frame_lines_a_movie_up_with_a_plate(movie):
    src = open_source(movie, start_frame=1001)
    assert src.frame_numbers[0] == 1001 and src.frame_numbers[-1] == 1001 + COUNT - 1
    assert decode_index(src.read_native(1010)) == 9
    assert decode_index(src.read_native(1001)) == 0
    with pytest.raises(HowardError, match="1001-1030"):
        open_source(movie, frames=[1030, 1031], start_frame=1001)


def test_hold_clamps_past_the_end(movie):
    src = open_source(movie, frames=list(range(25, 40)), missing="hold")
    assert src.missing_frames == list(range(30, 40))
    assert decode_index(src.read_native(35)) == COUNT - 1
    assert decode_index(src.read_native(26)) == 26


def test_movie_reads_from_a_worker_thread(movie):
    src = open_source(movie)
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda k: decode_index(src.read_native(k)), [12, 2, 25, 13, 3]))
    assert got == [12, 2, 25, 13, 3]
    src.close()


def test_corrupt_and_truncated_movies(tmp_path, movie):
    junk = tmp_path / "junk.mov"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(HowardError) as err:
        open_source(junk)
    assert str(junk) in str(err.value) and "\n" not in str(err.value)

    data = movie.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the mp4 index (moov) is at the end
    with pytest.raises(HowardError, match="cut.mp4"):
        src = open_source(cut)
        src.read_native(len(src) - 1)

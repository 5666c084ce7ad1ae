"""Bad inputs a user can make: each is one HowardError line naming the file and the fix."""

import numpy as np
import OpenImageIO as oiio
import pytest

from howard_core.errors import HowardError
from howard_core.io import open_sink, open_source, parse_frames


def _png(path, h=23, w=37):
    spec = oiio.ImageSpec(w, h, 3, oiio.UINT8)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.random.default_rng(0).random((h, w, 3)).astype(np.float32))
    out.close()
    return path


def corrupt_exr(tmp):
    path = tmp / "corrupt.exr"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return lambda: open_source(path), str(path)


def garbled_exr_header(tmp):
    # Not-UTF-8 bytes in the header end up in OpenImageIO's error text.
    path = tmp / "garbled.exr"
    spec = oiio.ImageSpec(16, 8, 3, oiio.HALF)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.zeros((8, 16, 3), np.float32))
    out.close()
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c"
    path.write_bytes(bytes(data))
    return lambda: open_source(path), str(path)


def truncated_png(tmp):
    path = _png(tmp / "cut.png")
    path.write_bytes(path.read_bytes()[:-300])

    def attempt():
        open_source(path).read_native(0)

    return attempt, str(path)


def truncated_frame_in_sequence(tmp):
    for n in (1, 2):
        _png(tmp / f"plate.{n:04d}.png")
    cut = tmp / "plate.0002.png"
    cut.write_bytes(cut.read_bytes()[:-300])

    def attempt():
        src = open_source(tmp / "plate.####.png")
        src.read(1)
        src.read(2)

    return attempt, str(cut)


def empty_folder(tmp):
    folder = tmp / "empty"
    folder.mkdir()
    return lambda: open_source(folder), str(folder)


def nonexistent_pattern(tmp):
    return lambda: open_source(tmp / "nowhere" / "plate.####.exr"), str(tmp / "nowhere")


def pattern_with_no_frames(tmp):
    _png(tmp / "other.0001.png")
    return lambda: open_source(tmp / "plate.####.png"), str(tmp / "plate.####.png")


def nonexistent_file(tmp):
    return lambda: open_source(tmp / "clean.exr"), str(tmp / "clean.exr")


def random_bytes_movie(tmp):
    path = tmp / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return lambda: open_source(path), str(path)


def bad_frame_range(tmp):
    return lambda: parse_frames("1100-1001"), "1100-1001"


def bad_missing_mode(tmp):
    _png(tmp / "p.png")
    return lambda: open_source(tmp / "p.png", missing="black"), "black"


def bad_colorspace(tmp):
    _png(tmp / "p.png")
    return lambda: open_source(tmp / "p.png", colorspace="ACES cg 2065"), "ACES cg 2065"


def bad_layer(tmp):
    path = _png(tmp / "p.png")
    return lambda: open_source(path, layer="beauty"), str(path)


def output_under_a_file(tmp):
    blocker = tmp / "file.txt"
    blocker.write_text("x")
    return lambda: open_sink(blocker / "out" / "m.####.exr", "exr"), str(blocker)


CASES = [
    corrupt_exr,
    garbled_exr_header,
    truncated_png,
    truncated_frame_in_sequence,
    empty_folder,
    nonexistent_pattern,
    pattern_with_no_frames,
    nonexistent_file,
    random_bytes_movie,
    bad_frame_range,
    bad_missing_mode,
    bad_colorspace,
    bad_layer,
    output_under_a_file,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_gives_one_line_naming_it(tmp_path, case):
    attempt, must_name = case(tmp_path)
    with pytest.raises(HowardError) as err:
        attempt()
    msg = str(err.value)
    assert must_name in msg
    assert "\n" not in msg and len(msg) < 400

"""Atomic writes keep the mode the user's umask gives, whichever writer made the temp file.

A file written 0600 (what tempfile.mkstemp gives) cannot be read by a farm node running as
another user; every atomic write here must end as 0666 & ~umask.
"""

import os
import stat
from fractions import Fraction

import numpy as np
import pytest

from howard_core.io.atomic import atomic_write, current_umask, write_bytes_atomic, write_json_atomic

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_the_mask_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # still set: reading did not reset it


def test_a_writer_that_creates_0600_files_still_publishes_the_umask_mode(tmp_path, umask):
    target = tmp_path / "out" / "frame.1001.exr"
    with atomic_write(target) as tmp:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)  # as mkstemp does
        os.write(fd, b"pixels")
        os.close(fd)
    assert target.read_bytes() == b"pixels"
    assert _mode(target) == 0o666 & ~umask


def test_the_bytes_and_json_helpers_give_the_umask_mode(tmp_path, umask):
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "r.json") == 0o666 & ~umask


def test_an_exr_frame_gets_the_umask_mode(tmp_path, umask):
    import OpenImageIO as oiio

    from howard_core.io.images import write_image

    write_image(tmp_path / "m.exr", np.zeros((4, 6, 4), np.float32), ["R", "G", "B", "A"], oiio.HALF)
    assert _mode(tmp_path / "m.exr") == 0o666 & ~umask


def test_a_prores_movie_gets_the_umask_mode(tmp_path, umask):
    import av

    if "prores_ks" not in av.codecs_available:
        pytest.skip("this FFmpeg has no ProRes encoder")
    from howard_core.io.movie import ProResWriter

    writer = ProResWriter(tmp_path / "m.mov", Fraction(24))
    writer.write(np.zeros((16, 16, 4), np.float32))
    writer.finish()
    assert _mode(tmp_path / "m.mov") == 0o666 & ~umask


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []

"""Frame ranges, file patterns, discovery and atomic writes."""

import os

import pytest

from howard_core.errors import HowardError
from howard_core.io import SequencePattern, atomic_write, ensure_writable_dir, format_frames, parse_frames
from howard_core.io.frames import full_range


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12", [12]),
        ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
        ("1001-1009x2", [1001, 1003, 1005, 1007, 1009]),
        ("1,5,7-9", [1, 5, 7, 8, 9]),
        (" 9 , 3, 3-4 ", [3, 4, 9]),
        ("0", [0]),
    ],
)
def test_parse_frames(text, expected):
    assert parse_frames(text) == expected


def test_parse_frames_long_range():
    frames = parse_frames("1001-1100")
    assert len(frames) == 100 and frames[0] == 1001 and frames[-1] == 1100


@pytest.mark.parametrize("text", ["", "abc", "10-5", "1-10x0", "1--5", "1-5x", "1.5", "1-2000000", "5,,6"])
def test_parse_frames_rejects_nonsense(text):
    with pytest.raises(HowardError) as err:
        parse_frames(text)
    assert "--frames" in str(err.value)
    assert "\n" not in str(err.value)


def test_format_frames_is_compact():
    assert format_frames([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    assert parse_frames(format_frames([4, 5, 6, 20])) == [4, 5, 6, 20]


@pytest.mark.parametrize("spec", ["plate.####.exr", "plate.%04d.exr", "plate.@@@@.exr"])
def test_three_pattern_syntaxes_mean_the_same(tmp_path, spec):
    pattern = SequencePattern.parse(tmp_path / spec)
    assert pattern.padding == 4
    assert pattern.path(1001) == tmp_path / "plate.1001.exr"
    assert pattern.path(7) == tmp_path / "plate.0007.exr"
    assert pattern.path(12345) == tmp_path / "plate.12345.exr"
    assert pattern.display == str(tmp_path / "plate.####.exr")


def test_unpadded_pattern_and_non_patterns(tmp_path):
    assert SequencePattern.parse(tmp_path / "p_%d.png").path(7) == tmp_path / "p_7.png"
    assert SequencePattern.parse(tmp_path / "p_#.png").path(12) == tmp_path / "p_12.png"
    assert SequencePattern.parse(tmp_path / "plate.1001.exr") is None
    with pytest.raises(HowardError, match="tokens"):
        SequencePattern.parse(tmp_path / "p.##.%04d.exr")


def test_discover_matches_only_the_pattern(tmp_path):
    for name in [
        "plate.1001.exr",
        "plate.1002.exr",
        "plate.1010.exr",
        "plate.12345.exr",  # wider than the padding: still this sequence
        "plate.001.exr",  # 3 digits: a different sequence
        "plate.01001.exr",  # extra leading zero: not this padding
        "plate.1003.exr.bak",
        ".plate.1004.tmp-ab12cd34.exr",  # a half-written temp file
        "other.1005.exr",
    ]:
        (tmp_path / name).write_bytes(b"")
    assert SequencePattern.parse(tmp_path / "plate.####.exr").discover() == [1001, 1002, 1010, 12345]
    # Padding is a minimum width, so 3-digit padding also takes the wider numbers.
    assert SequencePattern.parse(tmp_path / "plate.###.exr").discover() == [1, 1001, 1002, 1010, 12345]
    assert SequencePattern.parse(tmp_path / "missing_dir/plate.####.exr").discover() == []


def test_padding_hint_names_the_real_padding(tmp_path):
    (tmp_path / "plate.001.exr").write_bytes(b"")
    hint = SequencePattern.parse(tmp_path / "plate.####.exr").padding_hint()
    assert "3-digit" in hint and "plate.###.exr" in hint


def test_full_range_keeps_the_sequence_step():
    assert full_range([1001, 1003, 1007]) == [1001, 1003, 1005, 1007]
    assert full_range([1, 2, 5]) == [1, 2, 3, 4, 5]
    assert full_range([42]) == [42]
    assert full_range([]) == []


def test_atomic_write_success_creates_folders(tmp_path):
    target = tmp_path / "new" / "deeper" / "report.json"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text('{"ok": true}')
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == '{"ok": true}'
    assert os.listdir(target.parent) == ["report.json"]


def test_atomic_write_failure_leaves_no_file_and_keeps_the_old_one(tmp_path):
    fresh = tmp_path / "fresh.exr"
    with pytest.raises(RuntimeError):
        with atomic_write(fresh) as tmp:
            tmp.write_bytes(b"half a frame")
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []

    old = tmp_path / "old.json"
    old.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_write(old) as tmp:
            tmp.write_text("new but broken")
            raise RuntimeError("boom")
    assert old.read_text() == "previous"
    assert os.listdir(tmp_path) == ["old.json"]


def test_ensure_writable_dir_under_a_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(HowardError) as err:
        ensure_writable_dir(blocker / "renders")
    assert str(blocker / "renders") in str(err.value)
    with pytest.raises(HowardError, match="is a file"):
        ensure_writable_dir(blocker)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_ensure_writable_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(HowardError, match="not writable"):
            ensure_writable_dir(ro)
    finally:
        ro.chmod(0o700)

"""`howard` on the command line: bad input, resume after a kill, JSON progress, farm chunks,
info / weights / export-nuke, and the demo. Most runs call `howard_core.cli.main` in this
process (a fresh interpreter costs seconds of imports); the kill test and a few error
cases run the real command in a subprocess to see the exit code and stderr a shell sees.
"""

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from test_pipeline import HALF, constant_model, linear_plates, read_channels, rgb, stored, write_sequence

from howard_core.cli import main
from howard_core.io.images import is_readable
from howard_core.model import save_checkpoint
from howard_core.synth import make_shot, srgb_to_linear

MATTE_CHANNELS = ("R", "G", "B", "A")


def run(capsys, *args):
    """(exit code, stdout, stderr) of `howard ARGS` run in this process."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def notices(err):
    """stderr lines but the alignment warning: the 96x64 test clip is too small to align (every frame
    falls back, as before), which the CLI now says at the end of the run."""
    return [line for line in err.splitlines() if "alignment fell back" not in line]


def files_under(folder):
    """{relative path: contents} of every file below `folder` (inputs are small)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tree_under(folder):
    """Every file below `folder` with its contents, and every folder (None): what a failed run must not change."""
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def shot():
    return make_shot(96, 64, plate_frames=4, clean_frames=5, seed=3)


@pytest.fixture
def clip(tmp_path, shot):
    """A 4-frame linear EXR plate (1001-1004) and a 5-frame clean plate (1-5) under tmp_path."""
    plates = linear_plates(shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    return plate, clean, plates


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Howard checkpoint of the constant-alpha model (alpha 0.5 everywhere)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "const05.pt", constant_model(0.5))


# --------------------------------------------------------------------------------------------------
# 6. bad input: exit code 2, one line naming the culprit, nothing written


def _missing_plate(tmp, plate, clean, ckpt):
    bad = tmp / "nowhere" / "plate.####.exr"
    return [bad, clean], str(bad)


def _pattern_without_frames(tmp, plate, clean, ckpt):
    bad = tmp / "plate" / "shot.####.exr"
    return [bad, clean], str(bad)


def _missing_clean_plate(tmp, plate, clean, ckpt):
    return [plate, tmp / "clean_plate.mov"], str(tmp / "clean_plate.mov")


def _corrupt_plate_frame(tmp, plate, clean, ckpt):
    bad = tmp / "plate" / "plate.1001.exr"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return [plate, clean], str(bad)


def _garbled_exr_header(tmp, plate, clean, ckpt):
    # Bytes that are not UTF-8 where the header's first attribute name is: OpenImageIO quotes them in
    # its error text, which once made `howard` die with a UnicodeDecodeError traceback.
    bad = tmp / "plate" / "plate.1001.exr"
    data = bytearray(bad.read_bytes())
    data[8:20] = b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c"
    bad.write_bytes(bytes(data))
    return [plate, clean], str(bad)


def _corrupt_clean_plate(tmp, plate, clean, ckpt):
    bad = tmp / "clean" / "clean.0001.exr"
    bad.write_bytes(bad.read_bytes()[:200])
    return [plate, clean], str(bad)


def _truncated_png_clean_plate(tmp, plate, clean, ckpt):
    # A half-copied still: libpng would print a line of its own on stderr beside Howard's.
    from howard_core.io.images import encode_png

    still = tmp / "still.png"
    pixels = (np.random.default_rng(4).random((64, 96, 3)) * 255).astype(np.uint8)
    still.write_bytes(encode_png(pixels)[:3000])
    return [plate, still], str(still)


def _missing_middle_frame(tmp, plate, clean, ckpt):
    (tmp / "plate" / "plate.1002.exr").unlink()
    return [plate, clean], str(tmp / "plate" / "plate.1002.exr")


def _bad_frames_text(tmp, plate, clean, ckpt):
    return [plate, clean, "--frames", "1001-10o4"], "1001-10o4"


def _frames_outside_the_clip(tmp, plate, clean, ckpt):
    return [plate, clean, "--frames", "2001-2010"], str(tmp / "plate" / "plate.2001.exr")


def _frames_running_past_the_clip(tmp, plate, clean, ckpt):
    return [plate, clean, "--frames", "1003-1008"], str(tmp / "plate" / "plate.1005.exr")


def _output_under_a_file(tmp, plate, clean, ckpt):
    blocker = tmp / "notes.txt"
    blocker.write_text("not a folder")
    return [plate, clean, "-o", blocker / "out"], str(blocker)


def _random_bytes_checkpoint(tmp, plate, clean, ckpt):
    bad = tmp / "weights.pth"
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return [plate, clean, "--model", bad], str(bad)


def _truncated_checkpoint(tmp, plate, clean, ckpt):
    bad = tmp / "cut.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return [plate, clean, "--model", bad], str(bad)


def _not_a_bgmv2_checkpoint(tmp, plate, clean, ckpt):
    bad = tmp / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, bad)
    return [plate, clean, "--model", bad], str(bad)


def _unknown_weights_name(tmp, plate, clean, ckpt):
    return [plate, clean, "--model", "resnet77"], "resnet77"


def _unknown_layer(tmp, plate, clean, ckpt):
    return [plate, clean, "--layers", "fg,alpha"], "alpha"


def _layers_with_png_output(tmp, plate, clean, ckpt):
    return [plate, clean, "-o", tmp / "out" / "m.####.png", "--layers", "fg"], "fg"


def _output_is_the_plate(tmp, plate, clean, ckpt):
    return [plate, clean, "-o", plate], str(tmp / "plate" / "plate.1001.exr")


def _output_is_the_clean_plate(tmp, plate, clean, ckpt):
    # A clean take numbered like the plate, and -o pointing at it: it must not be overwritten.
    for k in range(1, 6):
        (tmp / "take2").mkdir(exist_ok=True)
        (tmp / "take2" / f"clean.{1000 + k}.exr").write_bytes((tmp / "clean" / f"clean.{k:04d}.exr").read_bytes())
    return [plate, tmp / "take2" / "clean.####.exr", "-o", tmp / "take2" / "clean.####.exr"], str(
        tmp / "take2" / "clean.1001.exr")


def _wrong_extension_for_format(tmp, plate, clean, ckpt):
    return [plate, clean, "-o", tmp / "out" / "m.exr", "--format", "png"], str(tmp / "out" / "m.exr")


def _resume_prores(tmp, plate, clean, ckpt):
    return [plate, clean, "-o", tmp / "out" / "m.mov", "--resume"], str(tmp / "out" / "m.mov")


def _unknown_compression(tmp, plate, clean, ckpt):
    return [plate, clean, "--compression", "zip9"], "zip9"


def _compression_with_png_output(tmp, plate, clean, ckpt):
    return [plate, clean, "-o", tmp / "out" / "m.####.png", "--compression", "piz"], "m.####.png"


def _zero_threads(tmp, plate, clean, ckpt):
    return [plate, clean, "--threads", "0"], "threads"


BAD_INPUTS = [_missing_plate, _pattern_without_frames, _missing_clean_plate, _corrupt_plate_frame,
              _garbled_exr_header, _corrupt_clean_plate, _missing_middle_frame, _bad_frames_text,
              _frames_outside_the_clip,
              _frames_running_past_the_clip, _output_under_a_file, _random_bytes_checkpoint, _truncated_checkpoint,
              _not_a_bgmv2_checkpoint, _unknown_weights_name, _unknown_layer, _layers_with_png_output,
              _output_is_the_plate, _output_is_the_clean_plate, _wrong_extension_for_format, _resume_prores,
              _unknown_compression, _compression_with_png_output, _zero_threads, _truncated_png_clean_plate]


def _bad_command(case, tmp_path, clip, checkpoint):
    plate, clean, _ = clip
    args, must_name = case(tmp_path, plate, clean, checkpoint)
    if "-o" not in args:
        args += ["-o", tmp_path / "out"]
    if "--model" not in args:
        args += ["--model", checkpoint]
    return ["matte", *args, "--progress", "none"], must_name


def _assert_one_line_error(code, out, err, must_name):
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("howard: error: ")
    assert must_name in lines[0]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.__name__[1:] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, clip, checkpoint, case, capsys):
    args, must_name = _bad_command(case, tmp_path, clip, checkpoint)
    before = tree_under(tmp_path)
    _assert_one_line_error(*run(capsys, *args), must_name)
    assert tree_under(tmp_path) == before  # no output folder either


@pytest.mark.parametrize("case", [_missing_plate, _truncated_checkpoint, _garbled_exr_header,
                                  _truncated_png_clean_plate],
                         ids=["missing_plate", "truncated_checkpoint", "garbled_exr_header",
                              "truncated_png_clean_plate"])
def test_bad_input_from_a_shell(tmp_path, clip, checkpoint, case):
    args, must_name = _bad_command(case, tmp_path, clip, checkpoint)
    before = tree_under(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "howard_core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, must_name)
    assert tree_under(tmp_path) == before


def test_align_writes_the_aligned_clean_plate_and_qc(tmp_path, clip, capsys):
    plate, clean, _ = clip
    code, _, err = run(capsys, "align", plate, clean, "-o", tmp_path / "aligned", "--progress", "none")
    assert code == 0, err
    qc = json.loads((tmp_path / "aligned" / "howard_align.1001-1004.json").read_text())
    assert [r["frame"] for r in qc["frames"]] == [1001, 1002, 1003, 1004]
    for n in (1001, 1002, 1003, 1004):
        ch, spec = read_channels(tmp_path / "aligned" / f"plate_aligned.{n}.exr")
        assert spec.channelnames == MATTE_CHANNELS and (spec.width, spec.height) == (96, 64)
        assert set(np.unique(ch["A"])) <= {0.0, 1.0} and ch["A"].mean() > 0.5  # validity: mostly covered


def test_align_refuses_to_overwrite_the_clean_plate(tmp_path, clip, checkpoint, capsys):
    args, must_name = _output_is_the_clean_plate(tmp_path, *clip[:2], checkpoint)
    before = files_under(tmp_path)
    _assert_one_line_error(*run(capsys, "align", *args, "--progress", "none"), must_name)
    assert files_under(tmp_path) == before


def test_corrupt_frame_mid_clip_stops_the_run_leaving_only_complete_earlier_frames(tmp_path, clip, checkpoint,
                                                                                     capsys):
    plate, clean, _ = clip
    bad = tmp_path / "plate" / "plate.1003.exr"
    bad.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "matte", plate, clean, "-o", out, "--model", checkpoint, "--progress", "none")
    _assert_one_line_error(code, stdout, err, str(bad))
    # The reader finds the bad frame before earlier ones are written, or after: either way no report,
    # no temp file, nothing for the bad frame or later, and whatever is there is a whole frame. With
    # nothing written the output folder, made for this run, is gone too.
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert set(names) <= {"plate_matte.1001.exr", "plate_matte.1002.exr"}
    assert all(is_readable(out / n, MATTE_CHANNELS) for n in names)


def test_missing_frame_is_held_with_missing_hold(tmp_path, clip, checkpoint, capsys):
    plate, clean, plates = clip
    (tmp_path / "plate" / "plate.1002.exr").unlink()
    out = tmp_path / "out"
    code, _, err = run(capsys, "matte", plate, clean, "-o", out, "--model", checkpoint, "--missing", "hold",
                       "--progress", "none")
    assert code == 0, err
    held, _ = read_channels(out / "plate_matte.1002.exr")
    first, _ = read_channels(out / "plate_matte.1001.exr")
    np.testing.assert_array_equal(rgb(held), rgb(first))
    report = json.loads((out / "howard_report.1001-1004.json").read_text())
    assert report["frames_done"] == 4 and report["settings"]["missing"] == "hold"


# --------------------------------------------------------------------------------------------------
# 5. resume after a killed run

# The real CLI, with each atomic rename delayed so the kill reliably lands mid-run (and most likely
# while a frame's temp file is written but not yet renamed into place).
_SLOW_CLI = """
import os, sys, time
_replace = os.replace
def slow_replace(src, dst):
    time.sleep(0.4)
    _replace(src, dst)
os.replace = slow_replace
from howard_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_leaves_only_complete_frames_and_resume_finishes_it(tmp_path, checkpoint, capsys):
    shot = make_shot(96, 64, plate_frames=6, clean_frames=6, seed=8)
    plates = linear_plates(shot)
    plate = write_sequence(tmp_path / "plate", "plate", plates, 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    out = tmp_path / "out"
    args = ["matte", plate, clean, "-o", out, "--model", checkpoint, "--progress", "none"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    visible = lambda: sorted(p.name for p in out.glob("*") if not p.name.startswith("."))  # noqa: E731
    try:
        deadline = time.monotonic() + 120
        while not visible():
            assert proc.poll() is None, f"the job ended before writing a frame: {proc.communicate()}"
            assert time.monotonic() < deadline, "no frame appeared in 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    survivors = visible()
    assert 1 <= len(survivors) < 6 and all(name.startswith("plate_matte.") for name in survivors)
    # Every visible frame is whole; anything else is a hidden temp file no sequence reader lists.
    for name in survivors:
        assert is_readable(out / name, MATTE_CHANNELS), name
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(".tmp-" in name for name in hidden), hidden
    kept = {name: (out / name).stat() for name in survivors}

    code, _, err = run(capsys, *args, "--resume")
    assert code == 0, err
    # The killed run wrote no report; the resumed one is named after the frames it did.
    reports = sorted(p.name for p in out.glob("howard_report.*.json"))
    assert reports == [f"howard_report.{1001 + len(survivors)}-1006.json"]
    report = json.loads((out / reports[0]).read_text())
    assert report["frames_skipped"] == len(survivors)
    assert report["frames_done"] == 6 - len(survivors)
    assert [r["frame"] for r in report["frames"]] == list(range(1001 + len(survivors), 1007))
    for name, st in kept.items():  # the frames the killed run finished were not redone
        assert (out / name).stat().st_mtime_ns == st.st_mtime_ns
    for k in range(6):  # alpha 0.5; colour premultiplied, clipped highlights carried back at half strength
        ch, _ = read_channels(out / f"plate_matte.{1001 + k}.exr")
        truth = stored(plates[k])
        clipped = np.clip(truth, 0, 1)
        np.testing.assert_allclose(ch["A"], 0.5, **HALF)
        np.testing.assert_allclose(rgb(ch), 0.5 * (clipped + 0.5 * (truth - clipped)), **HALF)


# --------------------------------------------------------------------------------------------------
# 7. --progress json


def test_compression_and_threads_reach_the_files_and_the_report(tmp_path, clip, checkpoint, capsys):
    plate, clean, plates = clip
    code, _, err = run(capsys, "matte", plate, clean, "-o", tmp_path / "out", "--model", checkpoint,
                       "--frames", "1002", "--compression", "piz", "--threads", "1", "--progress", "none")
    assert code == 0, err
    channels, spec = read_channels(tmp_path / "out" / "plate_matte.1002.exr")
    assert spec.getattribute("compression") == "piz"
    np.testing.assert_allclose(channels["A"], 0.5)
    report = json.loads((tmp_path / "out" / "howard_report.1002-1002.json").read_text())
    assert report["settings"]["threads"] == 1 and report["settings"]["compression"] == "piz"


def test_progress_json_is_one_object_per_line(tmp_path, clip, checkpoint, capsys):
    plate, clean, _ = clip
    code, out, err = run(capsys, "matte", plate, clean, "-o", tmp_path / "out", "--model", checkpoint,
                         "--frames", "1002-1004", "--progress", "json")
    assert code == 0 and notices(err) == [], err  # a checkpoint from a file counts as trained: no warning
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["start", "frame", "frame", "frame", "done"]
    start, frames, done = events[0], events[1:-1], events[-1]
    assert start["total"] == 3 and start["skipped"] == 0
    assert [e["frame"] for e in frames] == [1002, 1003, 1004]
    assert [e["done"] for e in frames] == [1, 2, 3] and all(e["total"] == 3 for e in frames)
    assert [e["output"] for e in frames] == [str(tmp_path / "out" / f"plate_matte.{n}.exr") for n in (1002, 1003, 1004)]
    assert done["done"] == 3
    assert json.loads(open(done["report"]).read())["frames_done"] == 3


@pytest.mark.parametrize("mode", ["none", "json"])
def test_default_demo_weights_are_named_without_a_terminal(tmp_path, clip, capsys, mode):
    plate, clean, _ = clip
    code, _, err = run(capsys, "matte", plate, clean, "-o", tmp_path / "out", "--frames", "1001",
                       "--progress", mode)
    lines = notices(err)
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("howard: note: ") and "demo model" in lines[0] and "synthetic" in lines[0]
    assert "weights install" in lines[0]


@pytest.mark.parametrize("mode", ["none", "json"])
def test_untrained_weights_are_reported_without_a_terminal(tmp_path, clip, capsys, mode, monkeypatch):
    from howard_core.model import checkpoint as ckpt

    monkeypatch.setattr(ckpt, "DEFAULT_WEIGHTS", tmp_path / "not bundled.pt")  # a stripped install
    plate, clean, _ = clip
    code, _, err = run(capsys, "matte", plate, clean, "-o", tmp_path / "out", "--frames", "1001",
                       "--progress", mode)
    lines = notices(err)
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("howard: warning: ") and "UNTRAINED" in lines[0]


# --------------------------------------------------------------------------------------------------
# 8. farm chunks agree with a full run


def test_farm_chunks_choose_the_same_clean_frames_as_one_run(tmp_path, capsys):
    # A clean take longer than the plate (9 frames for 6, the same camera move), so the plate->clean
    # mapping is fractional and a chunk that mapped over its own frames would pick other frames.
    shot = make_shot(256, 144, plate_frames=6, clean_frames=9, seed=12)
    plate = write_sequence(tmp_path / "plate", "plate", [srgb_to_linear(f) for f in shot.plate], 1001)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    common = ["--progress", "none"]  # the default weights: alignment is what is compared
    assert run(capsys, "matte", plate, clean, "-o", tmp_path / "full", *common)[0] == 0
    for chunk in ("1001-1003", "1004-1006"):
        assert run(capsys, "matte", plate, clean, "-o", tmp_path / "farm", "--frames", chunk, *common)[0] == 0

    full = json.loads((tmp_path / "full" / "howard_report.1001-1006.json").read_text())["frames"]
    farm = [r for chunk in ("1001-1003", "1004-1006")
            for r in json.loads((tmp_path / "farm" / f"howard_report.{chunk}.json").read_text())["frames"]]
    assert [r["frame"] for r in farm] == [r["frame"] for r in full] == list(range(1001, 1007))
    assert [r["clean_frame"] for r in farm] == [r["clean_frame"] for r in full]
    assert [r["plate_frame"] for r in farm] == list(range(6))
    corners = np.array([[0, 0, 1], [255, 0, 1], [255, 143, 1], [0, 143, 1]], np.float64).T
    for a, b in zip(full, farm, strict=True):
        assert not a["flagged"] and not b["flagged"]
        np.testing.assert_allclose(a["homography"], b["homography"], atol=1e-3)
        # ... and both are right: the plate's corners land where they truly are in the chosen clean frame.
        ours = np.linalg.inv(np.array(b["homography"])) @ corners
        true = np.linalg.inv(shot.clean_to_plate(b["clean_frame"], b["plate_frame"])) @ corners
        assert np.abs(ours[:2] / ours[2] - true[:2] / true[2]).max() < 0.5


# --------------------------------------------------------------------------------------------------
# 9. info, weights, export-nuke


def test_info_and_weights_install_then_matte_by_name(tmp_path, clip, checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("HOWARD_WEIGHTS", str(tmp_path / "weights"))
    code, out, _ = run(capsys, "info")
    info = json.loads(out)
    assert code == 0 and info["weights_dir"] == str(tmp_path / "weights") and "cpu" in info["devices"]
    assert info["versions"]["torch"] == torch.__version__
    default = info["default_weights"]  # honest about the bundled model and how to get production weights
    assert default["name"].startswith("Howard demo model") and default["path"].endswith("howard_mobilenetv2.pt")
    assert "synthetic" in default["note"] and "weights install" in default["note"]
    assert default["heldout"]["model"]["sad_div1e3"] < default["heldout"]["baseline"]["sad_div1e3"]

    code, out, _ = run(capsys, "weights", "list")
    assert code == 0 and f"weights folder: {tmp_path / 'weights'}" in out
    assert "resnet50" in out and "const05" not in out

    code, out, err = run(capsys, "weights", "install", checkpoint, "--name", "const05")
    assert code == 0, err
    assert (tmp_path / "weights" / "const05.pt").is_file()
    code, out, _ = run(capsys, "weights", "list")
    assert any(line.split()[:1] == ["const05"] and " installed" in line for line in out.splitlines())
    code, out, _ = run(capsys, "weights", "verify")
    assert code == 0 and "const05" in out and "ok" in out

    plate, clean, _ = clip
    code, _, err = run(capsys, "matte", plate, clean, "-o", tmp_path / "out", "--model", "const05",
                       "--frames", "1001", "--progress", "none")
    assert code == 0, err
    ch, _ = read_channels(tmp_path / "out" / "plate_matte.1001.exr")
    np.testing.assert_allclose(ch["A"], 0.5, **HALF)  # the installed model, not the default one
    report = json.loads((tmp_path / "out" / "howard_report.1001-1001.json").read_text())
    assert report["model"]["source"] == str(tmp_path / "weights" / "const05.pt")


def test_export_nuke_writes_loadable_torchscript(tmp_path, checkpoint, capsys):
    code, out, err = run(capsys, "export-nuke", "-o", tmp_path / "nuke" / "howard.pt", "--model", checkpoint)
    assert code == 0, err
    assert str(tmp_path / "nuke" / "howard.pt") in out
    module = torch.jit.load(str(tmp_path / "nuke" / "howard.pt"))
    x = torch.rand(1, 6, 50, 70)  # any size, not a multiple of 4
    with torch.inference_mode():
        y = module(x)
    assert y.shape == (1, 4, 50, 70)
    torch.testing.assert_close(y[:, 3], torch.full((1, 50, 70), 0.5))  # alpha: this checkpoint's
    torch.testing.assert_close(y[:, :3], x[:, :3])  # foreground = the plate


# --------------------------------------------------------------------------------------------------
# 10. demo


def test_demo_writes_contact_sheet_and_report_and_names_the_demo_model(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo", "--width", 192, "--height", 108,
                         "--frames", 3, "--progress", "none")
    assert code == 0, err
    assert "NOTE" in out and "demo model" in out and "UNTRAINED" not in out
    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] > sheet.shape[0]
    assert sheet.std() > 10  # pictures, not a blank canvas
    report = json.loads((tmp_path / "demo" / "matte" / "howard_report.1001-1003.json").read_text())
    assert report["frames_done"] == 3 and report["model"]["trained"] is True and report["model"]["demo"] is True
    for n in (1001, 1002, 1003):
        ch, spec = read_channels(tmp_path / "demo" / "matte" / f"plate_matte.{n}.exr")
        assert {"A", "fg.R", "err.Y", "ref.Y", "bg.B"} <= set(spec.channelnames)
        assert (spec.width, spec.height) == (192, 108)
    assert (tmp_path / "demo" / "inputs" / "clean_plate.mov").is_file()

"""What `howard matte` / `howard align` say about alignment at the end of a run: the frames flagged, and
loudly when every frame's alignment fell back (a clean plate of another set), so that such a run cannot
finish silently with mattes that cannot be trusted. Also the alignment QC fields in the matte report."""

import json

from test_pipeline import write_sequence

from howard_core.cli import frame_list, main, warn_alignment_fallbacks
from howard_core.synth import make_depth_shot, make_shot, srgb_to_linear


def test_every_frame_falling_back_is_said_loudly(tmp_path, capsys):
    shot = make_shot(160, 96, plate_frames=3, clean_frames=3, seed=3)
    other = make_shot(160, 96, plate_frames=1, clean_frames=3, seed=40, texture="tiles")  # another set
    plate = write_sequence(tmp_path / "plate", "plate", [srgb_to_linear(f) for f in shot.plate], 1)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in other.clean], 1)
    for command in ("matte", "align"):
        code = main([command, plate, clean, "-o", str(tmp_path / command), "--progress", "none"])
        err = capsys.readouterr().err
        assert code == 0
        assert "WARNING: alignment fell back on EVERY frame (3 of 3)" in err and "same set" in err


def test_matte_report_carries_the_alignment_qc_of_every_frame(tmp_path, capsys):
    shot = make_depth_shot(256, 144, plate_frames=2, clean_frames=3, seed=6)
    plate = write_sequence(tmp_path / "plate", "plate", [srgb_to_linear(f) for f in shot.plate], 1)
    clean = write_sequence(tmp_path / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    assert main(["matte", plate, clean, "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    assert "fell back" not in capsys.readouterr().err
    report = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    for frame in report["frames"]:
        for key in ("dense", "residual_px", "background_share", "homography_share", "exposure_source",
                    "steady_frames", "gain", "bias"):
            assert key in frame
        assert frame["dense"] in ("applied", "no gain") and 0 < frame["background_share"] <= 1


def test_partial_fallbacks_are_named(capsys):
    frames = [{"frame": 1001 + k, "fallback": "identity" if k in (2, 5) else None} for k in range(8)]
    frames[3]["fallback"] = "wider_window"  # found a fit further along the clean plate: not a fallback
    warn_alignment_fallbacks({"frames": frames, "report": "qc.json"})
    err = capsys.readouterr().err
    assert "fell back on 2 of 8 frames (1003, 1006)" in err and "qc.json" in err and "EVERY" not in err
    warn_alignment_fallbacks({"frames": frames[:2]})
    assert capsys.readouterr().err == ""
    assert frame_list(list(range(20)), limit=3) == "0, 1, 2 and 17 more"

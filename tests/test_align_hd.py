"""HD-scale alignment: a whole synthetic hand-held sequence at 1920x1080, and the benchmark's report."""

import json

import numpy as np
import pytest

from howard_core.align import SequenceAligner, corner_error
from howard_core.bench import align as bench
from howard_core.synth import make_shot


@pytest.mark.slow
def test_hd_sequence_with_different_clip_length_is_aligned_to_well_under_half_a_pixel():
    # Plate and clean take differ in length, start, exposure and camera path; the subject occludes.
    shot = make_shot(1920, 1080, plate_frames=6, clean_frames=10, seed=31, clean_offset=-2.0, clean_rate=0.8,
                     exposure_stops=-0.4, lazy=True)
    seq = SequenceAligner(6, 10, lambda j: shot.clean[j], window=2, offset=2.5, scale=1.25)
    errors, matte = [], None
    for i in range(6):
        result = seq.align_frame(i, shot.plate[i], subject_mask=matte)
        matte = shot.alpha[i]
        assert not result.flagged, result.reason
        errors.append(corner_error(result.homography, shot.clean_to_plate(result.clean_index, i),
                                   shot.plate_size))
    assert np.mean(errors) < 0.05 and max(errors) < 0.1  # the target is 0.5 px


@pytest.mark.slow
def test_howard_is_at_least_as_accurate_as_full_frame_sift_at_hd():
    report = bench.run(frames=3, seed=2)
    assert report["howard"]["corner_error_px"]["mean"] <= report["sift_full_frame"]["corner_error_px"]["mean"]
    assert report["howard"]["ms_per_frame_warm"] < report["sift_full_frame"]["ms_per_pair"]


def test_benchmark_prints_one_json_object_per_shot_kind_with_both_methods(capsys):
    assert bench.main(["--kinds", "planar,still", "--frames", "2", "--width", "192", "--height", "108",
                       "--speed-frames", "0", "--no-matte"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    reports = [json.loads(line) for line in lines]
    assert [r["kind"] for r in reports] == ["planar", "still"]
    for r in reports:
        assert r["size"] == [192, 108]
        for name in ("homography_only", "default"):
            figures = r[name]
            assert figures["background_error"] >= 0 and 0 <= figures["homography_share"] <= 1
            assert len(figures["chosen_clean_frames"]) == 2
    planar = reports[0]
    for name in ("homography_only", "default", "orb_reference", "sift_full_frame"):
        errors = planar[name]["corner_error_px"]
        assert errors["failed"] == 0 and 0 <= errors["mean"] <= errors["max"]
    assert planar["default"]["corner_error_px"]["max"] < 0.2

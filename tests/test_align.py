"""Clean-plate alignment on synthetic hand-held shots with known homographies."""

import json

import cv2
import numpy as np
import pytest

from howard_core.align import Aligner, SequenceAligner, corner_error, corner_errors, qc_report
from howard_core.align import geometry as geo
from howard_core.align import photometric as pm
from howard_core.errors import HowardError
from howard_core.synth import make_shot


def background_error(result, shot, i):
    """Mean absolute error of the aligned background against the true, noise-free plate background, over
    covered pixels away from the subject (display units)."""
    keep = result.valid & (cv2.dilate(shot.alpha[i], np.ones((5, 5), np.uint8)) == 0)
    return float(np.abs(result.background - shot.plate_background(i))[keep].mean())


@pytest.fixture(scope="module")
def shot():
    # Exposure and white balance differ between the takes, the clean take is longer and starts earlier.
    return make_shot(640, 360, plate_frames=6, clean_frames=9, seed=11, exposure_stops=0.5,
                     clean_offset=-1.0, clean_rate=0.8)


@pytest.fixture(scope="module")
def aligner():
    return Aligner()


# -- geometry ------------------------------------------------------------------------------------------


def test_resize_matrix_follows_cv2_resize():
    img = np.zeros((90, 160), np.float32)
    cv2.circle(img, (101, 37), 6, 1.0, -1)
    small = cv2.resize(img, (40, 30), interpolation=cv2.INTER_AREA)
    m = cv2.moments(img)
    ms = cv2.moments(small)
    expected = geo.project(geo.resize_matrix((160, 90), (40, 30)), [[m["m10"] / m["m00"], m["m01"] / m["m00"]]])
    assert np.allclose(expected[0], [ms["m10"] / ms["m00"], ms["m01"] / ms["m00"]], atol=0.02)


def test_corner_error_measures_misregistration_in_plate_pixels():
    h = np.array([[1.01, 0.02, 5], [-0.01, 0.99, -3], [1e-5, 0, 1]])
    assert corner_error(h, h, (640, 360)) == pytest.approx(0, abs=1e-9)
    shifted = np.array([[1, 0, 0.5], [0, 1, -1.2], [0, 0, 1.0]]) @ h
    assert np.allclose(corner_errors(h, shifted, (640, 360)), np.hypot(0.5, 1.2))


def test_implausible_fits_are_recognised():
    size = (640, 360)
    assert geo.implausibility(np.eye(3), size, size, 2.0) is None
    assert "mirrored" in geo.implausibility(np.diag([-1.0, 1, 1]), size, size, 2.0)
    assert "scale" in geo.implausibility(np.diag([3.0, 3, 1]), size, size, 2.0)
    assert geo.implausibility(np.full((3, 3), np.nan), size, size, 2.0) == "no homography"
    assert geo.implausibility(np.array([[1, 0, 0], [0, 1, 0], [-0.003, 0, 1.0]]), size, size, 2.0)
    # A different clean-plate resolution is not a zoom.
    assert geo.implausibility(geo.resize_matrix((1280, 720), size), (1280, 720), size, 1.5) is None


def test_coverage_overlap_and_the_coverage_mask():
    size = (200, 100)
    half = np.array([[1, 0, 100.0], [0, 1, 0], [0, 0, 1]])
    for exact in (size, (256, 144), (1920, 1080)):  # frames lining up exactly share every edge
        assert geo.coverage(np.eye(3), exact, exact) == pytest.approx(1.0)
        assert geo.overlap(np.eye(3), exact, exact) == pytest.approx(1.0)
    assert geo.coverage(half, size, size) == pytest.approx(0.5)
    assert geo.overlap(half, size, size) == pytest.approx(1 / 3)
    assert geo.coverage(np.diag([2.0, 2, 1]), size, size) == 1.0
    assert geo.overlap(np.diag([2.0, 2, 1]), size, size) == pytest.approx(0.25, abs=0.01)
    assert geo.coverage(np.array([[1, 0, 500.0], [0, 1, 0], [0, 0, 1]]), size, size) == 0.0
    h = np.array([[1.02, 0.03, 7.3], [-0.02, 0.99, -4.1], [2e-4, -1e-4, 1]])
    mask = geo.coverage_mask(h, size, size)
    footprint = cv2.warpPerspective(np.full((100, 200), 255, np.uint8), h, size, flags=cv2.INTER_LINEAR)
    assert not np.any(mask & (footprint < 255))  # never claims a pixel the clean frame does not fill
    assert mask.sum() > 0.97 * (footprint == 255).sum()


# -- exposure ------------------------------------------------------------------------------------------


def test_exposure_fit_recovers_gain_and_bias_despite_a_foreign_object():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.05, 0.9, (120, 160, 3)).astype(np.float32)
    gain, bias = np.array([1.3, 0.9, 1.1]), np.array([0.02, -0.01, 0.0])
    plate = (clean * gain + bias).astype(np.float32) + rng.normal(0, 0.01, clean.shape).astype(np.float32)
    plate[30:70, 40:90] = rng.uniform(0, 1, (40, 50, 3))  # something the mask does not know about
    g, b = pm.fit_exposure(clean, np.clip(plate, 0, 1), np.ones((120, 160), bool))
    assert np.allclose(g, gain, atol=0.02) and np.allclose(b, bias, atol=0.01)


def test_subject_estimate_finds_the_disagreement_not_the_noise():
    rng = np.random.default_rng(1)
    residual = np.abs(rng.normal(0, 0.01, (90, 160))).astype(np.float32)
    residual[30:60, 70:90] += 0.3  # the subject
    valid = np.ones((90, 160), bool)
    mask = pm.subject_estimate(residual, valid, grow=3)
    assert mask[30:60, 70:90].all() and mask[27, 80] and not mask[20, 80]
    assert mask.sum() < 2 * 36 * 26
    assert not pm.subject_estimate(residual, np.zeros_like(valid), grow=3).any()


# -- one frame ------------------------------------------------------------------------------------------


def test_aligns_a_frame_to_within_a_tenth_of_a_pixel_and_matches_exposure(shot, aligner):
    i, js = 3, list(range(3, 8))
    result = aligner.align(shot.plate[i], [shot.clean[j] for j in js])
    j = js[result.index]
    assert corner_error(result.homography, shot.clean_to_plate(j, i), shot.plate_size) < 0.1
    assert not result.flagged and result.fallback is None
    assert result.background.shape == (360, 640, 3) and result.background.dtype == np.float32
    assert result.valid.shape == (360, 640) and result.valid.dtype == bool
    assert 0.9 < result.valid.mean() <= result.coverage + 0.01
    # Half a stop brighter clean take, matched back: what is left is the sensor noise of one take.
    assert background_error(result, shot, i) < 0.012
    unmatched = Aligner(exposure=False).align(shot.plate[i], [shot.clean[j]])
    assert background_error(unmatched, shot, i) > 0.05
    # Where the clean plate does not reach, the plate fills in.
    assert np.array_equal(result.background[~result.valid], shot.plate[i][~result.valid])


def test_chooses_a_covering_candidate_and_records_why(shot, aligner):
    i = 2
    # Candidate 0 is the right frame cropped to its left half: it matches but covers less of the plate.
    j = 2
    cropped = np.ascontiguousarray(shot.clean[j][:, :320])
    result = aligner.align(shot.plate[i], [cropped, shot.clean[j], shot.clean[j + 1]])
    assert result.index in (1, 2)
    qc = result.to_qc()
    assert qc["candidates"][0]["coverage"] < 0.6
    assert "lowest coarse score" in qc["reason"] and "runner-up" in qc["reason"]
    json.dumps(qc)


def test_subject_mask_and_other_size_clean_plate():
    # Odd plate size, clean plate at a higher resolution, a big subject the matte tells us about.
    s = make_shot(333, 187, plate_frames=2, clean_frames=3, seed=4, clean_width=500, clean_height=281,
                  subject_scale=0.95)
    result = Aligner().align(s.plate[1], list(s.clean), subject_mask=s.alpha[0])
    j = result.index
    assert corner_error(result.homography, s.clean_to_plate(j, 1), s.plate_size) < 0.15
    assert result.background.shape == (187, 333, 3)
    assert background_error(result, s, 1) < 0.015


@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_hd_frame_is_aligned_to_well_under_half_a_pixel(detector):
    s = make_shot(1920, 1080, plate_frames=1, clean_frames=3, seed=21, lazy=True)
    result = Aligner(detector=detector).align(s.plate[0], [s.clean[j] for j in range(3)])
    err = corner_error(result.homography, s.clean_to_plate(result.index, 0), s.plate_size)
    assert err < 0.25
    assert not result.flagged


# -- failure cases -------------------------------------------------------------------------------------


def test_blank_candidates_fall_back_without_crashing(shot, aligner):
    blank = np.full((360, 640, 3), 0.4, np.float32)
    result = aligner.align(shot.plate[0], [blank, blank])
    assert result.flagged and result.fallback == "identity"
    assert np.all(np.isfinite(result.background)) and result.background.shape == (360, 640, 3)
    assert "featureless" in result.reason
    # Among good candidates a blank one is simply passed over.
    mixed = aligner.align(shot.plate[0], [blank, shot.clean[1], blank])
    assert mixed.index == 1 and not mixed.flagged
    assert mixed.to_qc()["candidates"][0]["status"].startswith("rejected")


def test_blank_plate_is_flagged(shot, aligner):
    result = aligner.align(np.zeros((360, 640, 3), np.float32), [shot.clean[0], shot.clean[1]])
    assert result.flagged and result.fallback is not None


def test_no_overlap_is_flagged():
    wide = make_shot(640, 200, plate_frames=1, clean_frames=1, seed=6, camera_motion=0.0, clean_deviation=0.0)
    plate = np.ascontiguousarray(wide.plate[0][:, :320])
    clean = np.ascontiguousarray(wide.clean[0][:, 320:])  # the same scene, the other half of it
    other = make_shot(320, 200, plate_frames=1, clean_frames=1, seed=7).clean[0]  # another scene
    for candidates in ([clean], [other], [clean, other]):
        result = Aligner().align(plate, candidates)
        assert result.flagged and result.fallback == "identity"


def test_repeated_texture_is_aligned_by_tracking_or_flagged():
    s = make_shot(320, 180, plate_frames=4, clean_frames=4, seed=2, texture="tiles")
    seq = SequenceAligner(4, 4, lambda j: s.clean[j], window=1)
    for i in range(4):
        result = seq.align_frame(i, s.plate[i])
        # A fit off by a whole repeat looks right but is not: it must at least be flagged.
        err = corner_error(result.homography, s.clean_to_plate(result.clean_index, i), s.plate_size)
        assert err < 0.2 or result.flagged
        assert background_error(result, s, i) < 0.015


def test_sequence_falls_back_to_a_neighbouring_frame(shot):
    blank = np.full((360, 640, 3), 0.5, np.float32)
    reads = []

    def get_clean(j):
        reads.append(j)
        return blank if j == 4 else shot.clean[j]

    # Window 0: one candidate per frame; plate frame 3 maps onto the blank clean frame.
    seq = SequenceAligner(6, 9, get_clean, window=0, offset=1.0, scale=1.0)
    results = [seq.align_frame(i, shot.plate[i]) for i in range(6)]
    bad = results[3]
    assert bad.flagged and bad.fallback == "wider_window" and bad.clean_index != 4
    assert corner_error(bad.homography, shot.clean_to_plate(bad.clean_index, 3), shot.plate_size) < 0.1
    assert not any(r.flagged for k, r in enumerate(results) if k != 3)
    report = qc_report(results)
    assert report["summary"]["flagged"] == [3]
    assert report["summary"]["fallbacks"] == {"wider_window": 1}
    assert seq.qc_report()["frames"] == json.loads(json.dumps(report["frames"]))
    # A caller keeping its own records (the pipeline) gets the same fits without a second copy of the QC.
    lean = SequenceAligner(6, 9, get_clean, window=0, offset=1.0, scale=1.0, keep_qc=False)
    again = [lean.align_frame(i, shot.plate[i]) for i in range(6)]
    assert [r.clean_index for r in again] == [r.clean_index for r in results]
    assert lean.qc_report()["frames"] == []


# -- sequences -----------------------------------------------------------------------------------------


def test_candidate_windows_follow_the_timeline_mapping():
    seq = SequenceAligner(11, 21, lambda j: None, window=2)
    assert seq.candidates(0) == [0, 1, 2, 3, 4]
    assert seq.candidates(5) == [8, 9, 10, 11, 12]
    assert seq.candidates(10) == [16, 17, 18, 19, 20]
    shifted = SequenceAligner(11, 21, lambda j: None, window=1, offset=6, scale=1.0)
    assert shifted.candidates(0) == [5, 6, 7] and shifted.candidates(10) == [15, 16, 17]
    short = SequenceAligner(10, 2, lambda j: None, window=3)
    assert short.candidates(7) == [0, 1]


def test_sequence_is_accurate_reads_each_clean_frame_once_and_keeps_a_bounded_cache(shot):
    reads = []

    def get_clean(j):
        reads.append(j)
        return shot.clean[j]

    # The takes' timing as the shot was made: clean frame = (plate time + 1) / 0.8.
    seq = SequenceAligner(6, 9, get_clean, window=2, offset=1.25, scale=1.25, cache_frames=5)
    errors = []
    matte = None
    for i in range(6):
        result = seq.align_frame(i, shot.plate[i], subject_mask=matte)
        matte = shot.alpha[i]  # the "previous frame's matte"
        assert result.clean_index in seq.candidates(i)
        errors.append(corner_error(result.homography, shot.clean_to_plate(result.clean_index, i),
                                   shot.plate_size))
        assert len(seq._cache) <= 5
    assert max(errors) < 0.1
    assert sorted(reads) == sorted(set(reads))  # each frame read once, walking forward
    report = seq.qc_report(plate="plate.####.exr")
    assert report["plate"] == "plate.####.exr" and report["summary"]["frames"] == 6
    frame = json.loads(json.dumps(report))["frames"][0]
    for key in ("clean_frame", "inliers", "inlier_ratio", "score", "coverage", "gain", "bias", "fallback",
                "flagged", "reason"):
        assert key in frame


@pytest.mark.parametrize("seed", [0, 3])
def test_timing_estimate_recovers_offset_and_scale(seed):
    # The clean take started 6 plate frames before the move, runs at the plate's rate and is twice as long;
    # its hand-held pass retraces the move closely.
    s = make_shot(256, 144, plate_frames=12, clean_frames=24, seed=seed, clean_offset=-6.0, clean_rate=1.0,
                  camera_motion=2.5, clean_deviation=0.1, lazy=True)
    seq = SequenceAligner(12, 24, lambda j: s.clean[j], window=1)
    assert seq.clean_position(11) == pytest.approx(23)  # the default: ends matched linearly
    timing = seq.estimate_timing(lambda i: s.plate[i], samples=12)
    assert timing.estimated and seq.timing is timing
    for i in (0, 6, 11):
        assert abs(seq.clean_position(i) - s.matching_clean_index(i)) <= 1.0


def test_timing_estimate_keeps_the_mapping_when_the_clean_plate_is_locked_off():
    s = make_shot(256, 144, plate_frames=8, clean_frames=16, seed=1, camera_motion=0.0, lazy=True)
    seq = SequenceAligner(8, 16, lambda j: s.clean[j], window=1, offset=2.0, scale=1.5)
    timing = seq.estimate_timing(lambda i: s.plate[i], keys=4, samples=8)
    assert not timing.estimated and "locked off" in timing.note
    assert (timing.offset, timing.scale) == (2.0, 1.5)


# -- errors --------------------------------------------------------------------------------------------


def test_user_errors_name_the_frame_and_the_fix(shot, aligner):
    plate = shot.plate[0]
    with pytest.raises(HowardError, match="plate frame 4.*3-channel"):
        aligner.align(plate[..., 0], [shot.clean[0]], plate_label="plate frame 4")
    with pytest.raises(HowardError, match="float"):
        aligner.align((plate * 255).astype(np.uint8), [shot.clean[0]])
    nan = shot.clean[0].copy()
    nan[10, 10] = np.nan
    with pytest.raises(HowardError, match="clean-plate candidate 0.*NaN"):
        aligner.align(plate, [nan])
    with pytest.raises(HowardError, match="no clean-plate candidates"):
        aligner.align(plate, [])
    with pytest.raises(HowardError, match="subject mask"):
        aligner.align(plate, [shot.clean[0]], subject_mask=np.zeros((10, 10)))
    seq = SequenceAligner(2, 2, lambda j: np.zeros((5, 5)))
    with pytest.raises(HowardError, match="clean-plate frame 0"):
        seq.align_frame(0, plate)
    with pytest.raises(HowardError, match="plate frame 7"):
        seq.align_frame(7, plate)

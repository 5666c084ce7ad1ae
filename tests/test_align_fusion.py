"""Fusion of several aligned clean-plate frames (`howard_core.align.fusion`), and the sequence holding the
fused clean plate while a locked-off plate holds still."""

import cv2
import numpy as np

from howard_core.align import SequenceAligner, qc_report
from howard_core.align.fusion import fuse
from howard_core.synth import make_depth_shot


def align_all(shot, frames, clean_frames, **options):
    seq = SequenceAligner(frames, clean_frames, lambda j: shot.clean[j], window=2, **options)
    return [seq.align_frame(i, shot.plate[i]) for i in range(frames)]


def background_error(result, shot, i):
    """Mean absolute error (8-bit levels) of the aligned clean plate against the true background, on the
    covered background away from the subject."""
    keep = result.valid & (cv2.dilate(shot.alpha[i], np.ones((9, 9), np.uint8)) == 0)
    return float(np.abs(result.background - shot.plate_background(i))[keep].mean()) * 255


def test_fusion_averages_noise_away_and_ignores_a_frame_where_it_is_off():
    rng = np.random.default_rng(3)
    truth = cv2.GaussianBlur(rng.random((180, 320, 3), np.float32), (0, 0), 2) * 0.6 + 0.2
    noisy = [np.clip(truth + rng.normal(0, 0.01, truth.shape).astype(np.float32), 0, 1) for _ in range(4)]
    plate = noisy[0]
    reference, others = noisy[1], [noisy[2], noisy[3]]
    # The last frame is misplaced over the left half (a spot its alignment got wrong).
    wrong = others[1].copy()
    wrong[:, :160] = np.roll(wrong, 6, axis=1)[:, :160]
    everywhere = np.ones(truth.shape[:2], bool)
    out = fuse(reference, everywhere, [(others[0], everywhere), (wrong, everywhere)], plate, None)
    err = {name: np.abs(img - truth)[:, 20:-20].mean(axis=(0, 2)) for name, img in
           (("ref", reference), ("fused", out))}
    left, right = slice(10, 130), slice(170, 270)
    assert err["fused"][right].mean() < 0.7 * err["ref"][right].mean()  # three frames averaged
    assert err["fused"][left].mean() < 0.9 * err["ref"][left].mean()  # two: the misplaced one left out
    # Where a frame does not cover, the reference stands; where the reference does not, it stays as it is.
    half = everywhere.copy()
    half[:, 160:] = False
    out = fuse(reference, half, [(others[0], everywhere), (others[0], everywhere)], plate, None)
    assert np.array_equal(out[:, 160:], reference[:, 160:])


def test_a_still_plate_gets_a_fused_clean_plate_held_bit_for_bit():
    s = make_depth_shot(480, 270, plate_frames=4, clean_frames=7, seed=12, plate_still=True, subject_still=True)
    single = align_all(s, 4, 7, fuse_frames=0)
    results = align_all(s, 4, 7)
    first = results[0]
    # Where the alignment starts, the other candidates of the window are fused in...
    assert len(first.fused) == 4 and first.clean_index not in first.fused
    assert "fused with" in first.reason
    # ... which brings the clean plate closer to the true background than the chosen frame alone ...
    assert background_error(first, s, 0) < 0.85 * background_error(single[0], s, 0)
    # ... and while the plate holds still, that clean plate is kept exactly (the border, uncovered by the
    # clean take, is each plate frame's own).
    for r in results[1:]:
        assert r.still and r.steady > 1 and r.fused == first.fused
        assert np.array_equal(r.background[r.valid], first.background[first.valid])
        assert "fused clean plate of plate frame 0 kept" in r.reason
    assert [f["fused"] for f in qc_report(results)["frames"]] == [list(first.fused)] * 4


def test_a_moving_plate_is_fused_only_where_the_alignment_starts():
    s = make_depth_shot(320, 180, plate_frames=2, clean_frames=4, seed=13)
    results = align_all(s, 2, 4)
    assert len(results[0].fused) > 0
    assert not results[1].still and results[1].fused == ()

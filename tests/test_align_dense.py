"""The pieces of alignment beyond the homography: the dense residual warp (`align.dense`) and exposure
from background only (`photometric.background_exposure`), on arrays the tests make."""

import cv2
import numpy as np
import pytest

from howard_core.align import dense as dn
from howard_core.align import geometry as geo
from howard_core.align import photometric as pm
from howard_core.synth import make_depth_shot


def test_fill_keeps_measured_motion_and_fills_holes_from_the_surroundings():
    h, w = 90, 160
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0] = np.linspace(-2, 2, w)[None, :]
    known = np.ones((h, w), bool)
    known[20:70, 50:110] = False
    noisy = flow.copy()
    noisy[~known] = 50.0  # what a subject does to the raw flow
    filled = dn.fill(noisy, known, np.zeros((h, w), np.float32))
    assert np.array_equal(filled[known], flow[known])
    assert np.abs(filled[~known] - flow[~known]).max() < 0.6


def test_sampling_map_is_the_homography_when_there_is_no_residual_motion():
    size, small = (333, 187), (160, 90)
    h = np.array([[1.01, 0.02, 5], [-0.01, 0.99, -3], [1e-5, 2e-5, 1]])
    m = dn.sampling_map(h, np.zeros((small[1], small[0], 2), np.float32), size, geo.resize_matrix(size, small))
    xs, ys = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    exact = geo.project(np.linalg.inv(h), np.c_[xs.ravel(), ys.ravel()]).reshape(size[1], size[0], 2)
    assert np.abs(m - exact).max() < 1e-3


def test_residual_motion_is_measured_on_background_and_filled_under_the_subject():
    base = make_depth_shot(240, 140, plate_frames=1, clean_frames=1, seed=2, subject=None, noise=0.0).plate[0]
    shift = np.float32([[1, 0, 1.5], [0, 1, -0.75]])  # warped clean x + (1.5, -0.75) = plate x
    warped = cv2.warpAffine(base, shift, (240, 140), borderMode=cv2.BORDER_REFLECT)
    plate = base.copy()
    plate[40:100, 90:150] = (0.9, 0.2, 0.3)  # a subject
    # (the set's own depth is no concern here: one frame, no camera move, a pure shift)
    res = dn.estimate(plate, warped, np.ones((140, 240), bool), noise=0.01, scale=2.0, grow=3)
    assert res.subject[45:95, 95:145].all() and not res.subject[:20].any()
    bg = res.reliable
    assert bg.mean() > 0.5
    assert np.abs(np.median(res.flow[bg], axis=0) - (1.5, -0.75)).max() < 0.1
    # Under the subject: the surrounding background's motion, not the subject's.
    assert np.abs(np.median(res.flow[50:90, 100:140].reshape(-1, 2), axis=0) - (1.5, -0.75)).max() < 0.2
    assert res.magnitude == pytest.approx(2 * np.hypot(1.5, 0.75), rel=0.1)


def test_exposure_from_background_only_even_when_the_subject_fills_most_of_the_frame():
    rng = np.random.default_rng(2)
    clean = cv2.GaussianBlur(rng.uniform(0.05, 0.9, (120, 160, 3)).astype(np.float32), (0, 0), 1.0)
    gain, bias = np.array([1.2, 1.1, 0.9]), np.array([0.01, 0.0, -0.01])
    plate = np.clip(clean * gain + bias + rng.normal(0, 0.005, clean.shape), 0, 1).astype(np.float32)
    plate[:, 30:] = cv2.GaussianBlur(rng.uniform(0, 1, (120, 130, 3)).astype(np.float32), (0, 0), 2.0)  # 80%
    valid = np.ones((120, 160), bool)
    g, b, bg, source = pm.background_exposure(clean, plate, valid)
    assert source == "fit" and np.allclose(g, gain, atol=0.05) and np.allclose(b, bias, atol=0.03)
    assert bg[:, :25].mean() > 0.8 and bg[:, 40:].mean() < 0.2
    # An exact clean plate keeps unit gain and zero bias; a prior that does better is taken.
    same = np.clip(clean + rng.normal(0, 0.005, clean.shape), 0, 1).astype(np.float32)
    g, b, _, source = pm.background_exposure(clean, same, valid)
    assert source == "identity" and np.array_equal(g, np.ones(3)) and np.array_equal(b, np.zeros(3))
    g, b, _, source = pm.background_exposure(clean, plate, valid, priors=(("previous frames", gain, bias),))
    assert source == "previous frames" and np.array_equal(g, gain)

"""Matting errors on constructed mattes whose answers follow from the definitions."""

import numpy as np
import pytest

from howard_core.train import metrics

H, W = 40, 60


def edge(col: int) -> np.ndarray:
    a = np.zeros((H, W))
    a[:, col:] = 1.0
    return a


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sad_and_mse_of_a_shifted_edge(k):
    true, pred = edge(30), edge(30 - k)  # k extra columns of foreground, each H pixels of error 1
    assert metrics.sad(pred, true) == pytest.approx(k * H)
    assert metrics.mse(pred, true) == pytest.approx(k * H / (H * W))
    region = np.zeros((H, W), bool)
    region[:, 30 - k:30 + 5] = True  # a band around the edge, as a trimap's unknown region would be
    assert metrics.mse(pred, true, region) == pytest.approx(k * H / region.sum())
    errors = metrics.matting_errors(pred, true)
    assert errors["sad_div1e3"] == pytest.approx(k * H / 1e3)
    assert errors["mse_x1e3"] == pytest.approx(k * H / (H * W) * 1e3)


def test_half_transparent_prediction_halves_sad():
    true = edge(20)
    assert metrics.sad(0.5 * true, true) == pytest.approx(0.5 * true.sum())


def test_gradient_error_scales_quadratically_and_adds_for_distant_edges():
    true = edge(15)
    assert metrics.gradient_error(true, true) == 0
    flat = metrics.gradient_error(np.zeros_like(true), true)  # all of the true edge's gradient energy
    assert flat > 0
    # The gradient is linear in alpha, so a half-strength edge leaves a quarter of the energy missing.
    assert metrics.gradient_error(0.5 * true, true) == pytest.approx(0.25 * flat)
    # An edge moved far beyond the filter's reach: energy missing at the old place plus spurious at the new.
    moved = edge(45)
    assert metrics.gradient_error(moved, true) == pytest.approx(2 * flat)


def test_connectivity_error():
    true = np.zeros((H, W))
    true[5:30, 5:30] = 1.0  # main body A
    true[5:10, 45:50] = 1.0  # a small part B, detached from A
    assert metrics.connectivity_error(true, true) == 0
    # B predicted at half strength: B never joins the largest component, so its level is 0 and
    # phi = 1 - alpha there: |(1 - 0.5) - (1 - 1)| = 0.5 per pixel of B.
    pred = true.copy()
    pred[5:10, 45:50] = 0.5
    assert metrics.connectivity_error(pred, true) == pytest.approx(0.5 * 25)
    # A spurious island of full alpha: phi_pred = 0, phi_true = 1 on each of its pixels.
    pred = true.copy()
    pred[32:36, 40:43] = 1.0
    assert metrics.connectivity_error(pred, true) == pytest.approx(12)
    # Below the minimum degree (0.15) a stray value costs nothing.
    pred[32:36, 40:43] = 0.1
    assert metrics.connectivity_error(pred, true) == 0
    # A too-weak body: at t = 0.6 the body leaves the component (level 0.5); the prediction 0.55 is
    # within 0.15 of it (phi 1) while the truth is 0.5 above it (phi 0.5): 0.5 per body pixel.
    pred = true.copy()
    pred[5:30, 5:30] = 0.55
    assert metrics.connectivity_error(pred, true) == pytest.approx(0.5 * 25 * 25)


def test_foreground_mse_counts_only_where_the_subject_is():
    true_pha = edge(30)
    true_fgr = np.full((H, W, 3), 0.2)
    pred_fgr = true_fgr.copy()
    pred_fgr[:, :30] = 1.0  # wrong where alpha is 0: ignored
    pred_fgr[:, 30:] += 0.1  # off by 0.1 where the subject is
    assert metrics.foreground_mse(pred_fgr, true_fgr, true_pha) == pytest.approx(0.01)
    errors = metrics.matting_errors(true_pha, true_pha, pred_fgr, true_fgr)
    assert errors["fgr_mse_x1e3"] == pytest.approx(10.0)
    assert set(errors) == {"sad_div1e3", "mse_x1e3", "grad_div1e3", "conn_div1e3", "fgr_mse_x1e3"}


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError):
        metrics.sad(np.zeros((4, 4)), np.zeros((4, 5)))

"""The BGMv2 training losses."""

import torch
import torch.nn.functional as F

from howard_core.train.losses import base_loss, refine_loss, sobel


def truth(h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pha = torch.zeros(2, 1, h, w)
    pha[:, :, 8:24, 10:20] = 1.0
    pha[:, :, 8:24, 20:22] = 0.5  # a soft edge
    fgr = torch.rand(2, 3, h, w, generator=g)
    return pha, fgr


def test_sobel_of_a_unit_step_is_half_beside_the_edge():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0
    g = sobel(x)
    # Normalised Sobel: (1 + 2 + 1) / 8 = 0.5 on both columns touching the step, ~0 elsewhere.
    torch.testing.assert_close(g[..., 3:5], torch.full((1, 1, 8, 2), 0.5), atol=1e-5, rtol=0)
    assert float(g[..., :3].max()) < 2e-3 and float(g[..., 5:].max()) < 2e-3


def test_base_loss_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    pha, fgr = truth()
    total, terms = base_loss(pha, fgr, torch.zeros_like(pha), pha, fgr)
    assert float(total) == 0 and set(terms) == {"pha_l1", "pha_grad", "fgr_l1", "err_mse"}

    wrong_pha = pha.roll(3, dims=3)
    total, terms = base_loss(wrong_pha, fgr, torch.zeros_like(pha), pha, fgr)
    assert terms["pha_l1"] > 0 and terms["pha_grad"] > 0 and terms["err_mse"] > 0
    # The error head is right when it predicts the actual alpha error.
    _, terms = base_loss(wrong_pha, fgr, (wrong_pha - pha).abs(), pha, fgr)
    assert terms["err_mse"] == 0

    outside = torch.where(pha == 0, 1 - fgr, fgr)
    assert float(base_loss(pha, outside, torch.zeros_like(pha), pha, fgr)[0]) == 0  # masked by alpha > 0
    _, terms = base_loss(pha, fgr * 0.5, torch.zeros_like(pha), pha, fgr)
    assert terms["fgr_l1"] > 0


def test_error_target_is_detached_from_alpha():
    pha, fgr = truth()
    pred = pha.clone().requires_grad_(True)
    total, _ = base_loss(pred, fgr, torch.full_like(pha, 0.3), pha, fgr)
    total.backward()
    # Alpha is exact, so L1 terms give zero gradient; a non-detached error target would not.
    assert float(pred.grad.abs().max()) == 0


def test_refine_loss_covers_both_resolutions():
    pha, fgr = truth(64, 64)
    pha_sm = F.interpolate(pha, size=(16, 16), mode="bilinear", align_corners=False)
    fgr_sm = F.interpolate(fgr, size=(16, 16), mode="bilinear", align_corners=False)
    up = F.interpolate(pha_sm, size=(64, 64), mode="bilinear", align_corners=False)
    total, terms = refine_loss(pha, fgr, pha_sm, fgr_sm, torch.zeros_like(pha_sm), pha, fgr)
    assert set(terms) == {"pha_l1", "pha_grad", "fgr_l1", "pha_l1_sm", "pha_grad_sm", "fgr_l1_sm", "err_mse"}
    for k, v in terms.items():
        if k != "err_mse":
            assert v == 0, k
    # With a silent error head, the error term is the mean squared coarse-to-full alpha error.
    torch.testing.assert_close(torch.tensor(terms["err_mse"]), ((up - pha) ** 2).mean())

    flat = torch.full_like(pha, 0.25)  # a matte that survives down- and up-sampling exactly
    flat_sm = torch.full_like(pha_sm, 0.25)
    total, _ = refine_loss(flat, fgr, flat_sm, fgr_sm, torch.zeros_like(pha_sm), flat, fgr)
    assert float(total) == 0

    _, terms = refine_loss(pha, fgr, pha_sm.roll(2, dims=3), fgr_sm, torch.zeros_like(pha_sm), pha, fgr)
    assert terms["pha_l1_sm"] > 0 and terms["pha_l1"] == 0

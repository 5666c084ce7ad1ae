"""The published BGMv2 training losses (Lin et al., CVPR 2021, and its training scripts).

Base stage, on the base network's output at the training resolution::

    L1(pha, pha*) + L1(sobel(pha), sobel(pha*)) + L1(fgr * m, fgr* * m) + MSE(err, |pha - pha*|)

where m = (pha* > 0): the foreground colour is only defined where the subject is.
The error map learns to predict the network's own absolute alpha error; that
target is detached so this term teaches `err` without pulling on `pha`.

Refine stage: the same alpha, gradient and foreground terms on the full
resolution output *and* on the coarse output against bilinearly downsampled
truth, plus the error term at full resolution (coarse error and coarse alpha
bilinearly upsampled, as the published script does). The published script
does not detach the coarse alpha inside that error target; we do, for the same
reason as in the base stage.

All tensors are (B, C, H, W) float, alpha C=1 and foreground C=3 in sRGB 0..1.
Each function returns `(total, terms)` with `terms` a dict of detached scalars.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Normalised 3x3 Sobel kernels (weights sum of |.| = 8), as in the published recipe's kornia.sobel.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def sobel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Gradient magnitude (B, C, H, W) of x (B, C, H, W), replicate borders.

    `eps` under the square root keeps the derivative finite where the image is flat.
    """
    c = x.shape[1]
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    gx, gy = g[:, 0::2], g[:, 1::2]
    return torch.sqrt(gx * gx + gy * gy + eps)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _matte_terms(pha, fgr, true_pha, true_fgr, suffix: str = "") -> dict[str, torch.Tensor]:
    mask = (true_pha > 0).to(fgr.dtype)
    return {
        f"pha_l1{suffix}": F.l1_loss(pha, true_pha),
        f"pha_grad{suffix}": F.l1_loss(sobel(pha), sobel(true_pha)),
        f"fgr_l1{suffix}": F.l1_loss(fgr * mask, true_fgr * mask),
    }


def _finish(terms: dict[str, torch.Tensor]):
    total = torch.stack(list(terms.values())).sum()
    return total, {k: float(v.detach()) for k, v in terms.items()}


def base_loss(pred_pha, pred_fgr, pred_err, true_pha, true_fgr):
    """Base-stage loss. pred_pha/pred_err/true_pha (B, 1, H, W), pred_fgr/true_fgr (B, 3, H, W)."""
    terms = _matte_terms(pred_pha, pred_fgr, true_pha, true_fgr)
    terms["err_mse"] = F.mse_loss(pred_err, (pred_pha.detach() - true_pha).abs())
    return _finish(terms)


def refine_loss(pred_pha, pred_fgr, pred_pha_sm, pred_fgr_sm, pred_err_sm, true_pha, true_fgr):
    """Refine-stage loss.

    pred_pha (B, 1, H, W), pred_fgr (B, 3, H, W) at full resolution; the coarse
    pred_pha_sm/pred_err_sm (B, 1, h, w) and pred_fgr_sm (B, 3, h, w) at the
    base network's resolution; truth at full resolution.
    """
    small = pred_pha_sm.shape[2:]
    true_pha_sm = _resize(true_pha, small)
    true_fgr_sm = _resize(true_fgr, small)
    terms = _matte_terms(pred_pha, pred_fgr, true_pha, true_fgr)
    terms.update(_matte_terms(pred_pha_sm, pred_fgr_sm, true_pha_sm, true_fgr_sm, "_sm"))
    full = true_pha.shape[2:]
    terms["err_mse"] = F.mse_loss(_resize(pred_err_sm, full), (_resize(pred_pha_sm.detach(), full) - true_pha).abs())
    return _finish(terms)

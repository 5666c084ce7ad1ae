"""The BGMv2 two-stage matting network: `MattingBase` and `MattingRefine`.

This is the reference implementation: plain modules whose state_dict matches the
official checkpoints key for key and whose arithmetic follows the published
model step for step (see `../shared/bgmv2/ARCHITECTURE.md`). The fast inference
path lives in `engine.Matter`, which is tested against this file.

Conventions: images are float32 (B, 3, H, W) display-referred sRGB in 0..1;
alpha, error and refinement maps are (B, 1, H, W); every bilinear resize uses
`align_corners=False`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from howard_core.settings import REFINE_MODES

from .backbones import make_backbone

HIDDEN_CHANNELS = 32
OUT_CHANNELS = 1 + 3 + 1 + HIDDEN_CHANNELS  # alpha, foreground residual, error, hidden
# Where each output sits in the decoder's channels, for code outside the scripted modules
# (TorchScript resolves no module-level slices: the modules below index with the same numbers).
ALPHA, FOREGROUND, ERROR, HIDDEN = slice(0, 1), slice(1, 4), slice(4, 5), slice(5, None)
ALPHA_FOREGROUND = slice(0, 4)  # alpha and foreground residual side by side
# The refining model's run-time settings (as MattingRefine and Matter take them).
REFINE_SETTINGS = ("backbone_scale", "refine_mode", "refine_sample_pixels", "refine_threshold")



def _zero_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zeros `pad` pixels wide around (N, C, H, W). constant_pad_nd, not F.pad: torch 2.x scripts
    F.pad to aten::pad, which libtorch before 1.13 (Nuke 13 to 15.0) cannot load."""
    return torch.constant_pad_nd(x, [pad, pad, pad, pad], 0.0)

class ASPPPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for layer in self:
            x = layer(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation if kernel == 3 else 0
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, rates (3, 6, 9), 256 channels out."""

    def __init__(self, cin: int, rates=(3, 6, 9), cout: int = 256):
        super().__init__()
        branches = [_conv_bn_relu(cin, cout, 1)]
        branches += [_conv_bn_relu(cin, cout, 3, r) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(cout * len(branches), cout, 1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class Decoder(nn.Module):
    """Upsample-and-concatenate decoder: 256 -> 128 -> 64 -> 48 -> 37 channels."""

    def __init__(self, tap_channels, channels=(256, 128, 64, 48, OUT_CHANNELS)):
        super().__init__()
        c3, c2, c1, c0 = tap_channels
        self.conv1 = nn.Conv2d(channels[0] + c3, channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(channels[1] + c2, channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(channels[2] + c1, channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(channels[3] + c0, channels[4], 3, padding=1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _up_cat(x: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=tap.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([x, tap], dim=1)

    def forward(self, x4, x3, x2, x1, x0):
        x = self.relu(self.bn1(self.conv1(self._up_cat(x4, x3))))
        x = self.relu(self.bn2(self.conv2(self._up_cat(x, x2))))
        x = self.relu(self.bn3(self.conv3(self._up_cat(x, x1))))
        return self.conv4(self._up_cat(x, x0))


class MattingBase(nn.Module):
    """Coarse pass: backbone + ASPP + decoder on `cat([src, bgr])`.

    forward(src, bgr) with src, bgr (B, 3, H, W) in 0..1, H and W multiples of 16
    in practice (the encoder's output stride), returns `(pha, fgr, err, hid)`:
    alpha (B, 1, H, W) in 0..1, foreground (B, 3, H, W) in 0..1, error map
    (B, 1, H, W) in 0..1 and hidden features (B, 32, H, W) >= 0.
    """

    def __init__(self, backbone: str = "mobilenetv2"):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = make_backbone(backbone)
        taps = self.backbone.channels
        self.aspp = ASPP(taps[0])
        self.decoder = Decoder(taps[1:])

    def coarse(self, src: torch.Tensor, bgr: torch.Tensor) -> torch.Tensor:
        """The raw 37-channel decoder output (B, 37, H, W), before clamps and activations."""
        x4, x3, x2, x1, x0 = self.backbone(torch.cat([src, bgr], dim=1))
        return self.decoder(self.aspp(x4), x3, x2, x1, x0)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor):
        y = self.coarse(src, bgr)
        pha = y[:, 0:1].clamp(0.0, 1.0)
        fgr = (y[:, 1:4] + src).clamp(0.0, 1.0)
        err = y[:, 4:5].clamp(0.0, 1.0)
        hid = y[:, 5:].relu()
        return pha, fgr, err, hid




def select_patches(err: torch.Tensor, mode: str, sample_pixels: int, threshold: float,
                   prevent_oversampling: bool = True) -> torch.Tensor:
    """Which 4x4 patches to refine: (B, 1, h, w) error at quarter resolution -> (B, 1, h, w) 0/1.

    sampling: per image the top `sample_pixels // 16` errors (only those > 0 when
    preventing oversampling); thresholding: error > threshold.
    """
    if mode == "sampling":
        b, _, h, w = err.shape
        flat = err.reshape(b, -1)
        k = min(sample_pixels // 16, flat.shape[1])
        ref = torch.zeros_like(flat)
        ref.scatter_(1, flat.topk(k, dim=1, sorted=False).indices, 1.0)
        if prevent_oversampling:
            ref = ref * (flat > 0).to(ref.dtype)
        return ref.reshape(b, 1, h, w)
    return (err > threshold).to(err.dtype)


class Refiner(nn.Module):
    """Error-guided refinement of 4x4 patches at full resolution.

    forward(src, bgr, pha_sm, fgr_sm, err_sm, hid_sm): src/bgr (B, 3, H, W) full
    resolution, the others at the base network's resolution (fgr_sm is the raw
    foreground *residual*). Returns (pha, fgr_residual, ref_sm): (B, 1, H, W),
    (B, 3, H, W) unclamped, and the selection map (B, 1, H/4, W/4) of 0/1.
    """

    def __init__(self, mode: str = "sampling", sample_pixels: int = 80_000, threshold: float = 0.1,
                 kernel_size: int = 3, prevent_oversampling: bool = True):
        super().__init__()
        if mode not in REFINE_MODES:
            raise ValueError(f"refine_mode must be one of {REFINE_MODES}, got {mode!r}")
        if kernel_size not in (1, 3):
            raise ValueError(f"refine_kernel_size must be 1 or 3, got {kernel_size}")
        self.mode = mode
        self.sample_pixels = sample_pixels
        self.threshold = threshold
        self.kernel_size = kernel_size
        self.prevent_oversampling = prevent_oversampling
        cin = HIDDEN_CHANNELS + 1 + 3 + 6
        self.conv1 = nn.Conv2d(cin, 24, kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.conv2 = nn.Conv2d(24, 16, kernel_size, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16 + 6, 12, kernel_size, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = nn.Conv2d(12, 4, kernel_size, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def select(self, err: torch.Tensor) -> torch.Tensor:
        return select_patches(err, self.mode, self.sample_pixels, self.threshold, self.prevent_oversampling)

    @staticmethod
    def _windows(x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, xx: torch.Tensor, step: int,
                 pad: int) -> torch.Tensor:
        """Crop (N, C, step+2*pad, step+2*pad) windows at (b, step*y - pad, step*xx - pad), zero outside."""
        if pad > 0:
            x = _zero_pad(x, pad)
        size = step + 2 * pad
        tiles = x.unfold(2, size, step).unfold(3, size, step)  # (B, C, nh, nw, size, size)
        return tiles.permute(0, 2, 3, 1, 4, 5)[b, y, xx]

    def _head(self, a: torch.Tensor, s: torch.Tensor, full_bgr: torch.Tensor, out_size: list[int]):
        x = self.relu(self.bn1(self.conv1(torch.cat([a, s], dim=1))))
        x = self.relu(self.bn2(self.conv2(x)))
        x = F.interpolate(x, size=out_size, mode="nearest")
        x = self.relu(self.bn3(self.conv3(torch.cat([x, full_bgr], dim=1))))
        return self.conv4(x)

    def forward(self, src, bgr, pha_sm, fgr_sm, err_sm, hid_sm):
        H, W = src.shape[2], src.shape[3]
        hh, wh, hq, wq = H // 2, W // 2, H // 4, W // 4
        src_bgr = torch.cat([src, bgr], dim=1)
        p = 3 if self.kernel_size == 3 else 0  # context a 3x3 valid conv pair eats at half resolution
        q = 2 if self.kernel_size == 3 else 0  # and the one at full resolution
        if self.mode == "full":
            a = F.interpolate(torch.cat([hid_sm, pha_sm, fgr_sm], dim=1), size=(hh, wh), mode="bilinear",
                              align_corners=False)
            s = F.interpolate(src_bgr, size=(hh, wh), mode="bilinear", align_corners=False)
            out = self._head(_zero_pad(a, p), _zero_pad(s, p), _zero_pad(src_bgr, q),
                             [H + 2 * q, W + 2 * q])
            ref = torch.ones((src.shape[0], 1, hq, wq), device=src.device, dtype=src.dtype)
            return out[:, :1], out[:, 1:], ref

        ref = self.select(F.interpolate(err_sm, size=(hq, wq), mode="bilinear", align_corners=False))
        idx = torch.nonzero(ref.squeeze(1))
        coarse = torch.cat([pha_sm, fgr_sm], dim=1)
        out = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        if idx.shape[0] > 0:
            b, y, x = idx[:, 0], idx[:, 1], idx[:, 2]
            a = F.interpolate(torch.cat([hid_sm, pha_sm, fgr_sm], dim=1), size=(hh, wh), mode="bilinear",
                              align_corners=False)
            s = F.interpolate(src_bgr, size=(hh, wh), mode="bilinear", align_corners=False)
            patches = self._head(self._windows(a, b, y, x, 2, p), self._windows(s, b, y, x, 2, p),
                                 self._windows(src_bgr, b, y, x, 4, q), [4 + 2 * q, 4 + 2 * q])
            # Write each refined 4x4 patch over its block of the upsampled coarse result.
            c = out.shape[1]
            blocks = out.view(out.shape[0], c, hq, 4, wq, 4).permute(0, 2, 4, 1, 3, 5)
            blocks[b, y, x] = patches
            out = blocks.permute(0, 3, 1, 4, 2, 5).reshape(out.shape[0], c, H, W)
        return out[:, :1], out[:, 1:], ref


class MattingRefine(MattingBase):
    """Base network at `backbone_scale` resolution plus the patch refiner at full resolution.

    forward(src, bgr) with src, bgr (B, 3, H, W) in 0..1, H and W multiples of 4
    (and H*scale, W*scale workable for the encoder). Returns
    `(pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm)`: full-resolution alpha (B, 1, H, W)
    and foreground (B, 3, H, W), the coarse alpha/foreground/error at
    (floor(H*s), floor(W*s)), and the refinement selection (B, 1, H/4, W/4).
    """

    def __init__(self, backbone: str = "mobilenetv2", backbone_scale: float = 1 / 4,
                 refine_mode: str = "sampling", refine_sample_pixels: int = 80_000,
                 refine_threshold: float = 0.1, refine_kernel_size: int = 3,
                 refine_prevent_oversampling: bool = True):
        if not 0 < backbone_scale <= 0.5:
            raise ValueError(f"backbone_scale must be in (0, 1/2], got {backbone_scale}")
        super().__init__(backbone)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(refine_mode, refine_sample_pixels, refine_threshold, refine_kernel_size,
                               refine_prevent_oversampling)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor):
        if src.shape[2] % 4 != 0 or src.shape[3] % 4 != 0:
            raise ValueError("MattingRefine needs H and W to be multiples of 4")
        src_sm = F.interpolate(src, scale_factor=self.backbone_scale, mode="bilinear", align_corners=False,
                               recompute_scale_factor=True)
        bgr_sm = F.interpolate(bgr, scale_factor=self.backbone_scale, mode="bilinear", align_corners=False,
                               recompute_scale_factor=True)
        y = self.coarse(src_sm, bgr_sm)
        pha_sm = y[:, 0:1].clamp(0.0, 1.0)
        fgr_res_sm = y[:, 1:4]
        err_sm = y[:, 4:5].clamp(0.0, 1.0)
        hid_sm = y[:, 5:].relu()
        pha, fgr_res, ref_sm = self.refiner(src, bgr, pha_sm, fgr_res_sm, err_sm, hid_sm)
        pha = pha.clamp(0.0, 1.0)
        fgr = (fgr_res + src).clamp(0.0, 1.0)
        fgr_sm = (src_sm + fgr_res_sm).clamp(0.0, 1.0)
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm

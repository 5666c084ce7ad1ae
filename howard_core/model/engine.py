"""`Matter`: the inference engine every other part of Howard calls.

It computes exactly what `network.MattingRefine` computes (fp32 stays within
1e-4 of it, and the refinement selection is identical), but faster:

* BatchNorm is folded into the preceding convolutions and all convolutions run
  channels-last, the layout oneDNN is fastest with.
* The refiner never materialises full-frame intermediates it only samples. The
  reference upsamples the 36-channel coarse output to half resolution, zero-pads
  it and crops an 8x8 window per patch; here each window is computed directly
  from the small low-resolution neighbourhood it depends on, with the same
  bilinear weights, as two tiny batched matrix products. Source windows are
  gathered plane by plane straight from the NCHW src/bgr (and from their
  half-resolution 2x2 averages) instead of from a padded full-resolution
  concatenation.
* The refiner reads the decoder's output tensor in place (conv1's weights are
  reordered to its channel order), and concatenations before convolutions are
  replaced by sums of convolutions over the parts.
* Full-resolution alpha and foreground are upsampled once and the refined
  patches written into them in place.
* The refiner's convolutions run in a few fixed batch sizes (`in_fixed_batches`),
  so memory stays flat over a clip although the patch count changes per frame.

Inputs are (B, 3, H, W) float tensors in 0..1 (display-referred sRGB), any H, W:
`Matter` pads to a multiple of 4 by edge replication and crops back.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from howard_core.errors import HowardError
from howard_core.settings import PRECISIONS

from .network import (
    ALPHA,
    ALPHA_FOREGROUND,
    ERROR,
    FOREGROUND,
    HIDDEN,
    REFINE_MODES,
    REFINE_SETTINGS,
    MattingBase,
    MattingRefine,
    select_patches,
)

PRESETS = {
    # The published recommendations for the official checkpoints.
    "hd": {"backbone_scale": 0.25, "refine_sample_pixels": 80_000},
    "4k": {"backbone_scale": 0.125, "refine_sample_pixels": 320_000},
}


class MatteResult(NamedTuple):
    """All (B, C, H, W) float32 at the input size.

    alpha (C=1) 0..1 data; foreground (C=3) straight (unpremultiplied) colour in
    the input's space, 0..1 (stored channels-last from the refining model, so
    `foreground[k].permute(1, 2, 0)` is a contiguous H x W x 3 image); error (C=1) the
    base network's predicted alpha error, bilinearly upsampled; refinement (C=1) 1 where
    a 4x4 patch was refined. Called with `maps=False`, `Matter` leaves error None and gives
    refinement per patch, (B, 1, ceil(H/4), ceil(W/4)), 1 for each refined patch.
    """

    alpha: torch.Tensor
    foreground: torch.Tensor
    error: torch.Tensor
    refinement: torch.Tensor


# ---------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it, in place.

    BN layers follow their conv either as the next entry of an nn.Sequential or
    as a `bnK` attribute beside `convK` (and `bn1`/`conv1` in the ResNet stem);
    both are replaced by nn.Identity so the modules' forward code is unchanged.
    """
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    _fold_pair(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = getattr(module, "conv" + name[2:], None)
                if isinstance(conv, nn.Conv2d):
                    _fold_pair(conv, child)
                    setattr(module, name, nn.Identity())
    leftover = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if leftover:
        raise RuntimeError(f"BatchNorm layers left unfolded: {leftover[:3]}")
    return model


# ---------------------------------------------------------------------------
# Exact bilinear resampling of small regions
# ---------------------------------------------------------------------------


def bilinear_taps(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index of a bilinear resize in_size -> out_size (align_corners=False):
    (lower source index, upper source index, weight of the upper one), computed with the
    same float32 arithmetic as PyTorch's CPU kernel, so resampled regions match it."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    pos = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)
    lo = pos.to(torch.int64)
    w1 = pos - lo.to(torch.float32)
    hi = torch.where(lo < in_size - 1, lo + 1, lo)
    return lo.to(device), hi.to(device), w1.to(device)


def resize_full(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(x, size, mode="bilinear", align_corners=False)` of a (B, C, h, w) float32 map
    up to the frame size (H, W), NCHW. On the CPU each plane goes through OpenCV's bilinear
    resize, which samples at the same positions with the same weights (results within 1.2e-7 at
    4x, 6e-6 at fractional ratios): at HD, for the coarse alpha and foreground residual, 4.9 ms
    on one thread against PyTorch's 8.5 ms on two."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    import cv2

    B, C = x.shape[:2]
    H, W = size
    out = torch.empty((B, C, H, W), dtype=torch.float32)
    src, dst = x.contiguous().numpy(), out.numpy()
    for b in range(B):
        for c in range(C):
            cv2.resize(src[b, c], (W, H), dst=dst[b, c], interpolation=cv2.INTER_LINEAR)
    return out


def _region_matrix(start: torch.Tensor, size: int, out_extent: int, taps, span: int):
    """Per region, the (size x span) matrix taking `span` consecutive source samples from
    `first` to the output samples start..start+size-1. Output samples outside
    0..out_extent-1 get an all-zero row: the reference zero-pads there."""
    lo, hi, w1 = taps
    pos = start[:, None] + torch.arange(size, device=start.device)
    inside = ((pos >= 0) & (pos < out_extent)).to(torch.float32)
    p = pos.clamp(0, out_extent - 1)
    first = lo[p[:, 0]]
    m = torch.zeros(start.shape[0], size, span, device=start.device)
    m.scatter_add_(2, (lo[p] - first[:, None]).unsqueeze(2), ((1.0 - w1[p]) * inside).unsqueeze(2))
    m.scatter_add_(2, (hi[p] - first[:, None]).unsqueeze(2), (w1[p] * inside).unsqueeze(2))
    return m, first


def resample_regions(x_cl: torch.Tensor, b, top, left, out_size, size: int) -> torch.Tensor:
    """(N, size, size, C): square regions of `bilinear(x, out_size)` with top-left
    (top, left) in the resized frame, zero outside it, computed from x directly.

    Cheaper than resizing the whole frame when the regions cover a small part of
    it: each region reads only the source block it depends on, then applies the
    bilinear taps as two batched matrix products (columns first, then rows, the
    order the bilinear kernel combines its taps in).
    """
    _, _, h_in, w_in = x_cl.shape
    h_out, w_out = out_size
    span_h = -(-size * h_in // h_out) + 2
    span_w = -(-size * w_in // w_out) + 2
    mv, row0 = _region_matrix(top, size, h_out, bilinear_taps(h_in, h_out, top.device), span_h)
    mh, col0 = _region_matrix(left, size, w_out, bilinear_taps(w_in, w_out, left.device), span_w)
    block = gather_windows(x_cl, b, row0, col0, (span_h, span_w))  # (N, span_h, span_w, C)
    n, _, _, c = block.shape
    cols = torch.bmm(mh, block.permute(0, 2, 1, 3).reshape(n, span_w, span_h * c))  # (N, size, span_h*C)
    cols = cols.reshape(n, size, span_h, c).permute(0, 2, 1, 3).reshape(n, span_h, size * c)
    return torch.bmm(mv, cols).reshape(n, size, size, c)


# ---------------------------------------------------------------------------
# Window gathering
# ---------------------------------------------------------------------------


def _gather_pixels(x_cl: torch.Tensor, b, top, left, rows: int, cols: int) -> torch.Tensor:
    """(N, rows, cols, C) windows of a channels-last (B, C, H, W) tensor, one pixel at a
    time, zero where a window leaves the image (the reference zero-pads there)."""
    B, C, H, W = x_cl.shape
    flat = x_cl.permute(0, 2, 3, 1).reshape(B * H * W, C)  # a view: x_cl is channels-last
    r = top[:, None] + torch.arange(rows, device=top.device)
    c = left[:, None] + torch.arange(cols, device=top.device)
    idx = (b[:, None, None] * H + r.clamp(0, H - 1)[:, :, None]) * W + c.clamp(0, W - 1)[:, None, :]
    out = flat.index_select(0, idx.reshape(-1)).reshape(-1, rows, cols, C)
    inside = ((r >= 0) & (r < H))[:, :, None] & ((c >= 0) & (c < W))[:, None, :]
    return out * inside.unsqueeze(-1).to(out.dtype)


def gather_windows(x_cl: torch.Tensor, b, top, left, size) -> torch.Tensor:
    """(N, rows, cols, C) windows (size = rows or (rows, cols)) with top-left (top, left)
    of image b of a (B, C, H, W) tensor, zero outside the image.

    In channels-last memory a window row is `cols * C` contiguous values, so most
    windows are gathered as `rows` row segments rather than single pixels; the few
    windows that cross the left/right edge fall back to per-pixel gathering.
    """
    rows_n, cols_n = (size, size) if isinstance(size, int) else size
    B, C, H, W = x_cl.shape
    if not x_cl.is_contiguous(memory_format=torch.channels_last):
        x_cl = x_cl.contiguous(memory_format=torch.channels_last)
    flat = x_cl.permute(0, 2, 3, 1).reshape(-1)
    r = top[:, None] + torch.arange(rows_n, device=top.device)
    # Windows crossing the left/right edge are read with a clamped start here and redone below.
    col0 = left.clamp(0, max(W - cols_n, 0))
    starts = (b[:, None] * H + r.clamp(0, H - 1)) * W + col0[:, None]
    # Overlapping view: row i is the cols_n pixels from pixel i on. Advanced indexing reads it in
    # place (index_select would first copy the whole overlapping view).
    segments = torch.as_strided(flat, (flat.numel() // C - cols_n + 1, cols_n * C), (C, 1))
    out = segments[starts.reshape(-1)].reshape(-1, rows_n, cols_n, C)
    off = ((r < 0) | (r >= H)).any(dim=1).nonzero().squeeze(1)  # windows crossing top/bottom
    if off.numel():
        out[off] = out[off] * ((r[off] >= 0) & (r[off] < H)).to(out.dtype)[:, :, None, None]
    outer = ((left < 0) | (left + cols_n > W)).nonzero().squeeze(1)
    if outer.numel():
        out[outer] = _gather_pixels(x_cl, b[outer], top[outer], left[outer], rows_n, cols_n)
    return out


def gather_planes(images, b, top, left, size: int) -> torch.Tensor:
    """(N, C, size, size) windows, channels-last, of (B, C_i, H, W) tensors side by side on the
    channel axis (C = sum of C_i), zero outside the image.

    A channels-last image (Matter's src and bgr, which arrive as H x W x 3 frames) is read as row
    segments of all its channels at once. An NCHW one is read plane by plane: each plane, seen as
    a one-channel image, is channels-last as well, so no full-resolution frame is converted (or
    concatenated) just to crop small windows from it."""
    parts = []
    for x in images:
        B, C, H, W = x.shape
        if x.is_contiguous(memory_format=torch.channels_last):
            parts.append(gather_windows(x, b, top, left, size))  # (N, size, size, C)
            continue
        planes = x.contiguous().view(B * C, 1, H, W)
        bc = (b[:, None] * C + torch.arange(C, device=b.device)).reshape(-1)
        win = gather_windows(planes, bc, top.repeat_interleave(C), left.repeat_interleave(C), size)
        parts.append(win.view(-1, C, size, size).permute(0, 2, 3, 1))
    # Channels-last like the other inputs of the convolutions these feed, whose outputs are summed.
    return torch.cat(parts, dim=3).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HowardError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return dev


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise HowardError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if device.type != "cuda":
            raise HowardError("precision fp16 needs a CUDA device; on CPU use --precision bf16 or fp32")
        return torch.float16
    if device.type == "cpu" and not cpu_supports_bf16():
        raise HowardError("this CPU has no fast bf16 support; use --precision fp32")
    return torch.bfloat16


BATCH = 1024  # patches (or tiles) per refiner convolution call
BATCH_GRAIN = 64  # the last, partial call is zero-padded up to a multiple of this


def in_fixed_batches(fn, *xs: torch.Tensor) -> torch.Tensor:
    """fn(*xs) for functions that treat every row of dim 0 independently (convolutions over
    patches), run on at most len(range(BATCH_GRAIN, BATCH + 1, BATCH_GRAIN)) distinct batch sizes.

    How many patches a frame refines changes from frame to frame, and oneDNN (with PyTorch's
    ideep layer above it) caches compiled primitives per input shape, up to 1,024 of each: fed
    the raw counts, a long clip grows resident memory by hundreds of MB before those caches
    fill. In fixed batches the caches hold a handful of shapes. Zero padding of the last batch
    is sliced off; every row's arithmetic is unchanged.
    """
    n = xs[0].shape[0]
    outs = []
    for start in range(0, n, BATCH):
        part = [x[start:start + BATCH] for x in xs]
        m = part[0].shape[0]
        pad = -m % BATCH_GRAIN
        if pad:
            part = [torch.cat([p, p.new_zeros((pad, *p.shape[1:]))]) for p in part]
        outs.append(fn(*part)[:m])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class Matter:
    """Fast inference around a `MattingRefine` or `MattingBase` model.

    `Matter(model, device='auto', precision='auto', preset=None, **settings)`;
    settings are `backbone_scale`, `refine_mode`, `refine_sample_pixels`,
    `refine_threshold` (defaults: the model's own; `preset` 'hd' or '4k' applies
    the published recommendations). Any of them can be overridden per call.
    `precision`: 'fp32' (exact), 'bf16' (CPUs with bf16 support), 'fp16' (CUDA),
    'auto' = fp16 on CUDA, fp32 on CPU. The given model is not modified, unless
    `copy_model=False`: then Matter folds and moves that model itself, which saves copying
    every weight (about 0.1 s) for a model loaded only to be run by it.

    `matter(src, bgr, maps=True, **settings) -> MatteResult` with src, bgr (B, 3, H, W) in 0..1;
    `maps=False` skips the full-size error and refinement maps (see `MatteResult`), which cost
    about 5% of an HD frame, for callers that keep only alpha and foreground.
    """

    # Edge, in half-resolution pixels, of the tiles the refiner's first convs run on (at least the
    # 4 conv2 outputs a patch reads, so a patch touches at most 2 x 2 tiles). Smaller tiles waste
    # fewer positions where the selected patches thin out, larger ones recompute less halo: on
    # 6 HD frames of a synthetic shot, fp32 Matter took 188.9 ms at 8, 196.9 at 16, 187.7 at 6,
    # 190.9 at 4 (medians of 8 rounds), and at 4K (the 4k preset) 347 against 372 ms at 16.
    TILE = 8
    # How the refiner's first stage runs: "auto" picks per frame whichever of "tiles" and
    # "windows" convolves fewer positions; the others force one (tests, benchmarks).
    stage1 = "auto"

    def __init__(self, model: nn.Module, device: str = "auto", precision: str = "auto",
                 preset: str | None = None, copy_model: bool = True, **settings):
        if not isinstance(model, MattingBase):
            raise HowardError(f"Matter needs a MattingRefine or MattingBase model, got {type(model).__name__}")
        self.device = _resolve_device(device)
        self.dtype = _resolve_precision(precision, self.device)
        self.is_refine = isinstance(model, MattingRefine)
        self.meta = dict(getattr(model, "howard_meta", {}))
        self.settings = {}
        if self.is_refine:
            r = model.refiner
            self.settings = {"backbone_scale": model.backbone_scale, "refine_mode": r.mode,
                             "refine_sample_pixels": r.sample_pixels, "refine_threshold": r.threshold}
            self.kernel_size = r.kernel_size
            self.prevent_oversampling = r.prevent_oversampling
        if preset is not None:
            if preset not in PRESETS:
                raise HowardError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
            settings = {**PRESETS[preset], **settings}
        self.settings = self._merge(settings)
        net = (copy.deepcopy(model) if copy_model else model).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        fold_batchnorm(net)
        self.net = net.to(self.device, memory_format=torch.channels_last)
        # The conv-heavy parts run in the reduced precision; gathers and resizes stay fp32.
        self.net_lp = self.net if self.dtype == torch.float32 else copy.deepcopy(self.net).to(self.dtype)
        if self.is_refine:
            r = self.net_lp.refiner
            w1, w3 = r.conv1.weight, r.conv3.weight
            # conv1 reads [hidden 32, alpha, foreground 3] + [src, bgr]; the decoder emits [alpha,
            # foreground 3, error, hidden 32]. Reordering the weights to the decoder's order (error
            # weighted 0) lets the refiner read the decoder output itself, with no concatenation.
            low_w = torch.cat([w1[:, 32:36], torch.zeros_like(w1[:, :1]), w1[:, :32]], dim=1)
            self._conv1_w = (low_w.contiguous(), w1[:, 36:42].contiguous())
            self._conv3_w = (w3[:, :16].contiguous(), w3[:, 16:22].contiguous())

    def _merge(self, overrides: dict) -> dict:
        settings = dict(self.settings)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in REFINE_SETTINGS:
                raise HowardError(f"unknown Matter setting {key!r}")
            if not self.is_refine:
                raise HowardError(f"{key} needs a refining model; this checkpoint is the base (coarse) model only")
            settings[key] = value
        if self.is_refine:
            if settings["refine_mode"] not in REFINE_MODES:
                raise HowardError(f"refine mode {settings['refine_mode']!r} is not one of {', '.join(REFINE_MODES)}")
            if not 0 < settings["backbone_scale"] <= 0.5:
                raise HowardError(f"backbone scale {settings['backbone_scale']} must be in (0, 0.5]")
            if int(settings["refine_sample_pixels"]) < 16:
                raise HowardError("refine sample pixels must be at least 16 (one 4x4 patch)")
        return settings

    # -- public ------------------------------------------------------------

    @torch.inference_mode()
    def __call__(self, src: torch.Tensor, bgr: torch.Tensor, maps: bool = True, **overrides) -> MatteResult:
        if src.ndim != 4 or src.shape[1] != 3 or bgr.shape != src.shape:
            raise HowardError(f"Matter expects src and bgr of the same shape (B, 3, H, W); got "
                              f"{tuple(src.shape)} and {tuple(bgr.shape)}")
        settings = self._merge(overrides)
        H, W = src.shape[2:]
        pad_h, pad_w = (-H) % 4, (-W) % 4
        src = self._prepare(src, pad_h, pad_w)
        bgr = self._prepare(bgr, pad_h, pad_w)
        if self.is_refine:
            pha, fgr, err, ref = self._refine(src, bgr, settings, maps)
        else:
            pha, fgr, err, ref = self._base(src, bgr, maps)
        crop = (slice(None), slice(None), slice(0, H), slice(0, W))
        if not maps:
            patches = (slice(None), slice(None), slice(0, -(-H // 4)), slice(0, -(-W // 4)))
            return MatteResult(pha[crop].float(), fgr[crop].float(), None, ref[patches].float())
        return MatteResult(pha[crop].float(), fgr[crop].float(), err[crop].float(), ref[crop].float())

    # -- internals ---------------------------------------------------------

    def _prepare(self, x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
        """The frame as channels-last float32 on the device. Frames arrive as H x W x 3 images
        (`pipeline.to_tensor`), channels-last already: kept so, they are not transposed (two
        full-frame copies per HD frame, 4-9 ms), and the refiner gathers its windows from them
        as row segments of all three channels, quicker than plane by plane (6.8 against 10.1 ms
        for one HD frame's 5,000 patches of src and bgr)."""
        x = x.to(self.device, torch.float32)
        if pad_h or pad_w:
            # Edge replication keeps the padded border looking like the frame, so the
            # network sees no artificial edge there.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x.contiguous(memory_format=torch.channels_last)

    def _coarse(self, src_sm: torch.Tensor, bgr_sm: torch.Tensor) -> torch.Tensor:
        x = torch.cat([src_sm, bgr_sm], dim=1).to(self.dtype).contiguous(memory_format=torch.channels_last)
        net = self.net_lp
        x4, x3, x2, x1, x0 = net.backbone(x)
        return net.decoder(net.aspp(x4), x3, x2, x1, x0).float()

    def _base(self, src, bgr, maps: bool = True):
        y = self._coarse(src, bgr)
        pha = y[:, ALPHA].clamp(0.0, 1.0)
        fgr = (y[:, FOREGROUND] + src).clamp_(0.0, 1.0)
        err = y[:, ERROR].clamp(0.0, 1.0)
        if not maps:
            B, _, H, W = src.shape
            return pha, fgr, None, torch.zeros((B, 1, H // 4, W // 4), device=src.device)
        return pha, fgr, err, torch.zeros_like(err)

    def _refine(self, src, bgr, settings, maps: bool = True):
        """src, bgr: channels-last (B, 3, H, W) frames, H and W multiples of 4. With `maps` False the
        error is None and the refinement comes back per 4x4 patch."""
        scale = settings["backbone_scale"]
        src_sm = F.interpolate(src, scale_factor=scale, mode="bilinear", align_corners=False,
                               recompute_scale_factor=True)
        bgr_sm = F.interpolate(bgr, scale_factor=scale, mode="bilinear", align_corners=False,
                               recompute_scale_factor=True)
        y = self._coarse(src_sm, bgr_sm)
        # Alpha (clamped) and foreground residual side by side, NCHW: resized to full size in one call.
        four_sm = y[:, ALPHA_FOREGROUND].contiguous()
        four_sm[:, ALPHA].clamp_(0.0, 1.0)
        pha_sm, fgr_res_sm = four_sm[:, ALPHA], four_sm[:, FOREGROUND]
        err_sm = y[:, ERROR].clamp(0.0, 1.0)
        B, _, H, W = src.shape
        if settings["refine_mode"] == "full":
            pha, fgr_res = self._refine_full(src, bgr, pha_sm, fgr_res_sm, y[:, HIDDEN].relu())
            ref_sm = torch.ones((B, 1, H // 4, W // 4), device=src.device)
        else:
            pha, fgr_res, ref_sm = self._refine_patches(src, bgr, y, four_sm, err_sm, settings)
        pha = pha.clamp_(0.0, 1.0)
        # Written channels-last as it is summed: callers take the foreground as H x W x 3 images, and
        # transposing it here, in the pass the sum makes anyway, saves them a full-frame copy.
        fgr = torch.add(fgr_res, src, out=torch.empty_like(src, memory_format=torch.channels_last)).clamp_(0.0, 1.0)
        if not maps:
            return pha, fgr, None, ref_sm
        err = resize_full(err_sm, (H, W))
        ref = ref_sm.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        return pha, fgr, err, ref

    def _split_conv(self, conv: nn.Conv2d, weights, inputs) -> torch.Tensor:
        """conv(cat(inputs, channels)) as a sum of convs over each input with its slice of the
        weights: the same arithmetic without materialising the concatenation, which for stacks
        of small channels-last windows costs more than the convolutions themselves.
        `inputs` are (N, C_i, h, w) in any memory layout; `conv` gives the bias."""
        out = None
        for w, x in zip(weights, inputs, strict=True):
            y = F.conv2d(x.to(self.dtype), w)
            out = y if out is None else out.add_(y)
        return out.add_(conv.bias.reshape(1, -1, 1, 1))

    def _stage1_convs(self, low, s_half) -> torch.Tensor:
        """conv1+ReLU, conv2+ReLU on low (N, h, w, 37), the activated decoder output, and s_half
        (N, 6, h, w) channels-last, src and bgr, both at half resolution -> (N, h-4, w-4, 16) for 3x3 kernels
        (same size for 1x1)."""
        r = self.net_lp.refiner

        def convs(low, s_half):
            t = torch.relu_(self._split_conv(r.conv1, self._conv1_w, [low.permute(0, 3, 1, 2), s_half]))
            return torch.relu_(r.conv2(t)).permute(0, 2, 3, 1)

        return in_fixed_batches(convs, low, s_half)

    def _stage2_convs(self, mid, full) -> torch.Tensor:
        """conv3+ReLU, conv4 on mid (N, 2win, 2win, 16), the nearest 2x of stage 1, and full (N, 6, 2win,
        2win), the src/bgr windows at full resolution -> (N, 4, 4, 4) float32: alpha + foreground residual."""
        r = self.net_lp.refiner

        def convs(mid, full):
            z = torch.relu_(self._split_conv(r.conv3, self._conv3_w, [mid.permute(0, 3, 1, 2), full]))
            return r.conv4(z).float()

        return in_fixed_batches(convs, mid, full)

    def _stage1_windows(self, low, full, b, y, x, win, p, half):
        """Per patch: resize the coarse output to half resolution, crop each patch's window, convolve.
        The patches' windows overlap and together cover more than the frame: src and bgr are halved
        densely here (half of a multiple-of-4 frame: exactly a 2x2 average)."""
        size = win + 2 * p - 2 if p else win
        a = F.interpolate(low, size=half, mode="bilinear", align_corners=False)
        s_half = [F.interpolate(t, size=half, mode="bilinear", align_corners=False) for t in full]
        return self._stage1_convs(gather_windows(a, b, 2 * y - p, 2 * x - p, size),
                                  gather_planes(s_half, b, 2 * y - p, 2 * x - p, size))

    @staticmethod
    def _half_planes(full, b, top, left, size: int) -> torch.Tensor:
        """`gather_planes` of src and bgr at half resolution without halving them densely: each
        window is the full-resolution window twice its size, averaged 2x2 (which is what the
        half-size bilinear resize of a multiple-of-4 frame computes; outside the frame both are 0)."""
        return F.avg_pool2d(gather_planes(full, b, 2 * top, 2 * left, 2 * size), 2)

    def _stage1_tiles(self, low, full, b, y, x, win, p, half):
        """conv1/conv2 outputs depend only on position, and the windows of neighbouring patches
        overlap, so where the selected patches cluster (as they do along a subject's edge) it is
        cheaper to compute them once, densely, on the tiles the patches touch, each tile resampled
        straight from the small source. Returns None where per-patch windows would be cheaper."""
        S = self.TILE
        B = low.shape[0]
        hh, wh = half
        halo = 2 * p - 2 if p else 0
        nty, ntx = -(-(hh + 2) // S), -(-(wh + 2) // S)
        tr = torch.stack([2 * y, 2 * y + win - 1]) // S
        tc = torch.stack([2 * x, 2 * x + win - 1]) // S
        keys = torch.cat([(b * nty + tr[i]) * ntx + tc[j] for i in (0, 1) for j in (0, 1)]).unique()
        if self.stage1 == "auto" and keys.numel() * (S + halo) ** 2 >= b.numel() * (win + halo) ** 2:
            return None
        tb, t_r, t_c = keys // (nty * ntx), (keys // ntx) % nty, keys % ntx
        top, left = t_r * S - p, t_c * S - p
        size = S + halo
        tiles = self._stage1_convs(resample_regions(low, tb, top, left, half, size),
                                   self._half_planes(full, tb, top, left, size))
        # Tile-major storage: each tile lands as one contiguous block (a spatial layout would
        # scatter it over S rows), and each patch then reads its win x win outputs by index.
        C = tiles.shape[3]
        conv2_map = torch.empty((B * nty * ntx, S, S, C), dtype=tiles.dtype, device=tiles.device)
        conv2_map[keys] = tiles
        step = torch.arange(win, device=b.device)
        r, c = 2 * y[:, None] + step, 2 * x[:, None] + step  # (N, win) in conv2-map coordinates
        tile = (b[:, None, None] * nty + (r // S)[:, :, None]) * ntx + (c // S)[:, None, :]
        idx = (tile * S + (r % S)[:, :, None]) * S + (c % S)[:, None, :]
        return conv2_map.view(-1, C)[idx.reshape(-1)].view(-1, win, win, C)

    def _refine_patches(self, src, bgr, y, four_sm, err_sm, settings):
        """src, bgr: channels-last (B, 3, H, W); y: the raw decoder output (B, 37, h, w), which
        this consumes; four_sm: its clamped alpha and foreground residual (B, 4, h, w). Returns
        full-size alpha and foreground residual (views of one NCHW (B, 4, H, W) tensor) with the
        selected patches refined, and the (B, 1, H/4, W/4) selection."""
        B, _, H, W = src.shape
        hh, wh, hq, wq = H // 2, W // 2, H // 4, W // 4
        err_q = F.interpolate(err_sm, size=(hq, wq), mode="bilinear", align_corners=False)
        ref = select_patches(err_q, settings["refine_mode"], int(settings["refine_sample_pixels"]),
                             settings["refine_threshold"], self.prevent_oversampling)
        four = resize_full(four_sm, (H, W))
        pha, fgr_res = four[:, ALPHA], four[:, FOREGROUND]
        idx = torch.nonzero(ref.squeeze(1))
        if idx.shape[0] == 0:
            return pha, fgr_res, ref
        # The refiner's low-resolution input, made in place in the decoder output: alpha clamped,
        # hidden features through ReLU (the error channel has zero weight).
        low = y.contiguous(memory_format=torch.channels_last)
        low[:, ALPHA].clamp_(0.0, 1.0)
        low[:, HIDDEN].relu_()
        b, y, x = idx[:, 0], idx[:, 1], idx[:, 2]
        k3 = self.kernel_size == 3
        p, q = (3, 2) if k3 else (0, 0)  # zero padding the reference applies at half and full resolution
        win = 4 if k3 else 2  # conv2 outputs one patch reads, per side

        # Stage 1, conv1+conv2 at half resolution: (N, win, win, 16) per patch. The coarse output's
        # 2x upsampling, and src/bgr at half resolution, are made only where the patches need them.
        args = (low, (src, bgr), b, y, x, win, p, (hh, wh))
        mid = None if self.stage1 == "windows" else self._stage1_tiles(*args)
        if mid is None:
            mid = self._stage1_windows(*args)

        # Stage 2, per patch at full resolution: nearest 2x of its conv2 block (as the reference's
        # resize), beside the full-resolution src/bgr window, through conv3 and conv4.
        mid = mid.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        full = gather_planes((src, bgr), b, 4 * y - q, 4 * x - q, 2 * win)
        patches = self._stage2_convs(mid, full)  # (N, 4, 4, 4): alpha + foreground residual
        four.view(B, 4, hq, 4, wq, 4).permute(0, 2, 4, 1, 3, 5)[b, y, x] = patches
        return pha, fgr_res, ref

    def _refine_full(self, src, bgr, pha_sm, fgr_res_sm, hid_sm):
        # Full mode refines every pixel, so the reference's dense formulation is already the
        # efficient one; it runs here on the folded, channels-last layers.
        r = self.net_lp.refiner
        H, W = src.shape[2:]
        p, q = (3, 2) if self.kernel_size == 3 else (0, 0)
        src_bgr = torch.cat([src, bgr], dim=1)
        a = F.interpolate(torch.cat([hid_sm, pha_sm, fgr_res_sm], dim=1), size=(H // 2, W // 2), mode="bilinear",
                          align_corners=False)
        s = F.interpolate(src_bgr, size=(H // 2, W // 2), mode="bilinear", align_corners=False)
        x = F.pad(torch.cat([a, s], dim=1), (p, p, p, p)).to(self.dtype)
        x = torch.relu_(r.conv2(torch.relu_(r.conv1(x))))
        x = F.interpolate(x, size=(H + 2 * q, W + 2 * q), mode="nearest")
        x = torch.cat([x, F.pad(src_bgr, (q, q, q, q)).to(self.dtype)], dim=1)
        out = r.conv4(torch.relu_(r.conv3(x))).float()
        return out[:, :1], out[:, 1:].contiguous()

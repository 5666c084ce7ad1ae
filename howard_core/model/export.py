"""TorchScript export for Nuke's Inference node (and any other TorchScript host).

Nuke's Inference node runs a TorchScript module on the channels it is given and
writes the channels the module returns. The exported module takes ONE input,
(B, 6, H, W): plate RGB then aligned clean-plate RGB, display-referred sRGB in
0..1 (put a Colorspace node linear -> sRGB before it in a linear comp), any H, W,
and returns (B, 4, H, W): straight foreground RGB then alpha. Convert the
foreground back to linear after it; alpha is data.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from howard_core.errors import HowardError

from .engine import fold_batchnorm
from .network import MattingBase, MattingRefine


class SixChannelMatting(nn.Module):
    """(B, 6, H, W) plate+clean plate -> (B, 4, H, W) foreground RGB + alpha, any H, W."""

    def __init__(self, model: MattingBase):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        # Edge replication to multiples of 4 (the refiner's patch grid), cropped back afterwards,
        # exactly as Matter does, so both give the same matte for the same frame.
        x = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="replicate")
        pha, fgr = self.model(x[:, 0:3], x[:, 3:6])[:2]
        return torch.cat([fgr, pha], dim=1)[:, :, :h, :w]


def export_torchscript(model: MattingBase, path: str | os.PathLike, fold: bool = True, **settings) -> Path:
    """Script `model` (a MattingRefine or MattingBase) into a 6-in/4-out TorchScript file.

    `settings` override the refining model's `backbone_scale`, `refine_mode`,
    `refine_sample_pixels`, `refine_threshold` for the export. `fold=True` folds
    BatchNorm into the convolutions (same outputs, faster in the host). The file
    is written atomically.
    """
    if not isinstance(model, MattingBase):
        raise HowardError(f"export needs a MattingRefine or MattingBase model, got {type(model).__name__}")
    net = copy.deepcopy(model).eval().cpu()
    if isinstance(net, MattingRefine):
        for key, value in settings.items():
            if key == "backbone_scale":
                net.backbone_scale = float(value)
            elif key in ("refine_mode", "refine_sample_pixels", "refine_threshold"):
                setattr(net.refiner, key[len("refine_"):], value)
            else:
                raise HowardError(f"unknown export setting {key!r}")
    elif settings:
        raise HowardError("a base (coarse-only) model takes no refine settings")
    if fold:
        fold_batchnorm(net)
    scripted = torch.jit.script(SixChannelMatting(net))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        scripted.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

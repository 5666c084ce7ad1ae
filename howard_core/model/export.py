"""TorchScript export for Nuke's Inference node (and any other TorchScript host).

Nuke's Inference node runs a TorchScript module on the channels it is given and
writes the channels the module returns. The exported module takes ONE input,
(B, 6, H, W): plate RGB then aligned clean-plate RGB, display-referred sRGB in
0..1 (put a Colorspace node linear -> sRGB before it in a linear comp), any H, W,
and returns (B, 4, H, W): straight foreground RGB then alpha. Convert the
foreground back to linear after it; alpha is data.

Nuke 14 to 15.0 run libtorch 1.12.1 (Nuke 13: 1.6), so the scripted graph may use only
operators that libtorch already had: torch 2.x's F.pad scripts to aten::pad (new in 1.13),
so padding here and in the network is written with aten::replication_pad2d and
aten::constant_pad_nd. tests/test_model_export.py lists the graph's operators and checks
them against an allow-list taken from libtorch 1.12's operator set. The Howard and torch
versions that made the file travel inside it as the TorchScript extra file `howard.json`.
"""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

import howard_core
from howard_core.errors import HowardError
from howard_core.io.atomic import write_bytes_atomic

from .engine import fold_batchnorm
from .network import REFINE_SETTINGS, MattingBase, MattingRefine


class SixChannelMatting(nn.Module):
    """(B, 6, H, W) plate+clean plate -> (B, 4, H, W) foreground RGB + alpha, any H, W."""

    def __init__(self, model: MattingBase):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        # Edge replication to multiples of 4 (the refiner's patch grid), cropped back afterwards,
        # exactly as Matter does, so both give the same matte for the same frame.
        x = torch.ops.aten.replication_pad2d(x, [0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4])
        pha, fgr = self.model(x[:, 0:3], x[:, 3:6])[:2]
        return torch.cat([fgr, pha], dim=1)[:, :, :h, :w]


def export_torchscript(model: MattingBase, path: str | os.PathLike, fold: bool = True, **settings) -> Path:
    """Script `model` (a MattingRefine or MattingBase) into a 6-in/4-out TorchScript file.

    `settings` override the refining model's `backbone_scale`, `refine_mode`,
    `refine_sample_pixels`, `refine_threshold` for the export. `fold=True` folds
    BatchNorm into the convolutions (same outputs, faster in the host). The file
    is written atomically, with the mode the umask gives (a farm node running as
    another user must be able to read it), and carries `howard.json` (see `export_record`).
    """
    if not isinstance(model, MattingBase):
        raise HowardError(f"export needs a MattingRefine or MattingBase model, got {type(model).__name__}")
    net = copy.deepcopy(model).eval().cpu()
    if isinstance(net, MattingRefine):
        for key, value in settings.items():
            if key == "backbone_scale":
                net.backbone_scale = float(value)
            elif key in REFINE_SETTINGS:
                setattr(net.refiner, key[len("refine_"):], value)
            else:
                raise HowardError(f"unknown export setting {key!r}")
    elif settings:
        raise HowardError("a base (coarse-only) model takes no refine settings")
    if fold:
        fold_batchnorm(net)
    scripted = torch.jit.script(SixChannelMatting(net))
    record = export_record(net, fold)
    # Saved to memory first: torch names the archive's root folder after the file, and the
    # atomic write's temp name would end up inside it.
    buf = io.BytesIO()
    torch.jit.save(scripted, buf, _extra_files={EXTRA_FILE: json.dumps(record, indent=2, sort_keys=True)})
    return write_bytes_atomic(path, buf.getvalue())


EXTRA_FILE = "howard.json"


def export_record(net: MattingBase, fold: bool) -> dict:
    """What `howard.json` inside the exported file says: who made it, and with what settings."""
    record = {"howard_version": howard_core.__version__, "torch_version": torch.__version__,
              "input": "(B, 6, H, W) plate RGB + aligned clean-plate RGB, sRGB 0..1",
              "output": "(B, 4, H, W) straight foreground RGB + alpha", "batchnorm_folded": bool(fold),
              "model": type(net).__name__}
    if isinstance(net, MattingRefine):
        record.update(backbone_scale=float(net.backbone_scale), refine_mode=net.refiner.mode,
                      refine_sample_pixels=int(net.refiner.sample_pixels),
                      refine_threshold=float(net.refiner.threshold))
    return record


def read_export_record(path: str | os.PathLike) -> dict:
    """`howard.json` from an exported file ({} when the file has none)."""
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[EXTRA_FILE]) if extra[EXTRA_FILE] else {}

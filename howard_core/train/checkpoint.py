"""Howard-format checkpoints as the trainer writes them, and the resumable training state.

Howard's format is a plain dict saved with `torch.save`::

    {"format": "howard-checkpoint", "version": 1, "kind": "base" | "refine",
     "backbone": str, "state_dict": {...}, "meta": {...}}

`meta` holds provenance (what trained it, on what data, for how many steps,
the last losses) and may hold a model card. A checkpoint the trainer can resume
from carries one more key, "train": the optimizer and gradient-scaler states,
the step, the RNG states, the loss history and the run's config; every loader
of the plain format ignores it. Everything is loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import torch

from howard_core.errors import HowardError

FORMAT = "howard-checkpoint"
VERSION = 1
KINDS = ("base", "refine")


def atomic_write(path, write) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path`.

    Readers (and a Ctrl-C mid-write) never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_howard_checkpoint(path, model: torch.nn.Module, kind: str, backbone: str, meta: dict,
                           half: bool = False, train_state: dict | None = None) -> Path:
    """Write `model`'s weights in Howard's format, atomically; returns the path.

    `half=True` stores floating-point tensors as fp16 (the bundled checkpoint);
    `train_state` adds the "train" section that makes the file resumable.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        sd[k] = (v.half() if half and v.is_floating_point() else v).clone()
    # A JSON round trip keeps meta to plain types, which weights_only loading requires
    # (torch.__version__, for one, is a str subclass it refuses).
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "backbone": backbone, "state_dict": sd,
               "meta": json.loads(json.dumps(meta, default=str))}
    if train_state is not None:
        payload["train"] = train_state
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_training_checkpoint(path) -> dict:
    """A resumable checkpoint written by the trainer, as its dict; HowardError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise HowardError(f"{path}: no such checkpoint to resume from; pass the <stage>-last.pt file of an "
                          f"earlier run (or drop --resume)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise HowardError(f"{path}: cannot be read as a checkpoint ({first}); it is damaged or not a "
                          f"checkpoint") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("version") != VERSION:
        raise HowardError(f"{path}: not a Howard v{VERSION} checkpoint; resume needs a <stage>-last.pt written "
                          f"by `howard train` (use --init to start from other weights)")
    if not isinstance(obj.get("train"), dict):
        raise HowardError(f"{path}: holds weights only, no training state; use --init {path} to start a new "
                          f"run from it")
    return obj

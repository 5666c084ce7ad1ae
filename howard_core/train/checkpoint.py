"""Reading back the resumable training state the trainer writes with `howard_core.model.save_checkpoint`.

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

import pickle
from pathlib import Path

import torch

from howard_core.errors import HowardError
from howard_core.model.checkpoint import HOWARD_FORMAT as FORMAT
from howard_core.model.checkpoint import HOWARD_VERSION as VERSION


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


def lr_phases(train_state: dict) -> list[dict]:
    """The learning-rate phases of a training state, `[{"from_step", "lr_scale"}, ...]`. Checkpoints
    written before phases were recorded ran at one scale, their config's (None meaning 1)."""
    return list(train_state.get("lr_phases") or
                [{"from_step": 0, "lr_scale": train_state["config"].get("lr_scale") or 1.0}])

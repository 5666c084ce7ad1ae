"""The BGMv2-compatible matting network, its checkpoints and its inference engine."""

from .backbones import BACKBONES
from .checkpoint import build_model, detect_architecture, load_model, save_checkpoint
from .engine import PRESETS, Matter, MatteResult, fold_batchnorm
from .export import export_torchscript
from .network import MattingBase, MattingRefine

__all__ = ["BACKBONES", "PRESETS", "MatteResult", "Matter", "MattingBase", "MattingRefine", "build_model",
           "detect_architecture", "export_torchscript", "fold_batchnorm", "load_model", "save_checkpoint"]

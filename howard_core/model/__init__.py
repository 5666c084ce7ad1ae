"""The BGMv2-compatible matting network, its checkpoints and its inference engine."""

from .backbones import BACKBONES
from .network import MattingBase, MattingRefine

__all__ = ["BACKBONES", "MattingBase", "MattingRefine"]

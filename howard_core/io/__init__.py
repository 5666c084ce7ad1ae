"""Howard's image/movie I/O and colour layer (inputs so far; outputs to come)."""

from howard_core.io.atomic import atomic_write, ensure_writable_dir
from howard_core.io.color import ColorConverter, default_colorspace, make_converter
from howard_core.io.frames import SequencePattern, format_frames, parse_frames
from howard_core.io.resample import resize_to
from howard_core.io.source import MISSING_MODES, FrameSource, open_source

__all__ = [
    "MISSING_MODES",
    "ColorConverter",
    "FrameSource",
    "SequencePattern",
    "atomic_write",
    "default_colorspace",
    "ensure_writable_dir",
    "format_frames",
    "make_converter",
    "open_source",
    "parse_frames",
    "resize_to",
]

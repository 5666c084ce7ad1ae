"""Howard's image/movie I/O and colour layer (frame ranges, patterns, colour so far)."""

from howard_core.io.atomic import atomic_write, ensure_writable_dir
from howard_core.io.color import ColorConverter, default_colorspace, make_converter
from howard_core.io.frames import SequencePattern, format_frames, parse_frames

__all__ = [
    "ColorConverter",
    "SequencePattern",
    "atomic_write",
    "default_colorspace",
    "ensure_writable_dir",
    "format_frames",
    "make_converter",
    "parse_frames",
]

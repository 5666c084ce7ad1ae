"""Howard's image/movie I/O and colour layer.

    with open_source("plate.####.exr", frames=parse_frames("1001-1100")) as plate, \\
         open_source("clean.exr") as clean, \\
         open_sink("out/", "exr", like=plate, layers=["fg", "err"]) as sink:
        for n in plate.frame_numbers:
            src = plate.read(n)            # HxWx3 float32, sRGB 0..1 for the network
            ...
            sink.write(n, fg_native, alpha, {"err": err})

Modules, one concern each: `frames` (ranges, patterns), `color` (colour spaces),
`images` (OpenImageIO stills), `movie` (PyAV), `source`, `sink`, `atomic`, `resample`.
"""

from howard_core.io.atomic import (
    atomic_write,
    ensure_writable_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from howard_core.io.color import ColorConverter, default_colorspace, make_converter
from howard_core.io.frames import SequencePattern, format_frames, parse_frames
from howard_core.io.resample import resize_to
from howard_core.io.sink import KINDS, FrameSink, open_sink
from howard_core.io.source import MISSING_MODES, FrameSource, open_source

__all__ = [
    "KINDS",
    "MISSING_MODES",
    "ColorConverter",
    "FrameSink",
    "FrameSource",
    "SequencePattern",
    "atomic_write",
    "default_colorspace",
    "ensure_writable_dir",
    "format_frames",
    "make_converter",
    "open_sink",
    "open_source",
    "parse_frames",
    "resize_to",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

"""Frame sources: a numbered image sequence, a movie, or one still image.

`open_source(spec, ...)` decides which from `spec`:

* a pattern (`plate.####.exr`, `plate.%04d.exr`, `plate.@@@@.exr`): an image sequence;
  frames discovered from disk unless given;
* a folder holding exactly one numbered image sequence: that sequence;
* a movie (.mp4 .mov .mxf .avi .mkv .m4v .webm): frames numbered from `start_frame`
  (default 0; timecode is not read);
* any other existing file: a still. A still answers every frame number with the same
  image, so it works as a clean plate for a whole shot. A path to one frame of a
  sequence (`plate.1001.exr`) is a still too; write the pattern to get the sequence.

Thread safety: every source serialises its reads with a lock, so a source may be read
from a worker thread (reads of one source run one at a time).
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from howard_core.errors import HowardError
from howard_core.io import images
from howard_core.io.color import ColorConverter, make_converter
from howard_core.io.frames import SequencePattern, format_frames, full_range

MISSING_MODES = ("error", "hold")
_HINT = "pass --frames to choose existing frames or --missing hold to repeat the previous frame"


class FrameSource:
    """Frames of one input, in its native colour space or in the network's working space.

    Attributes: `frame_numbers` (list[int], the frames this source provides), `width`,
    `height` (pixels), `colorspace` (canonical input space name), `is_still`, `kind`
    (`sequence`, `movie` or `still`), `fps` (Fraction or None), `pattern`
    (`SequencePattern` or None), `missing_frames` (frames held from neighbours),
    `clip_range` ((first, last) frame number of the whole clip, whatever `frames` selected:
    the pipeline maps plate to clean-plate time over it, so farm chunks agree).
    """

    kind = "still"
    fps: Fraction | None = None
    pattern: SequencePattern | None = None

    def __init__(self, path: Path, converter: ColorConverter, frame_numbers: list[int], width: int, height: int):
        self.path = path
        self.converter = converter
        self.frame_numbers = list(frame_numbers)
        self.width = width
        self.height = height
        self.missing_frames: list[int] = []
        self._lock = threading.Lock()

    @property
    def colorspace(self) -> str:
        return self.converter.name

    @property
    def is_still(self) -> bool:
        return self.kind == "still"

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"<{type(self).__name__} {self.path} {size} {len(self)} frames {self.colorspace}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def path_for(self, n: int) -> str:
        """Human-readable location of frame n, for messages and reports."""
        return str(self.path)

    def read_native(self, n: int) -> np.ndarray:
        """Frame n as HxWx3 float32 in the file's own colour space, unclipped (C is always 3)."""
        with self._lock:
            return self._read(n)

    def read(self, n: int) -> np.ndarray:
        """Frame n as HxWx3 float32 display-referred sRGB clipped to 0..1 (the network's input)."""
        return self.converter.to_working(self.read_native(n))

    def to_working(self, native_rgb: np.ndarray) -> np.ndarray:
        """HxWx3 float32 in this source's space -> working sRGB 0..1."""
        return self.converter.to_working(native_rgb)

    def from_working(self, working_rgb: np.ndarray) -> np.ndarray:
        """HxWx3 float32 working sRGB 0..1 -> this source's space."""
        return self.converter.from_working(working_rgb)

    def _read(self, n: int) -> np.ndarray:
        raise NotImplementedError


class StillSource(FrameSource):
    """One image that every frame number maps to (read once, then served from memory)."""

    kind = "still"

    def __init__(self, path: Path, converter, frames, layer):
        self._info = images.probe(path, layer)
        super().__init__(path, converter, frames or [0], self._info.width, self._info.height)
        self._pixels: np.ndarray | None = None
        self.clip_range = (self.frame_numbers[0], self.frame_numbers[-1])

    def _read(self, n: int) -> np.ndarray:
        if self._pixels is None:
            self._pixels = images.read_rgb(self.path, self._info)
        return self._pixels.copy()


class SequenceSource(FrameSource):
    """Numbered image files; frames missing on disk are an error or held (`missing="hold"`)."""

    kind = "sequence"

    def __init__(self, pattern: SequencePattern, converter, frames, missing, layer):
        existing = pattern.discover()
        if not pattern.folder.is_dir():
            raise HowardError(f"{pattern.display}: folder {pattern.folder} does not exist; check the path")
        if not existing:
            raise HowardError(
                f"{pattern.display}: no frames found on disk{pattern.padding_hint()}; check the path and padding"
            )
        wanted = list(frames) if frames else full_range(existing)
        on_disk = set(existing)
        missing_frames = [f for f in wanted if f not in on_disk]
        if len(missing_frames) == len(wanted):
            raise HowardError(
                f"{pattern.path(wanted[0])}: none of frames {format_frames(wanted)} exist "
                f"(frames on disk: {format_frames(existing)}); pass --frames within that range"
            )
        if missing_frames and missing == "error":
            raise HowardError(
                f"{pattern.path(missing_frames[0])}: missing ({len(missing_frames)} of {len(wanted)} frames "
                f"missing: {format_frames(missing_frames)}); {_HINT}"
            )
        self.pattern = pattern
        self._existing = existing
        self._layer = layer
        first = next(f for f in wanted if f in on_disk)
        self._info = images.probe(pattern.path(first), layer)
        super().__init__(pattern.path(first), converter, wanted, self._info.width, self._info.height)
        self.missing_frames = missing_frames
        self._missing = missing
        self.clip_range = (existing[0], existing[-1])

    def path_for(self, n: int) -> str:
        return str(self.pattern.path(n))

    def _held_frame(self, n: int) -> int:
        i = bisect.bisect_right(self._existing, n)
        return self._existing[i - 1] if i > 0 else self._existing[0]

    def _read(self, n: int) -> np.ndarray:
        path = self.pattern.path(n)
        if not path.is_file():
            if self._missing != "hold":
                raise HowardError(f"{path}: missing; {_HINT}")
            path = self.pattern.path(self._held_frame(n))
        rgb = images.read_rgb(path, self._info, self._layer)
        if rgb.shape[:2] != (self.height, self.width):
            raise HowardError(
                f"{path}: is {rgb.shape[1]}x{rgb.shape[0]} but frame {self.frame_numbers[0]} is "
                f"{self.width}x{self.height}; all frames of a sequence must be the same size"
            )
        return rgb


class MovieSource(FrameSource):
    """A movie; the k-th frame in presentation order is frame number `start_frame + k`.

    See `howard_core.io.movie` for how reads stay frame-accurate.
    """

    kind = "movie"

    def __init__(self, path: Path, converter, frames, missing, start_frame: int):
        from howard_core.io.movie import MovieReader

        self._reader = MovieReader(path)
        self.start_frame = start_frame
        count = len(self._reader)
        last = start_frame + count - 1
        wanted = list(frames) if frames else list(range(start_frame, last + 1))
        outside = [f for f in wanted if not start_frame <= f <= last]
        if outside and missing == "error":
            raise HowardError(
                f"{path}: has frames {start_frame}-{last} but frames {format_frames(outside)} were asked for "
                f"(movie frames count from {start_frame}); {_HINT}"
            )
        super().__init__(path, converter, wanted, self._reader.width, self._reader.height)
        self.fps = self._reader.fps
        self.missing_frames = outside
        self._count = count
        self.clip_range = (start_frame, last)

    def path_for(self, n: int) -> str:
        return f"{self.path} (frame {n})"

    def _read(self, n: int) -> np.ndarray:
        # Out of range only with missing="hold": clamp to the first/last frame.
        return self._reader.frame(min(max(n - self.start_frame, 0), self._count - 1))

    def close(self) -> None:
        with self._lock:
            self._reader.close()


def open_source(
    spec: str | os.PathLike,
    frames: list[int] | None = None,
    colorspace: str | None = None,
    ocio_config: str | None = None,
    missing: str = "error",
    layer: str | None = None,
    start_frame: int = 0,
) -> FrameSource:
    """Open a plate or clean plate: sequence pattern, folder of one sequence, movie or still.

    `frames`: the frame numbers wanted (None = all on disk / all in the movie).
    `colorspace`: input space (None = by file type: EXR linear, others sRGB; see
    `howard_core.io.color`). `missing`: "error" or "hold" (repeat the nearest earlier
    frame, or the first one for frames before the sequence / past a movie's end).
    `layer`: which EXR layer is the colour (see `howard_core.io.images`).
    `start_frame`: the number of a movie's first frame (default 0; timecode is not read),
    e.g. the plate's first frame so a clean-plate movie lines up with a 1001-based plate.
    Ignored for sequences (numbered by their files) and stills (any number maps).
    """
    if missing not in MISSING_MODES:
        raise HowardError(f"--missing {missing!r} is not known; use one of {', '.join(MISSING_MODES)}")
    spec_str = os.fspath(spec)
    pattern = SequencePattern.parse(spec_str)
    if pattern is None and Path(spec_str).is_dir():
        pattern = _single_sequence_in(Path(spec_str))
    if pattern is not None:
        converter = make_converter(colorspace, ocio_config, pattern.path(0))
        return SequenceSource(pattern, converter, frames, missing, layer)
    path = Path(spec_str)
    if not path.exists():
        raise HowardError(f"{path}: file not found; check the path, or write a sequence as plate.####.exr")
    converter = make_converter(colorspace, ocio_config, path)
    from howard_core.io.movie import is_movie

    if is_movie(path):
        return MovieSource(path, converter, frames, missing, start_frame)
    return StillSource(path, converter, frames, layer)


_IMAGE_NAME = re.compile(r"^(?!\.).*\d\.[A-Za-z0-9]+$")


def _single_sequence_in(folder: Path) -> SequencePattern:
    # Group numbered files by name around the number; padding = the shortest number seen,
    # so plate.9999.exr and plate.10000.exr stay one sequence.
    widths: dict[tuple[str, str], int] = {}
    for name in sorted(os.listdir(folder)):
        found = SequencePattern.from_numbered_file(folder / name) if _IMAGE_NAME.match(name) else None
        if found is None or found[0].ext in (".json", ".txt", ".xml", ".log"):
            continue
        pat = found[0]
        key = (pat.prefix, pat.suffix)
        widths[key] = min(widths.get(key, pat.padding), pat.padding)
    if not widths:
        raise HowardError(f"{folder}: folder has no numbered image sequence; give a pattern such as plate.####.exr")
    patterns = [SequencePattern(folder, pre, suf, pad) for (pre, suf), pad in widths.items()]
    if len(patterns) > 1:
        listed = ", ".join(p.display for p in patterns[:3])
        raise HowardError(f"{folder}: folder holds {len(patterns)} sequences ({listed}); give the pattern of one")
    return patterns[0]

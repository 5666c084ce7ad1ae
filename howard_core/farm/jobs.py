"""What every farm engine shares: chunks of frames, the command a chunk runs, path mapping and the
merged report.

A chunk is a list of plate frame numbers, written on command lines as `parse_frames` text
(`1001-1010`, or `1001-1009x2,1013` for gappy clips).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from howard_core.errors import HowardError
from howard_core.settings import format_frames

# Chunks a farm is given by default per worker: enough to balance uneven nodes, few enough that the
# model load (2-5 s per chunk for a command-line engine) stays small beside the frames. Longer chunks
# are whole alignment segments, so they start where alignment state starts afresh and align nothing
# twice (see howard_core.align.sequence).
CHUNKS_PER_WORKER = 2
MAX_SEGMENTS_PER_CHUNK = 4
REPORT_FOLDER = "howard_chunks"


def split_chunks(frames: list[int], chunk_size: int) -> list[list[int]]:
    """Consecutive runs of `chunk_size` frames (the last may be shorter)."""
    if chunk_size < 1:
        raise HowardError(f"chunk size must be at least 1 frame, got {chunk_size}")
    return [frames[i:i + chunk_size] for i in range(0, len(frames), chunk_size)]


def default_chunk_size(n_frames: int, workers: int) -> int:
    from howard_core.align.sequence import SEGMENT_FRAMES

    size = math.ceil(n_frames / max(1, workers * CHUNKS_PER_WORKER))
    if size >= SEGMENT_FRAMES // 2:
        size = SEGMENT_FRAMES * max(1, min(MAX_SEGMENTS_PER_CHUNK, round(size / SEGMENT_FRAMES)))
    return max(1, size)


def chunk_text(chunk: list[int]) -> str:
    """`--frames` text for a chunk, with steps kept compact: [1001, 1003, 1005] -> '1001-1005x2'."""
    return format_frames(chunk, steps=True)


@dataclass(frozen=True)
class PathMap:
    """Prefix rewrites from workstation paths to the paths farm nodes see, e.g. /Volumes/show -> /mnt/show.

    Built from `--path-map FROM=TO` items; the longest matching prefix wins. Paths are made absolute
    first, since a farm node does not share the submitting shell's working folder.
    """

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, items) -> PathMap:
        rules = []
        for item in items or ():
            src, sep, dst = str(item).partition("=")
            if not sep or not src or not dst:
                raise HowardError(f"--path-map {item!r}: write it as WORKSTATION_PREFIX=FARM_PREFIX, e.g. "
                                  f"/Volumes/show=/mnt/show")
            rules.append((src.rstrip("/") or "/", dst.rstrip("/") or "/"))
        return cls(tuple(sorted(rules, key=lambda r: -len(r[0]))))

    def __call__(self, path) -> str:
        text = os.path.abspath(os.fspath(path))
        for src, dst in self.rules:
            if text == src or text.startswith(src.rstrip("/") + "/"):
                return dst + text[len(src):] if src != "/" else dst.rstrip("/") + text
        return text

    def file_option(self, value):
        """An option that may name a file (--model, --ocio-config): mapped where it is a file here,
        as given otherwise (an installed weights name, a config the farm has)."""
        return self(value) if value is not None and os.path.exists(value) else value


def chunk_report_path(folder: Path, chunk: list[int]) -> Path:
    return folder / REPORT_FOLDER / f"howard_report.{chunk_text(chunk)}.json"


@dataclass(frozen=True)
class Clip:
    """What a farm job needs to know of its clip before any node runs: the plate frames to matte, the
    output folder (for reports) and the output's display name."""

    frames: list[int]
    folder: Path
    display: str

    @property
    def merged_report(self) -> Path:
        """Where the whole job's report goes: the name a one-machine run of the clip gives its report."""
        from howard_core.job import report_file

        return report_file(self.folder, self.frames)


def survey(plate, clean_plate, output, settings) -> Clip:
    """Lists the plate's frames and checks the clean plate and the output as `pipeline.matte` would
    (`settings`: a MatteSettings), on the submitting machine, so a farm job with a bad input fails
    here in one line instead of on every node."""
    from howard_core.io import open_sink
    from howard_core.job import Inputs, output_kind

    kind = output_kind(output, settings.format)
    if kind == "prores":
        raise HowardError(f"{output}: a ProRes movie cannot be written in chunks on a farm; write an EXR or PNG "
                          f"sequence (encode the movie from it afterwards)")
    with Inputs.open(plate, clean_plate, settings) as inputs:
        numbers = list(inputs.plate.frame_numbers)
        sink = open_sink(output, kind, like=inputs.plate, layers=settings.layers, compression=settings.compression)
        inputs.guard(sink)
        folder = Path(sink.path_for(numbers[0])).parent
        display = sink.display
        sink.close()
    return Clip(numbers, folder, display)


def chunk_size_for(requested: int | None, n_frames: int, workers: int) -> int:
    """The chunk size asked for (refused below 1 by `split_chunks`), else the default."""
    return requested if requested is not None else default_chunk_size(n_frames, workers)


@dataclass(frozen=True)
class FarmJob:
    """A command-line farm job (OpenJD, OpenCue): paths as the farm nodes see them, the `howard matte`
    options the user gave (argv, `MatteSettings.to_argv`) and the chunks."""

    plate: str
    clean_plate: str
    output: str
    options: tuple[str, ...]
    frames: list[int]
    chunks: list[list[int]]
    report_folder: str
    merged_report: str
    howard: str

    def matte_argv(self, frames_text: str, report: str) -> list[str]:
        """The command one chunk runs."""
        return [self.howard, "matte", self.plate, self.clean_plate, "-o", self.output, *self.options,
                "--frames", frames_text, "--resume", "--progress", "json", "--report", report]

    def merge_argv(self) -> list[str]:
        return [self.howard, "farm", "merge-reports", self.report_folder, "-o", self.merged_report,
                "--frames", chunk_text(self.frames)]


def howard_command() -> str:
    """This install's `howard` executable, which farm nodes run unless told otherwise."""
    import shutil
    import sys

    exe = Path(sys.argv[0])
    if exe.name == "howard" and exe.exists():
        return str(exe.resolve())
    return shutil.which("howard") or str(Path(sys.executable).with_name("howard"))


def merge_reports(paths, out: Path, *, engine: dict, chunks: list[dict] | None = None,
                  expected: list[int] | None = None) -> dict:
    """One report for a whole farm job from its chunk reports (`howard matte` reports).

    Frames appear once each, in order; a frame a chunk's later attempt skipped keeps the record of
    the attempt that wrote it. `chunks`: the engine's per-chunk records (worker, seconds, retries).
    """
    from howard_core.io import write_json_atomic

    frames: dict[int, dict] = {}
    first = None
    missing = []
    for path in paths:
        path = Path(path)
        try:
            rep = json.loads(path.read_text())
        except FileNotFoundError:
            missing.append(str(path))
            continue
        except (OSError, ValueError) as exc:
            raise HowardError(f"{path}: chunk report cannot be read ({exc}); rerun that chunk") from None
        first = first or rep
        for rec in rep.get("frames", []):
            frames.setdefault(int(rec["frame"]), rec)
    if first is None:
        raise HowardError(f"no chunk report found (looked for {len(missing)} files such as "
                          f"{missing[0] if missing else out}); did the farm job run?")
    if expected is not None:
        wanted = set(expected)
        frames = {n: rec for n, rec in frames.items() if n in wanted}
    ordered = [frames[n] for n in sorted(frames)]
    merged = {
        "howard": "matte report", "plate": first.get("plate"), "clean_plate": first.get("clean_plate"),
        "output": first.get("output"), "output_kind": first.get("output_kind"), "layers": first.get("layers"),
        "frames_done": len(ordered), "model": first.get("model"), "settings": first.get("settings"),
        "engine": engine, "chunks": chunks or [], "missing_chunk_reports": missing,
        "frames_without_record": [n for n in (expected or []) if n not in frames],
        "flagged_frames": [r["frame"] for r in ordered if r.get("flagged")],
        "merged": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": first.get("versions"), "frames": ordered,
    }
    write_json_atomic(out, merged)
    merged["report"] = str(out)
    return merged

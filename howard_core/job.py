"""The skeleton every job shares: `howard matte` (`pipeline`), `howard align` (`clean_plate`) and
the farm engines' checks (`farm.jobs.survey`).

    with Inputs.open(plate, clean_plate, settings) as inputs:
        sink = open_sink(output, ..., like=inputs.plate)
        inputs.guard(sink)                       # never overwrite the clean plate
        aligner = inputs.sequence_aligner()      # the clean plate fitted to each plate frame

`Stage` runs one step of a job on its own thread between bounded queues; `report_path` names a
run's JSON report; `Emitter` sends the job's progress events (`howard_core.events`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from howard_core import events
from howard_core.errors import HowardError
from howard_core.settings import MatteSettings

OUTPUT_KINDS = {".exr": "exr", ".png": "png", ".mov": "prores"}
END = object()  # what a stage passes on after its last item


def output_kind(output, kind: str | None) -> str:
    """The output's kind: as given, else from its name; a folder (no known extension) gets EXR, the comp's format."""
    if kind is not None:
        return kind
    return OUTPUT_KINDS.get(Path(os.fspath(output)).suffix.lower(), "exr")


def clean_colorspace(plate, clean_plate, settings: MatteSettings) -> str | None:
    """The clean plate's input space: as given; else the plate's when both are the same file
    type (same camera, same pipeline); else by its own file type."""
    if settings.clean_colorspace is not None:
        return settings.clean_colorspace
    same_type = Path(os.fspath(plate)).suffix.lower() == Path(os.fspath(clean_plate)).suffix.lower()
    return settings.colorspace if same_type else None


class Inputs:
    """A job's two inputs, open: `plate` and `clean` (`howard_core.io` FrameSources, working colour
    display sRGB 0..1), with `settings`. Use `Inputs.open` as a context manager."""

    def __init__(self, specs: tuple, plate, clean, settings: MatteSettings, stack: ExitStack):
        self.plate_spec, self.clean_spec = specs  # as the caller named them (pattern, folder, movie...)
        self.plate, self.clean, self.settings = plate, clean, settings
        self._stack = stack
        first, last = plate.clip_range
        self.first, self.plate_count = first, last - first + 1
        self.clean_numbers = clean.frame_numbers

    @classmethod
    def open(cls, plate, clean_plate, settings: MatteSettings) -> Inputs:
        from howard_core.io import open_source

        s = settings
        with ExitStack() as stack:
            src = stack.enter_context(open_source(plate, frames=list(s.frames) if s.frames is not None else None,
                                                  colorspace=s.colorspace, ocio_config=s.ocio_config,
                                                  missing=s.missing))
            clean = stack.enter_context(open_source(clean_plate, colorspace=clean_colorspace(plate, clean_plate, s),
                                                    ocio_config=s.ocio_config))
            return cls((plate, clean_plate), src, clean, s, stack.pop_all())

    def __enter__(self) -> Inputs:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def guard(self, sink) -> None:
        """HowardError if writing the plate's frames to `sink` would replace clean-plate files
        (`open_sink` refuses the plate's own; the clean plate is only known here)."""
        clean = self.clean
        if clean.kind == "sequence":
            clean_files = {os.path.realpath(clean.path_for(n)) for n in clean.frame_numbers}
        else:
            clean_files = {os.path.realpath(clean.path)}
        for n in self.plate.frame_numbers:
            if os.path.realpath(sink.path_for(n)) in clean_files:
                raise HowardError(f"{sink.path_for(n)}: output would overwrite the clean plate; choose another "
                                  f"output name or folder")

    def read_clean(self, j: int):
        """Clean-plate frame by clip index j (0 = its first), H x W x 3 float32 working colour."""
        return self.clean.read(self.clean_numbers[j])

    def clean_source(self, j: int) -> str:
        return self.clean.path_for(self.clean_numbers[j])

    def sequence_aligner(self):
        """A `SequenceAligner` over the whole clip, reading the plate's other frames itself so a chunk
        or a resumed run aligns like the whole clip. Closed with the inputs."""
        from howard_core.align.sequence import PlateFrames, SequenceAligner

        s = self.settings
        history = PlateFrames(self.plate_spec, self.first, self.first + self.plate_count - 1,
                              colorspace=s.colorspace, ocio_config=s.ocio_config, missing=s.missing)
        self._stack.callback(history.close)
        return SequenceAligner(self.plate_count, len(self.clean_numbers), self.read_clean, window=s.window,
                               offset=s.clean_offset, scale=s.clean_scale, keep_qc=False, history=history)


def report_path(explicit, sink, frames: list[int], stem: str = "howard_report") -> Path:
    """The run report's path: `explicit`, else `report_file` beside the outputs."""
    if explicit is not None:
        return Path(explicit)
    return report_file(Path(sink.path_for(frames[0] if frames else 0)).parent, frames, stem)


def report_file(folder, frames: list[int], stem: str = "howard_report") -> Path:
    """`folder/<stem>.<first>-<last>.json`, the name a run's report gets for these frames."""
    span = f"{frames[0]}-{frames[-1]}" if frames else "none"
    return Path(folder) / f"{stem}.{span}.json"


class Emitter:
    """Sends a job's progress events (as `events.as_dict` dicts) to `progress`, and counts frames."""

    def __init__(self, progress: Callable[[dict], None] | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.t0 = time.perf_counter()

    def send(self, event) -> None:
        if self.progress:
            self.progress(events.as_dict(event))

    def frame(self, number: int, flagged: bool, reason: str | None, output: str) -> None:
        self.done += 1
        self.send(events.Frame.after(number, self.done, self.total, time.perf_counter() - self.t0,
                                     flagged=flagged, reason=reason, output=output))


def put(q: queue.Queue, item, stop: threading.Event) -> None:
    """Put that gives up once the job is stopping, so no thread blocks on a dead consumer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class Stage(threading.Thread):
    """Runs `fn` over items from `inbox` (or the iterable `items`), passing results to `outbox`
    (None for the last stage), in order.

    An exception stops the whole job: it is kept for the main thread to re-raise.
    """

    def __init__(self, name: str, fn, inbox: queue.Queue | None, outbox: queue.Queue | None,
                 stop: threading.Event, items=None):
        super().__init__(name=f"howard-{name}", daemon=True)
        self.fn, self.inbox, self.outbox, self.stop, self.items = fn, inbox, outbox, stop, items
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # this thread's own CPU time in fn, for the CPU budget

    def _source(self):
        if self.items is not None:
            yield from self.items
            return
        while not self.stop.is_set():
            try:
                item = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                return
            yield item

    def run(self) -> None:
        try:
            for item in self._source():
                if self.stop.is_set():
                    return
                start, cpu = time.perf_counter(), time.thread_time()
                result = self.fn(item)
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.thread_time() - cpu
                if self.outbox is not None:
                    put(self.outbox, result, self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self.stop.set()
        finally:
            if self.outbox is not None:
                put(self.outbox, END, self.stop)

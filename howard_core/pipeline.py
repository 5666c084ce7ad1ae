"""The main job: plate + clean plate in, mattes out, streamed frame by frame.

    from howard_core import matte
    report = matte("plate.####.exr", "clean.mov", "out/", layers=["fg", "err"])

Four stages run concurrently, joined by small bounded queues so memory stays flat
whatever the clip length: a reader thread (decode + colour conversion), an
alignment thread (clean plate fitted to each plate frame), inference on the
calling thread (batched), and a writer thread (colour back to the plate's space,
atomic writes, progress, QC). Frames whose outputs are complete are skipped with
`resume=True`; every chunk maps plate time to clean-plate time over the whole
clip, so `frames` chunks on a farm are independent and agree with a full run.

Start-up: torch is imported and the model loaded and prepared on a thread of its own
(`runtime.InBackground`) while the inputs open and the first frames are read and aligned.

CPU budget: how many threads inference gets on the CPU is measured, not fixed: it starts
with every core the process may use (within torch's setting, so OMP_NUM_THREADS and farm
slot limits hold) and follows, frame by frame, what the reader, aligner and writer cost
on this run (`runtime.CpuBudget`); the report's `settings.cpu_budget` says what was chosen.
Long runs should start their process with `howard_core.runtime.prepare_process()` (the
`howard` command does) so frames freed across threads do not fragment malloc arenas and
idle OpenMP workers do not spin.

Colour: the network sees display-referred sRGB 0..1 (`FrameSource.read`). The
foreground is written back in the plate's own space; where the plate held values
the working space clips (scene-linear highlights above 1, negatives), those are
carried into the foreground in proportion to alpha, so an opaque subject comes
back exactly as it was in the plate. Alpha, error and refinement are data.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import howard_core
from howard_core.errors import HowardError
from howard_core.runtime import CpuBudget, InBackground, cpu_cores

if TYPE_CHECKING:  # torch is imported when a job starts (on its own thread), not with this module
    import torch

LAYERS = ("fg", "err", "ref", "bg")
OUTPUT_KINDS = {".exr": "exr", ".png": "png", ".mov": "prores"}
_END = object()


def output_kind(output, kind: str | None) -> str:
    if kind is not None:
        return kind
    # A folder (no known extension) gets EXR, the comp's format.
    return OUTPUT_KINDS.get(Path(os.fspath(output)).suffix.lower(), "exr")


def _clean_colorspace(plate, clean_plate, colorspace, clean_colorspace):
    """The clean plate's input space: as given; else the plate's when both are the same file
    type (same camera, same pipeline); else by its own file type."""
    if clean_colorspace is not None:
        return clean_colorspace
    same_type = Path(os.fspath(plate)).suffix.lower() == Path(os.fspath(clean_plate)).suffix.lower()
    return colorspace if same_type else None


def check_not_clean_plate(sink, clean, frames) -> None:
    """HowardError if writing `frames` to `sink` would replace clean-plate files (`open_sink`
    refuses the plate's own; the clean plate is only known here)."""
    if clean.kind == "sequence":
        clean_files = {os.path.realpath(clean.path_for(n)) for n in clean.frame_numbers}
    else:
        clean_files = {os.path.realpath(clean.path)}
    for n in frames:
        if os.path.realpath(sink.path_for(n)) in clean_files:
            raise HowardError(f"{sink.path_for(n)}: output would overwrite the clean plate; choose another "
                              f"output name or folder")


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """Put that gives up once the pipeline is stopping, so no thread blocks on a dead consumer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def resolve_model(model):
    from howard_core.model import load_model
    from howard_core.model.network import MattingBase

    if isinstance(model, MattingBase):
        return model
    if model is None:
        return load_model()
    from howard_core.weights import resolve

    return load_model(resolve(model))


def versions() -> dict:
    """Versions of Howard and the libraries it runs on, for reports and `howard info`."""
    import cv2
    import OpenImageIO
    import torch

    return {"howard": howard_core.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "openimageio": OpenImageIO.__version__,
            "opencolorio": _version("PyOpenColorIO", "opencolorio"), "av": _version("av", "av")}


def _version(module: str, dist: str) -> str | None:
    # From the installed package's metadata unless already imported: importing PyAV only to name its
    # version loads FFmpeg (16 MB resident) at the end of runs that read no movie.
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _Stage(threading.Thread):
    """Runs `fn` over items from `inbox` (or the iterable `items`), passing results to `outbox`
    (None for the last stage), in order.

    An exception stops the whole pipeline: it is kept for the main thread to re-raise.
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
            if item is _END:
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
                    _put(self.outbox, result, self.stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self.stop.set()
        finally:
            if self.outbox is not None:
                _put(self.outbox, _END, self.stop)


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 float32 arrays -> (B, 3, H, W) view in channels-last memory (Matter makes the one copy it needs)."""
    import torch

    batch = frames[0][None] if len(frames) == 1 else np.stack(frames)  # one frame: no stacking copy
    return torch.from_numpy(batch).permute(0, 3, 1, 2)


def _report_path(report, sink, frames: list[int]) -> Path:
    if report is not None:
        return Path(report)
    folder = Path(sink.path_for(frames[0] if frames else 0)).parent
    span = f"{frames[0]}-{frames[-1]}" if frames else "none"
    return folder / f"howard_report.{span}.json"


def matte(plate, clean_plate, output, *, frames: list[int] | None = None, kind: str | None = None,
          layers=(), model=None, preset: str | None = None, backbone_scale: float | None = None,
          refine_mode: str | None = None, sample_pixels: int | None = None, refine_threshold: float | None = None,
          device: str = "auto", precision: str = "auto", colorspace: str | None = None,
          clean_colorspace: str | None = None, ocio_config: str | None = None, missing: str = "error",
          resume: bool = False, align: bool = True, window: int = 2, clean_offset: float | None = None,
          clean_scale: float | None = None, batch_size: int = 1, threads: int | None = None,
          report: str | os.PathLike | None = None, progress: Callable[[dict], None] | None = None,
          queue_size: int = 2, compression: str | None = None) -> dict:
    """Pull a matte for every plate frame; returns the run report (also written as JSON).

    plate, clean_plate: sequence pattern (`####`, `%04d`, `@@@@`), folder, movie or still.
    output: pattern, file or folder; `kind` exr|png|alpha|prores (default from the name,
    a folder gives EXR). layers: extra EXR layers from fg (straight foreground), err,
    ref, bg (aligned clean plate). compression: EXR codec (default zip; see
    `howard_core.io.sink.EXR_COMPRESSIONS`). model: None (bundled default), a checkpoint path, an
    installed weights name, or a loaded model. preset / backbone_scale / refine_mode /
    sample_pixels / refine_threshold: network settings. device, precision: see `Matter`.
    colorspace / clean_colorspace / ocio_config: input colour spaces (default by file type).
    missing: error|hold for missing plate frames. resume: skip frames already complete.
    align: False when the clean plate already lines up (locked-off camera). window,
    clean_offset, clean_scale: clean-plate candidate search (see `howard_core.align`).
    threads: CPU threads for inference on the CPU (default: measured per frame, between one and
    torch's setting within the cores this process may use; see `runtime.CpuBudget`).
    progress: called with one dict per event ("start", "frame", "done").
    queue_size: frames waiting between two stages (each HD frame in flight holds 50-100 MB;
    on 2 cores a queue of 1 or 2 ran as fast as 3 and peaked 60-210 MiB lower).
    """
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise HowardError(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(LAYERS)}")
    if batch_size < 1:
        raise HowardError(f"batch size must be at least 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise HowardError(f"threads must be at least 1, got {threads}")
    if queue_size < 1:  # queue.Queue(0) would be unbounded: memory would grow with the clip
        raise HowardError(f"queue size must be at least 1, got {queue_size}")
    kind = output_kind(output, kind)
    started = time.time()
    # Importing torch and loading the model take longer than opening the inputs and reading and
    # aligning the first frame: the two run side by side, and inference waits only for what is left.
    prepared = InBackground(_prepare_matter, model, device=device, precision=precision, preset=preset,
                            backbone_scale=backbone_scale, refine_mode=refine_mode, refine_sample_pixels=sample_pixels,
                            refine_threshold=refine_threshold)
    try:
        return _matte(prepared, plate, clean_plate, output, frames=frames, kind=kind, layers=layers,
                      colorspace=colorspace, clean_colorspace=clean_colorspace, ocio_config=ocio_config,
                      missing=missing, resume=resume, align=align, window=window, clean_offset=clean_offset,
                      clean_scale=clean_scale, batch_size=batch_size, threads=threads, report=report,
                      progress=progress, queue_size=queue_size, compression=compression, started=started)
    finally:
        prepared.join()  # on a failure, never leave the loader running into interpreter shutdown


def _prepare_matter(model, **settings):
    """(network, Matter) for `matte`: the model resolved (see `resolve_model`) and prepared once."""
    from howard_core.model import Matter
    from howard_core.model.network import MattingBase

    net = resolve_model(model)
    # A model loaded here is only for this Matter: no need to copy it. A caller's model stays untouched.
    return net, Matter(net, copy_model=isinstance(model, MattingBase), **settings)


def _matte(prepared: InBackground, plate, clean_plate, output, *, frames, kind, layers, colorspace,
           clean_colorspace, ocio_config, missing, resume, align, window, clean_offset, clean_scale, batch_size,
           threads, report, progress, queue_size, compression, started) -> dict:
    from howard_core.io import open_sink, open_source, resize_to, write_json_atomic

    with open_source(plate, frames=frames, colorspace=colorspace, ocio_config=ocio_config,
                     missing=missing) as src, \
         open_source(clean_plate, colorspace=_clean_colorspace(plate, clean_plate, colorspace, clean_colorspace),
                     ocio_config=ocio_config) as clean:
        sink = open_sink(output, kind, like=src, layers=layers, compression=compression)
        try:
            check_not_clean_plate(sink, clean, src.frame_numbers)
            todo = [n for n in src.frame_numbers if not (resume and sink.is_complete(n))]
            skipped = len(src.frame_numbers) - len(todo)
            first, last = src.clip_range
            plate_count = last - first + 1
            clean_numbers = clean.frame_numbers

            def get_clean(j: int) -> np.ndarray:
                return clean.read(clean_numbers[j])

            aligner = history = None
            if align:
                from howard_core.align.sequence import PlateFrames, SequenceAligner

                # The plate's other frames, so a chunk or a resumed run aligns like the whole clip.
                history = PlateFrames(plate, first, last, colorspace=colorspace, ocio_config=ocio_config,
                                      missing=missing)
                aligner = SequenceAligner(plate_count, len(clean_numbers), get_clean, window=window,
                                          offset=clean_offset, scale=clean_scale, keep_qc=False, history=history)
            else:
                scale = clean_scale if clean_scale is not None else (
                    (len(clean_numbers) - 1) / (plate_count - 1) if plate_count > 1 else 1.0)
            qc: list[dict] = []

            def read(n):
                native = src.read_native(n)
                return n, native, src.to_working(native)

            def align_stage(item):
                n, native, work = item
                i = n - first
                if n != todo[0]:
                    # Only the first frame is aligned while torch loads: aligning more then slows the
                    # import (both want the GIL) and with it the first frame.
                    prepared.join()
                if aligner is not None:
                    # No earlier frame's matte as the subject mask: which one is ready depends on thread
                    # timing and on where a farm chunk starts, so results would differ run to run. The
                    # aligner keeps the subject out with its own plate/clean-plate difference instead.
                    res = aligner.align_frame(i, work)
                    frame_qc = res.to_qc()
                    frame_qc["clean_source"] = clean.path_for(clean_numbers[frame_qc["clean_frame"]])
                    return n, native, work, res.background, frame_qc, bool(res.flagged)
                j = int(round(min(max((clean_offset or 0.0) + scale * i, 0), len(clean_numbers) - 1)))
                bg = resize_to(get_clean(j), src.width, src.height)
                # clean_frame is the clip index, as the aligner reports it and --clean-offset counts it.
                frame_qc = {"clean_frame": j, "clean_source": clean.path_for(clean_numbers[j]), "aligned": False}
                return n, native, work, bg, frame_qc, False

            timings = {"matte": 0.0}
            done = [0]
            t0 = time.perf_counter()

            keep_work = not src.converter.is_fast  # clipped_away needs it only for OCIO spaces

            def for_writer(item, alpha, fg, err, ref):
                # Only what the writer will use waits in its queue: at HD each dropped plane is 8-25 MB.
                n, native, work, bg, frame_qc, flagged = item
                # Without the err/ref layers inference skipped the full-size maps; ref is then per patch.
                refined = int(ref.sum()) // 16 if ref.shape == alpha.shape else int(ref.sum())
                out = (alpha, fg, err if "err" in layers else None, ref if "ref" in layers else None, refined)
                return n, native, work if keep_work else None, bg if "bg" in layers else None, frame_qc, flagged, out

            def write_stage(item):
                n, native, work, bg, frame_qc, flagged, out = item
                alpha, fg, err, ref, refined = out
                residual = None if sink.kind == "alpha" else src.converter.clipped_away(native, work)
                if sink.stores_working and residual is None and src.converter.is_fast:
                    # PNG/ProRes store the working colour: to the plate's space and back would only round it.
                    sink.write(n, None, alpha, working=fg)
                else:
                    fg_native = src.from_working(fg)
                    if residual is not None:
                        residual *= alpha[..., None]
                        fg_native += residual
                    extra = {}
                    if "fg" in layers:
                        extra["fg"] = fg_native
                    if "err" in layers:
                        extra["err"] = err
                    if "ref" in layers:
                        extra["ref"] = ref
                    if "bg" in layers:
                        extra["bg"] = src.from_working(bg)
                    sink.write(n, fg_native, alpha, extra)
                record = {"frame": n, **frame_qc, "alpha_mean": round(float(alpha.mean()), 5),
                          "refined_patches": refined, "flagged": flagged, "output": sink.path_for(n)}
                qc.append(record)
                done[0] += 1
                elapsed = time.perf_counter() - t0
                fps = done[0] / elapsed if elapsed > 0 else 0.0
                if progress:
                    progress({"event": "frame", "frame": n, "done": done[0], "total": len(todo),
                              "fps": round(fps, 3), "eta_s": round((len(todo) - done[0]) / fps, 1) if fps else None,
                              "flagged": flagged, "reason": frame_qc.get("reason") if flagged else None,
                              "output": sink.path_for(n)})

            stop = threading.Event()
            q_read, q_aligned, q_write = (queue.Queue(queue_size) for _ in range(3))
            stages = [_Stage("read", read, None, q_read, stop, items=todo),
                      _Stage("align", align_stage, q_read, q_aligned, stop),
                      _Stage("write", write_stage, q_write, None, stop)]
            for stage in stages:
                stage.start()
            torch_threads = None
            try:
                net, matter = prepared.result()
                info = {"event": "start", "total": len(todo), "skipped": skipped, "output": sink.display,
                        "model": _model_info(net, matter), "plate": str(plate), "clean_plate": str(clean_plate)}
                if progress:
                    progress(info)
                import torch

                torch_threads = torch.get_num_threads()
                if matter.device.type == "cpu":
                    # The first frames get every core: nothing is known yet of what the others cost, and
                    # until the first frame is out the other stages mostly wait for inference anyway.
                    ceiling = min(torch_threads, cpu_cores())
                    budget = CpuBudget(cpu_cores(), ceiling, ceiling if threads is None else threads, fixed=threads)
                else:  # inference waits on the GPU: the CPU's threads are not what limits it
                    budget = CpuBudget(cpu_cores(), torch_threads, torch_threads, fixed=torch_threads)

                def others_cpu() -> float:
                    return sum(stage.cpu_seconds for stage in stages)

                _infer(matter, q_aligned, q_write, stop, batch_size, timings, for_writer, budget, others_cpu,
                       maps="err" in layers or "ref" in layers)
                stages[2].join()  # the writer ends after the last frame, or at once on a failure
            finally:
                if torch_threads is not None:
                    torch.set_num_threads(torch_threads)
                stop.set()
                for stage in stages:
                    stage.join()
                if history is not None:
                    history.close()
            for stage in stages:
                if stage.error is not None:
                    raise stage.error
            sink.close()
        except BaseException:
            sink.abort()
            raise

        wall = time.perf_counter() - t0
        rep = {
            "howard": "matte report", "plate": str(plate), "clean_plate": str(clean_plate), "output": sink.display,
            "output_kind": kind, "layers": list(layers), "frames_done": len(todo), "frames_skipped": skipped,
            "model": _model_info(net, matter),
            "settings": {"device": str(matter.device), "precision": str(matter.dtype).replace("torch.", ""),
                         "batch_size": batch_size, "threads": budget.most_used(), "cpu_budget": {
                             **budget.summary(), "stage_cpu_s": {name: round(st.cpu_seconds, 3) for name, st in
                                                                 zip(("read", "align", "write"), stages, strict=True)}},
                         "compression": sink.compression,
                         "align": align, "window": window,
                         "clean_offset": clean_offset, "clean_scale": clean_scale, "colorspace": src.colorspace,
                         "clean_colorspace": clean.colorspace, "missing": missing, "resume": resume},
            "timing": {"wall_s": round(wall, 3), "fps": round(len(todo) / wall, 3) if wall > 0 and todo else None,
                       "read_s": round(stages[0].seconds, 3), "align_s": round(stages[1].seconds, 3),
                       "matte_s": round(timings["matte"], 3), "write_s": round(stages[2].seconds, 3),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))},
            "flagged_frames": [r["frame"] for r in qc if r["flagged"]],
            "versions": versions(), "frames": qc,
        }
        path = _report_path(report, sink, todo or src.frame_numbers)
        if todo or not path.exists():  # a resumed run that did nothing keeps the QC of the run that did
            write_json_atomic(path, rep, default=_json_default)
        rep["report"] = str(path)
        if progress:
            progress({"event": "done", "done": len(todo), "total": len(todo), "skipped": skipped,
                      "fps": rep["timing"]["fps"], "report": str(path), "output": sink.display,
                      "flagged_frames": rep["flagged_frames"]})
        return rep


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def weights_status(net) -> dict:
    """{"trained", "demo"} of a loaded model: False for the untrained stand-in, True for Howard's demo weights."""
    meta = getattr(net, "howard_meta", {})
    return {"trained": meta.get("trained", True), "demo": bool(meta.get("meta", {}).get("demo"))}


def _model_info(net, matter) -> dict:
    meta = dict(getattr(net, "howard_meta", {}))
    return {"backbone": meta.get("backbone", getattr(net, "backbone_name", None)), "kind": meta.get("kind"),
            "format": meta.get("format"), "source": meta.get("source"), "sha256": meta.get("sha256"),
            **weights_status(net), "settings": dict(matter.settings)}


def _infer(matter, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event, batch_size: int,
           timings: dict, pack, budget: CpuBudget, others_cpu: Callable[[], float], maps: bool = True) -> None:
    """Inference on the calling thread: batches of same-size frames through `matter`; each frame goes
    on as pack(item, alpha HxW, foreground HxWx3, error HxW, refinement HxW), numpy float32. After each
    batch `budget` hears what it and the other stages (`others_cpu()`: their CPU seconds so far) cost,
    and the threads for the next batch follow from it. `maps`: whether the full-size error and
    refinement maps are wanted (else error is None and refinement per 4x4 patch)."""
    import torch

    torch.set_num_threads(budget.threads)
    batch: list = []
    ended = False
    last_done, last_cpu = None, others_cpu()
    while not ended:
        try:
            item = inbox.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if item is _END:
            ended = True
        else:
            batch.append(item)
        if batch and (ended or len(batch) >= batch_size):
            start = time.perf_counter()
            out = matter(_to_tensor([b[2] for b in batch]), _to_tensor([b[3] for b in batch]), maps=maps)
            # From a GPU to the host once per batch (a no-op on the CPU), inside the timing: on a GPU
            # this is where the wait for its kernels happens.
            out = type(out)(*(None if t is None else t.cpu() for t in out))
            timings["matte"] += time.perf_counter() - start
            for k, item_k in enumerate(batch):
                alpha = out.alpha[k, 0].numpy()
                fg = np.ascontiguousarray(out.foreground[k].permute(1, 2, 0).numpy())
                err = None if out.error is None else out.error[k, 0].numpy()
                _put(outbox, pack(item_k, alpha, fg, err, out.refinement[k, 0].numpy()), stop)
            now, cpu = time.perf_counter(), others_cpu()
            threads = budget.threads
            if budget.record(cpu - last_cpu, None if last_done is None else now - last_done, len(batch)) != threads:
                torch.set_num_threads(budget.threads)
            last_done, last_cpu = now, cpu
            batch = []
    _put(outbox, _END, stop)

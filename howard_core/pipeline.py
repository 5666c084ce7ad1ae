"""The main job: plate + clean plate in, mattes out, streamed frame by frame.

    from howard_core import matte
    report = matte("plate.####.exr", "clean.mov", "out/", layers=["fg", "err"])

Four stages run concurrently, joined by small bounded queues so memory stays flat
whatever the clip length: a reader thread (decode + colour conversion), an
alignment thread (clean plate fitted to each plate frame), inference (batched;
on the CPU two batches at once where there are cores to share), and a writer thread (colour back to the plate's space,
atomic writes, progress, QC). Frames whose outputs are complete are skipped with
`resume=True`; every chunk maps plate time to clean-plate time over the whole
clip, so `frames` chunks on a farm are independent and agree with a full run.

Start-up: torch is imported and the model loaded and prepared on a thread of its own
(`runtime.InBackground`) while the inputs open and the first frames are read and aligned.

CPU budget: how many threads inference gets on the CPU is measured, not fixed: it starts
with every core the process may use (within torch's setting, so OMP_NUM_THREADS and farm
slot limits hold) and follows, frame by frame, what the reader, aligner and writer cost
on this run (`runtime.CpuBudget`); with two or more, after the first frame, two frames are
inferred at once, sharing them. The report's `settings.cpu_budget` says what was chosen.
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

import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from howard_core import events
from howard_core.job import END, Emitter, Inputs, Stage, output_kind, put, report_path
from howard_core.runtime import CpuBudget, InBackground, cpu_cores, versions
from howard_core.settings import LAYERS, MatteSettings
from howard_core.weights import model_info, resolve_model

if TYPE_CHECKING:  # torch is imported when a job starts (on its own thread), not with this module
    import torch

__all__ = ["LAYERS", "FrameItem", "MatteJob", "matte", "to_tensor"]


def matte(plate, clean_plate, output, settings: MatteSettings | None = None, *, report=None, progress=None,
          **overrides) -> dict:
    """Pull a matte for every plate frame; returns the run report (also written as JSON).

    plate, clean_plate: sequence pattern (`####`, `%04d`, `@@@@`), folder, movie or still.
    output: pattern, file or folder. settings: a `MatteSettings` (default: all defaults), with
    `overrides` by option name (`frames=`, `layers=`, `model=`, ...; see `MatteSettings` for each
    one's meaning and default). `model` may also be a loaded network here. report: the run report's
    path (default beside the outputs). progress: called with one dict per event
    (`howard_core.events`: "start", "frame", "done").
    """
    settings = MatteSettings.build(settings, **overrides)
    kind = output_kind(output, settings.format)
    started = time.time()
    # Importing torch and loading the model take longer than opening the inputs and reading and
    # aligning the first frame: the two run side by side, and inference waits only for what is left.
    prepared = InBackground(prepare_matter, settings)
    try:
        with Inputs.open(plate, clean_plate, settings) as inputs:
            from howard_core.io import open_sink

            sink = open_sink(output, kind, like=inputs.plate, layers=settings.layers,
                             compression=settings.compression)
            try:
                inputs.guard(sink)
                job = MatteJob(inputs, sink, prepared, progress)
                job.run()
                sink.close()
            except BaseException:
                sink.abort()
                raise
            return job.finish(kind, started, report)
    finally:
        prepared.join()  # on a failure, never leave the loader running into interpreter shutdown


def prepare_matter(settings: MatteSettings):
    """(network, Matter) for `matte`: the model resolved (see `weights.resolve_model`) and prepared once."""
    from howard_core.runtime import import_frozen

    import_frozen("howard_core.model")
    from howard_core.model import Matter
    from howard_core.model.network import MattingBase

    net = resolve_model(settings.model)
    # A model loaded here is only for this Matter: no need to copy it. A caller's model stays untouched.
    return net, Matter(net, copy_model=isinstance(settings.model, MattingBase), device=settings.device,
                       precision=settings.precision, **settings.network_settings())


@dataclass
class FrameItem:
    """One plate frame on its way through the job; each stage fills in its part and drops what
    later stages do not need (at HD each plane is 8-25 MB).

    native: H x W x C float32 plate in its own colour space. work: H x W x 3 float32 display sRGB
    0..1, the network's input. background: the aligned clean plate, like work. alpha, err, ref:
    H x W float32 0..1 (ref per 4x4 patch when the full-size maps were not wanted); fg: H x W x 3
    straight foreground, working colour.
    """

    number: int
    native: np.ndarray
    work: np.ndarray | None
    background: np.ndarray | None = None
    qc: dict = field(default_factory=dict)
    flagged: bool = False
    alpha: np.ndarray | None = None
    fg: np.ndarray | None = None
    err: np.ndarray | None = None
    ref: np.ndarray | None = None
    refined: int = 0


class MatteJob:
    """The matte job on open inputs: read -> align -> infer -> write, one method per stage.

    `read`, `align` and `write` each run on a thread of their own (`job.Stage`), inference on worker
    threads the calling thread hands batches to and collects them from, in order (`infer`), joined by
    queues of `settings.queue_size` frames.
    """

    def __init__(self, inputs: Inputs, sink, prepared: InBackground, progress=None):
        self.inputs, self.sink, self.prepared, self.progress = inputs, sink, prepared, progress
        self.settings = s = inputs.settings
        src = inputs.plate
        self.todo = [n for n in src.frame_numbers if not (s.resume and sink.is_complete(n))]
        self.skipped = len(src.frame_numbers) - len(self.todo)
        self.aligner = inputs.sequence_aligner() if s.align else None
        # Without alignment each plate frame takes the clean-plate frame nearest its place on the
        # aligner's own timeline.
        from howard_core.align.sequence import Timing

        self.timing = Timing.linear(inputs.plate_count, len(inputs.clean_numbers), s.clean_offset, s.clean_scale)
        self.keep_work = not src.converter.is_fast  # clipped_away needs it only for OCIO spaces
        self.qc: list[dict] = []
        self.matte_s = 0.0
        self.stages: list[Stage] = []
        self.emitter: Emitter | None = None  # started with the stages: its clock is the run's
        self.net = self.matter = self.budget = None
        # Until the first batch is written the stages take turns (see `align`); set then, or on a stop.
        self.first_out = threading.Event()
        self._aligned = 0
        self.opencv_threads: int | None = None  # OpenCV's thread count as the caller had it, once changed

    # -- the stages -----------------------------------------------------------------------------------

    def read(self, n: int) -> FrameItem:
        native = self.inputs.plate.read_native(n)
        return FrameItem(n, native, self.inputs.plate.to_working(native))

    def align(self, item: FrameItem) -> FrameItem:
        from howard_core.io import resize_to

        inputs = self.inputs
        k, self._aligned = self._aligned, self._aligned + 1
        if k > 0:
            # Only the first frame is aligned while torch loads: aligning more then slows the
            # import (both want the GIL) and with it the first frame.
            self.prepared.join()
        if k >= self.settings.batch_size:
            # Nor while the first batch is inferred and written: with both cores to itself, the first
            # HD frame's inference took 0.27 s in a traced run where it took 0.54 s beside the
            # aligner, and the aligner, far quicker than inference, is ahead again within two frames.
            self.first_out.wait()
        i = item.number - inputs.first
        if self.aligner is not None:
            # No earlier frame's matte as the subject mask: which one is ready depends on thread
            # timing and on where a farm chunk starts, so results would differ run to run. The
            # aligner keeps the subject out with its own plate/clean-plate difference instead.
            res = self.aligner.align_frame(i, item.work)
            item.qc = res.to_qc()
            item.qc["clean_source"] = inputs.clean_source(item.qc["clean_frame"])
            item.background, item.flagged = res.background, bool(res.flagged)
            if k == 0:
                self._share_opencv_threads()
            return item
        j = int(round(min(max(self.timing.position(i), 0), len(inputs.clean_numbers) - 1)))
        item.background = resize_to(inputs.read_clean(j), inputs.plate.width, inputs.plate.height)
        # clean_frame is the clip index, as the aligner reports it and --clean-offset counts it.
        item.qc = {"clean_frame": j, "clean_source": inputs.clean_source(j), "aligned": False}
        return item

    def _share_opencv_threads(self) -> None:
        """With inference on the CPU, OpenCV runs single-threaded after the first frame's alignment.

        The aligner already runs beside inference, which wants every core; OpenCV's own worker threads
        then only add CPU time: steady HD alignment took 158-175 ms of CPU per frame on 2 threads
        against 112-116 ms on one, for 101-118 against 112-117 ms of wall time. OpenCV's thread pool
        must not be resized while another thread runs a parallel OpenCV call, so this runs in the
        aligner before the first frame goes on to inference: the writer, the only other stage that
        calls OpenCV, has nothing until then (inference cannot start earlier anyway: it waits for the
        model, as this does). `run` gives the caller's setting back. A GPU job keeps OpenCV's threads:
        there the aligner, not inference, may be what limits it."""
        import cv2

        try:
            on_cpu = self.prepared.result()[1].device.type == "cpu"  # waits for the model, as inference does
        except BaseException:  # noqa: BLE001 - the model's own error is raised by run(), on the main thread
            return
        if on_cpu:
            self.opencv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)

    def infer(self, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event) -> None:
        """Inference: batches of same-size frames through the Matter, up to `budget.streams` of them at
        once on worker threads, handed on in frame order, each with its stream's share of the threads.
        The first batch too, though it runs alone (the other stages wait for it, see `align`): the
        thread count changes the convolutions' rounding (alpha by up to 2e-5), and a frame must come
        out the same whether it opens a farm chunk or not. After each batch the CPU budget hears what
        it and the other stages cost, and the threads for the next batches follow from it."""
        from concurrent.futures import ThreadPoolExecutor

        running: collections.deque = collections.deque()  # batches in flight, oldest first
        batch: list[FrameItem] = []
        ended = False
        clock = [None, self._others_cpu()]  # when the last batch was handed on; the stages' CPU then
        with ThreadPoolExecutor(self.budget.streams, thread_name_prefix="howard-infer") as pool:
            while not ended or running:
                if running and (ended or len(running) >= self.budget.streams or running[0].done()):
                    self._hand_on(*running.popleft().result(), outbox, stop, clock)
                    continue
                try:
                    # While a batch runs, looked in on often: it is handed on as soon as it is done.
                    item = inbox.get(timeout=0.005 if running else 0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is END:
                    ended = True
                else:
                    batch.append(item)
                if batch and (ended or len(batch) >= self.settings.batch_size):
                    running.append(pool.submit(self._infer_batch, batch, self.budget.stream_threads()))
                    batch = []
        put(outbox, END, stop)

    def _hand_on(self, batch: list[FrameItem], seconds: float, outbox: queue.Queue, stop: threading.Event,
                 clock: list) -> None:
        self.matte_s += seconds
        for done in batch:
            put(outbox, done, stop)
        now, cpu = time.perf_counter(), self._others_cpu()
        self.budget.record(cpu - clock[1], None if clock[0] is None else now - clock[0], len(batch))
        clock[:] = now, cpu

    def _infer_batch(self, batch: list[FrameItem], threads: int) -> tuple[list[FrameItem], float]:
        """`batch` through the Matter on this (worker) thread with `threads` CPU threads; returns it
        with its results, and the seconds it took."""
        import torch

        if torch.get_num_threads() != threads:  # torch's thread count is kept per thread
            torch.set_num_threads(threads)
        layers = self.settings.layers
        start = time.perf_counter()
        # Without the err/ref layers inference skips the full-size maps; ref is then per patch.
        out = self.matter(to_tensor([b.work for b in batch]), to_tensor([b.background for b in batch]),
                          maps="err" in layers or "ref" in layers)
        # From a GPU to the host once per batch (a no-op on the CPU), inside the timing: on a GPU
        # this is where the wait for its kernels happens.
        out = type(out)(*(None if t is None else t.cpu() for t in out))
        seconds = time.perf_counter() - start
        for k, item in enumerate(batch):
            # Only what the writer will use waits in its queue.
            item.alpha = out.alpha[k, 0].numpy()
            item.fg = np.ascontiguousarray(out.foreground[k].permute(1, 2, 0).numpy())
            ref = out.refinement[k, 0].numpy()
            item.refined = int(ref.sum()) // 16 if ref.shape == item.alpha.shape else int(ref.sum())
            item.err = out.error[k, 0].numpy() if out.error is not None and "err" in layers else None
            item.ref = ref if "ref" in layers else None
            # Where the working copy is the plate frame itself (sRGB already in 0..1), dropping it frees
            # nothing, and keeping it tells the writer's `clipped_away` at once that nothing was clipped.
            if not self.keep_work and item.work is not item.native:
                item.work = None
            if "bg" not in layers:
                item.background = None
        return batch, seconds

    def write(self, item: FrameItem) -> None:
        src, sink, layers = self.inputs.plate, self.sink, self.settings.layers
        n, alpha = item.number, item.alpha
        residual = None if sink.kind == "alpha" else src.converter.clipped_away(item.native, item.work)
        if sink.stores_working and residual is None and src.converter.is_fast:
            # PNG/ProRes store the working colour: to the plate's space and back would only round it.
            sink.write(n, None, alpha, working=item.fg)
        else:
            fg_native = src.from_working(item.fg)
            if residual is not None:
                residual *= alpha[..., None]
                fg_native += residual
            extra = {"fg": fg_native, "err": item.err, "ref": item.ref,
                     "bg": src.from_working(item.background) if "bg" in layers else None}
            sink.write(n, fg_native, alpha, {name: extra[name] for name in LAYERS if name in layers})
        self.qc.append({"frame": n, **item.qc, "alpha_mean": round(float(alpha.mean()), 5),
                        "refined_patches": item.refined, "flagged": item.flagged, "output": sink.path_for(n)})
        self.emitter.frame(n, item.flagged, item.qc.get("reason"), sink.path_for(n))
        if len(self.qc) >= self.settings.batch_size:  # one QC entry per frame written
            self.first_out.set()

    # -- running them ---------------------------------------------------------------------------------

    def run(self) -> None:
        stop = threading.Event()
        q_read, q_aligned, q_write = (queue.Queue(self.settings.queue_size) for _ in range(3))
        self.emitter = Emitter(self.progress, len(self.todo))
        self.stages = [Stage("read", self.read, None, q_read, stop, items=self.todo),
                       Stage("align", self.align, q_read, q_aligned, stop),
                       Stage("write", self.write, q_write, None, stop)]
        for stage in self.stages:
            stage.start()
        torch_threads = None
        try:
            self.net, self.matter = self.prepared.result()
            self.emitter.send(events.Start(len(self.todo), self.skipped, self.sink.display,
                                           model_info(self.net, self.matter), str(self.inputs.plate_spec),
                                           str(self.inputs.clean_spec)))
            import torch

            torch_threads = torch.get_num_threads()
            self.budget = self._cpu_budget(torch_threads)
            self.infer(q_aligned, q_write, stop)
            self.stages[2].join()  # the writer ends after the last frame, or at once on a failure
        finally:
            if torch_threads is not None:
                torch.set_num_threads(torch_threads)
            stop.set()
            self.first_out.set()
            for stage in self.stages:
                stage.join()
            if self.opencv_threads is not None:
                import cv2

                cv2.setNumThreads(self.opencv_threads)
        for stage in self.stages:
            if stage.error is not None:
                raise stage.error

    def _cpu_budget(self, torch_threads: int) -> CpuBudget:
        threads = self.settings.threads
        if self.matter.device.type == "cpu":
            # The first frames get every core: nothing is known yet of what the others cost, and
            # until the first frame is out the other stages mostly wait for inference anyway.
            ceiling = min(torch_threads, cpu_cores())
            # Two frames at once wherever two threads are there to share (see `CpuBudget`); a user's
            # one thread is one frame at a time.
            streams = 2 if (ceiling if threads is None else threads) >= 2 else 1
            return CpuBudget(cpu_cores(), ceiling, ceiling if threads is None else threads, fixed=threads,
                             streams=streams)
        # Inference waits on the GPU: the CPU's threads are not what limits it.
        return CpuBudget(cpu_cores(), torch_threads, torch_threads, fixed=torch_threads)

    def _others_cpu(self) -> float:
        return sum(stage.cpu_seconds for stage in self.stages)

    def finish(self, kind: str, started: float, report=None) -> dict:
        """Write the run report (unless a resumed run did nothing), send "done"; returns the report."""
        from howard_core.io import write_json_atomic

        rep = build_report(self, kind, started, time.perf_counter() - self.emitter.t0)
        path = report_path(report, self.sink, self.todo or self.inputs.plate.frame_numbers)
        if self.todo or not path.exists():  # a resumed run that did nothing keeps the QC of the run that did
            write_json_atomic(path, rep, default=_json_default)
        rep["report"] = str(path)
        self.emitter.send(events.Done(len(self.todo), len(self.todo), self.skipped, rep["timing"]["fps"], str(path),
                                      self.sink.display, rep["flagged_frames"]))
        return rep


def build_report(job: MatteJob, kind: str, started: float, wall: float) -> dict:
    """The run report of a finished `job` (`kind`: the output kind; `started`: epoch seconds;
    `wall`: seconds from the first frame read to the last written)."""
    s, inputs, sink, stages, budget = job.settings, job.inputs, job.sink, job.stages, job.budget
    todo = job.todo
    cpu = {**budget.summary(), "opencv_threads": 1 if job.opencv_threads is not None else "default",
           "stage_cpu_s": {name: round(st.cpu_seconds, 3) for name, st in
                           zip(("read", "align", "write"), stages, strict=True)}}
    return {
        "howard": "matte report", "plate": str(inputs.plate_spec), "clean_plate": str(inputs.clean_spec),
        "output": sink.display, "output_kind": kind, "layers": list(s.layers), "frames_done": len(todo),
        "frames_skipped": job.skipped, "model": model_info(job.net, job.matter),
        "settings": {"device": str(job.matter.device), "precision": str(job.matter.dtype).replace("torch.", ""),
                     "batch_size": s.batch_size, "threads": budget.most_used(), "cpu_budget": cpu,
                     "compression": sink.compression, "align": s.align, "window": s.window,
                     "clean_offset": s.clean_offset, "clean_scale": s.clean_scale,
                     "colorspace": inputs.plate.colorspace, "clean_colorspace": inputs.clean.colorspace,
                     "missing": s.missing, "resume": s.resume},
        "matte_settings": s.to_dict(),
        "timing": {"wall_s": round(wall, 3), "fps": round(len(todo) / wall, 3) if wall > 0 and todo else None,
                   "read_s": round(stages[0].seconds, 3), "align_s": round(stages[1].seconds, 3),
                   "matte_s": round(job.matte_s, 3), "write_s": round(stages[2].seconds, 3),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))},
        "flagged_frames": [r["frame"] for r in job.qc if r["flagged"]],
        "versions": versions(), "frames": job.qc,
    }


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 float32 arrays -> (B, 3, H, W) view in channels-last memory (Matter makes the one copy it needs)."""
    import torch

    batch = frames[0][None] if len(frames) == 1 else np.stack(frames)  # one frame: no stacking copy
    return torch.from_numpy(batch).permute(0, 3, 1, 2)

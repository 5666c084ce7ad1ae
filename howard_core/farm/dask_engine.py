"""Howard on a Dask cluster (`distributed`): chunks of frames as tasks, one progress stream, one report.

    from howard_core import matte
    matte("plate.####.exr", "clean.mov", "/mnt/show/out/", cluster="tcp://farm-sched:8786")
    matte(..., cluster="local:2")   # two worker processes on this machine

Each task runs `pipeline.matte` on its chunk with `resume=True` inside a worker process, which
loads the model once and keeps it for later chunks. When a worker dies mid-chunk the scheduler
re-runs the chunk elsewhere; frames are written atomically and the re-run skips those already
complete, so nothing is lost, duplicated or left half-written. Workers tell the client what they do
through Dask's event topics (`Worker.log_event` -> `Client.subscribe_topic`): the client shows one
progress stream for the clip and counts each chunk's attempts.

SLURM, PBS or Kubernetes: start the scheduler and workers with dask-jobqueue / dask-kubernetes (or
`dask scheduler` / `dask worker` by hand) and pass the scheduler's address; workers need Howard
installed and the plate, clean plate and output folder mounted (see `jobs.PathMap`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from howard_core import events
from howard_core.errors import HowardError
from howard_core.farm import jobs
from howard_core.settings import MatteSettings

# Times a chunk may fail with an exception before the job stops (a worker's death is counted by the
# scheduler's own `distributed.scheduler.allowed-failures`, not here).
TASK_RETRIES = 2

_MODELS: dict = {}  # per worker process: model spec -> loaded network, so each worker loads it once
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Cluster:
    """Where and how a job runs on Dask: `address` "local:N", "tcp://host:8786", "tls://host:8786" or a
    scheduler file; `chunk_size` frames per task (default: about two chunks per worker); `security` a
    `distributed.security.Security` for TLS (default: Dask's configuration); `path_map` this
    machine's paths -> the workers' (default: the same)."""

    address: str
    chunk_size: int | None = None
    security: object = None
    path_map: jobs.PathMap | None = None


@dataclass(frozen=True)
class ChunkTask:
    """What one Dask task needs: paths as the workers see them, the chunk and the matte settings."""

    job: str
    plate: str
    clean_plate: str
    output: str
    frames: tuple[int, ...]
    report: str
    settings: MatteSettings = field(default_factory=MatteSettings)

    @property
    def name(self) -> str:
        return jobs.chunk_text(list(self.frames))


def _model_for(spec):
    from howard_core.weights import resolve_model

    with _MODELS_LOCK:  # spec: a checkpoint path, an installed weights name or None (matte_on_cluster)
        if spec not in _MODELS:
            _MODELS[spec] = resolve_model(spec)
        return _MODELS[spec]


def run_chunk(task: ChunkTask) -> dict:
    """Runs on a worker: the one-machine job on this chunk, with resume. Returns the chunk's record."""
    from distributed import get_worker

    from howard_core.pipeline import matte

    worker = get_worker()
    topic = f"howard-{task.job}"

    def tell(event: dict) -> None:
        # Events travel as msgpack: plain JSON types only.
        worker.log_event(topic, json.loads(json.dumps({"chunk": task.name, "worker": worker.address, **event},
                                                      default=str)))

    tell({"event": "chunk-start", "pid": os.getpid()})
    start = time.perf_counter()
    net = _model_for(task.settings.model)
    try:
        rep = matte(task.plate, task.clean_plate, task.output, task.settings, frames=task.frames, resume=True,
                    model=net, report=task.report, progress=tell)
    except HowardError as exc:
        # Bad input fails the same way on every node: returned, not raised, so Dask does not retry it.
        return {"frames": task.name, "worker": worker.address, "error": str(exc)}
    return {"frames": task.name, "worker": worker.address, "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": round(time.perf_counter() - start, 3), "frames_done": rep["frames_done"],
            "frames_skipped": rep["frames_skipped"], "report": rep["report"]}


def worker_environment(workers_per_machine: int) -> dict:
    """Dask config for the environment nannies start Howard's worker processes with, read when the
    process starts (`distributed.nanny.pre-spawn-environ`): each worker's share of the cores for
    inference (Dask's default is one thread), OpenMP waits that sleep and one malloc arena as the
    `howard` command sets for itself (howard_core.runtime), and not Dask's MALLOC_TRIM_THRESHOLD_:
    fixing it turns every frame-sized buffer into a fresh mmap, and HD frames then ran about 1.5x slower.
    For a cluster started by hand, `dask worker` reads the same keys from Dask's configuration."""
    from howard_core.runtime import cpu_cores

    key = "distributed.nanny.pre-spawn-environ"
    threads = str(max(1, cpu_cores() // max(1, workers_per_machine)))
    return {f"{key}.MALLOC_TRIM_THRESHOLD_": None, f"{key}.OMP_NUM_THREADS": threads,
            f"{key}.MKL_NUM_THREADS": threads, f"{key}.OMP_WAIT_POLICY": "PASSIVE", f"{key}.MALLOC_ARENA_MAX": "1"}


def connect(cluster: str, security=None):
    """(client, close) for "local:N", "tcp://host:port", "tls://host:port" or a scheduler file path.

    `security`: a `distributed.security.Security` for TLS (default: Dask's own configuration,
    `distributed.comm.tls.*`, as `dask worker --tls-*` reads it too)."""
    try:
        import dask.config
        from distributed import Client, LocalCluster
    except ImportError:
        raise HowardError("--cluster needs Dask's distributed, part of Howard's farm extra: "
                          "pip install 'howard-core[farm]'") from None

    cluster = str(cluster)
    if cluster.startswith("local:"):
        try:
            n = int(cluster.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise HowardError(f"--cluster {cluster}: write local:N with N worker processes, e.g. local:2")
        # Loopback only, no dashboard: a local cluster is private to this job.
        with dask.config.set(worker_environment(n)):
            local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(local)

        def close():
            client.close()
            local.close()

        return client, close
    kwargs = {"scheduler_file": cluster} if cluster.endswith(".json") else {"address": cluster}
    try:
        client = Client(**kwargs, security=security,
                        timeout=dask.config.get("distributed.comm.timeouts.connect", "30s"))
    except (OSError, TimeoutError, ValueError) as exc:
        raise HowardError(f"--cluster {cluster}: cannot reach the Dask scheduler ({exc}); start one with "
                          f"`dask scheduler` and give its address, e.g. tcp://host:8786, or use local:N") from None
    return client, client.close


class _Progress:
    """Worker events -> one stream for the whole clip, in the shape `pipeline.matte` emits."""

    def __init__(self, total: int, output: str, progress: Callable[[dict], None] | None):
        self.total, self.output, self.progress = total, output, progress
        self.attempts: dict[str, int] = {}
        self.workers: dict[str, str] = {}
        self.written: set[int] = set()
        self.flagged: set[int] = set()
        self.started = False
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()

    def __call__(self, message) -> None:
        _, event = message  # (timestamp, what the worker logged)
        with self.lock:
            kind = event.get("event")
            if kind == "chunk-start":
                self.attempts[event["chunk"]] = self.attempts.get(event["chunk"], 0) + 1
                self.workers[event["chunk"]] = event["worker"]
            elif kind == "start" and not self.started:
                self.started = True
                self._emit({**event, "total": self.total, "skipped": 0, "output": self.output})
            elif kind == "frame" and event["frame"] not in self.written:
                self.written.add(event["frame"])
                if event.get("flagged"):
                    self.flagged.add(event["frame"])
                counted = events.Frame.after(event["frame"], len(self.written), self.total,
                                             time.perf_counter() - self.t0, flagged=bool(event.get("flagged")),
                                             reason=event.get("reason"), output=event.get("output"))
                self._emit({**event, **events.as_dict(counted)})  # the worker's and chunk's names kept

    def _emit(self, event: dict) -> None:
        if self.progress:
            self.progress(event)

    def settle(self, expected: int, timeout_s: float = 2.0) -> None:
        """Events are batched: give the last frames' events a moment to arrive after the tasks end."""
        end = time.perf_counter() + timeout_s
        while len(self.written) < expected and time.perf_counter() < end:
            time.sleep(0.05)


def matte_on_cluster(plate, clean_plate, output, settings: MatteSettings, cluster: Cluster, *, report=None,
                     progress=None) -> dict:
    """`pipeline.matte` over a Dask cluster; returns the merged report (also written as JSON).

    `settings` are passed to every chunk unchanged but for the chunk's frames (every chunk resumes:
    that is what makes a re-run chunk safe). Paths are made absolute: workers do not share this
    process's working folder.
    """
    from distributed import as_completed

    if settings.model is not None and not isinstance(settings.model, str):
        raise HowardError("a cluster job needs the model as a checkpoint path or installed weights name that "
                          "every worker can load, not a loaded network")
    to_worker = cluster.path_map or jobs.PathMap()
    settings = settings.replace(resume=False, **{name: to_worker.file_option(getattr(settings, name))
                                                 for name in MatteSettings.file_options()})
    plate, clean_plate, output = (os.path.abspath(os.fspath(p)) for p in (plate, clean_plate, output))
    clip = jobs.survey(plate, clean_plate, output, settings)
    numbers, folder, display = clip.frames, clip.folder, clip.display
    merged_path = Path(report) if report else clip.merged_report

    client, close = connect(cluster.address, cluster.security)
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = jobs.chunk_size_for(cluster.chunk_size, len(numbers), workers)
        chunks = jobs.split_chunks(numbers, size)
        job = uuid.uuid4().hex[:12]
        tracker = _Progress(len(numbers), display, progress)
        client.subscribe_topic(f"howard-{job}", tracker)
        reports = [jobs.chunk_report_path(folder, c) for c in chunks]
        tasks = [ChunkTask(job, to_worker(plate), to_worker(clean_plate), to_worker(output), tuple(c),
                           to_worker(r), settings) for c, r in zip(chunks, reports, strict=True)]
        t0 = time.perf_counter()
        futures = [client.submit(run_chunk, t, key=f"howard-{job}-{t.name}", pure=False, retries=TASK_RETRIES)
                   for t in tasks]
        records = {}
        try:
            for fut in as_completed(futures):
                rec = fut.result()
                if "error" in rec:
                    raise HowardError(rec["error"])
                records[rec["frames"]] = rec
            tracker.settle(sum(r["frames_done"] for r in records.values()))
        except HowardError:
            raise
        except Exception as exc:  # noqa: BLE001 - a chunk's failure reaches the user as one line
            raise HowardError(f"farm chunk failed on every try ({TASK_RETRIES + 1} tries, or a worker lost each "
                              f"time): {type(exc).__name__}: {exc}") from None
        finally:
            client.unsubscribe_topic(f"howard-{job}")
            for fut in futures:
                fut.cancel()
        wall = time.perf_counter() - t0
        scheduler = client.scheduler.address
    finally:
        close()

    chunk_records = [{**records[t.name], "retries": max(0, tracker.attempts.get(t.name, 1) - 1)} for t in tasks]
    address = str(cluster.address)
    engine = {"kind": "dask", "scheduler": scheduler if not address.startswith("local:") else address,
              "workers": workers, "chunk_size": size, "chunks": len(chunks), "wall_s": round(wall, 3),
              "fps": round(len(numbers) / wall, 3) if wall > 0 else None}
    merged = jobs.merge_reports(reports, merged_path, engine=engine, chunks=chunk_records,
                                expected=numbers)
    if progress:
        progress(events.as_dict(events.Done(len(numbers), len(numbers), 0, engine["fps"], merged["report"], display,
                                            merged["flagged_frames"])))
    return merged

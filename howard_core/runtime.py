"""Process-wide settings a long streaming job needs from the start, and how it shares the CPU.

The `howard` command applies `prepare_process()` first thing; scripts that call `howard_core.matte`
on a farm can call it at their own start (or set MALLOC_ARENA_MAX=1, MALLOC_MMAP_THRESHOLD_=268435456,
MALLOC_TRIM_THRESHOLD_=1073741824, OMP_WAIT_POLICY=PASSIVE, OPENBLAS_NUM_THREADS=1 and
NUMPY_MADVISE_HUGEPAGE=0 in the environment). `CpuBudget` decides, frame by frame, how many threads
inference gets from what the job's other stages cost on this run; `InBackground` runs one call (the
model's loading) beside the rest of start-up.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import os
import platform
import sys
import threading
from typing import NoReturn

# glibc's mallopt parameter numbers.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# Blocks up to this size come from the heap and freed memory stays there up to this much: an HD frame
# in float32 RGB is 25 MB, a 4K one 100 MB, and a job holds a few dozen of them in flight.
_HEAP_BLOCK_MAX = 256 << 20
_HEAP_KEEP = 1 << 30
# Environment variables this module set (not the user): child processes that should run as the user
# would have them run (the benchmarks' other tools) are started without these.
SET_HERE: set[str] = set()


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Ask glibc's malloc to give threads created from now on at most `arenas` arenas; True if applied.

    glibc gives each thread that allocates under contention an arena of its own. The pipeline's
    frames (8-25 MB each at HD) are allocated in one stage's thread and freed in another's, and the
    arenas fragment: resident memory crept up over a clip, about 200 MiB over the first 60 HD
    frames. With one arena the same 60 frames peaked at 1,543 instead of 1,759 MiB and stayed
    level, at the same speed. It only affects threads started later, so it must run before torch,
    OpenImageIO or the pipeline start theirs. An explicit MALLOC_ARENA_MAX is left alone; elsewhere
    than glibc this does nothing.
    """
    mallopt = None if os.environ.get("MALLOC_ARENA_MAX") else _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt


def keep_freed_frames() -> bool:
    """Let freed frame buffers be reused instead of handed back to the kernel; True if applied.

    glibc maps each block over its mmap threshold (at most 32 MB, adjusted as blocks are freed) as a
    fresh mapping and unmaps it on free, and it trims the heap's top back to the kernel. A streaming
    job frees and allocates frame-sized buffers every frame in every stage, so each one came back as
    new pages, faulted in and zeroed one by one: on 2 cores `howard bench align --kinds parallax,still
    --frames 2 --no-matte` spent 5.9-6.5 of its 19.5-20 s in the kernel, 1.7-1.8 of 15.2-15.3 s with
    the blocks kept. Peak memory is what the job holds at once either way; the
    memory stays with the process until it exits. Explicit MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ settings are left alone; elsewhere than glibc this does nothing.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mapped = mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCK_MAX)
    trimmed = mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP)
    return bool(mapped and trimmed)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which farm slots and containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks on this platform
        return os.cpu_count() or 1


def passive_openmp_waits() -> bool:
    """Make OpenMP worker threads sleep instead of spinning when they wait; True if set here.

    PyTorch's OpenMP (libgomp) workers spin between operations by default. Beside the pipeline's
    reader, aligner and writer threads, or on a machine other jobs share, the spinning takes the
    cores those threads need: on a busy 2-core machine one HD frame through `Matter` on 2 threads
    took a median 3.2-3.8 s spinning and 0.3-0.8 s passive (1 thread: 0.38-0.83 s). OpenMP reads the
    setting when torch loads, so it must come first; an explicit OMP_WAIT_POLICY is left alone.
    """
    return _set_before_load("torch", "OMP_WAIT_POLICY", "PASSIVE")


def _set_before_load(module: str, name: str, value: str) -> bool:
    """Set the environment variable `name` for a library that reads it when `module` loads: only
    while that module is not loaded yet and the user has not set it; True if set here."""
    if module in sys.modules or os.environ.get(name):
        return False
    os.environ[name] = value
    SET_HERE.add(name)
    return True


def single_threaded_blas() -> bool:
    """Give NumPy's OpenBLAS one thread; True if set here.

    The aligner's NumPy linear algebra works on small matrices (homographies, exposure fits over a
    few thousand samples), where OpenBLAS's worker threads only wake up and spin beside the job's
    own threads: in `perf` its thread server was about 1.2% of a movie -> PNG job's CPU samples, and
    over 6 alternating runs of the movie -> EXR job (12 HD frames) the process used 6.65 against
    6.92 s of CPU, 4.26 against 4.36 s of wall time. OpenBLAS reads the setting when NumPy loads,
    so it must come first; an explicit OPENBLAS_NUM_THREADS is left alone. torch's own linear
    algebra (MKL, OpenMP) is not affected.
    """
    return _set_before_load("numpy", "OPENBLAS_NUM_THREADS", "1")


def numpy_without_huge_pages() -> bool:
    """Stop NumPy asking the kernel for transparent huge pages for its arrays; True if applied.

    NumPy marks each large array's memory MADV_HUGEPAGE, so each first touch of a 2 MB region
    faults in and zeroes a whole huge page. With the frame-sized arrays of a streaming job on these
    virtual machines that cost more than it saved: over 8 alternating runs of the movie -> PNG job
    (12 HD frames) the process took 4.36 against 4.61 s of wall time and 6.82 against 7.36 s of CPU,
    0.62 against 1.1 s of it in the kernel. Set in the environment before NumPy loads (it reads
    NUMPY_MADVISE_HUGEPAGE then), else switched off in the loaded NumPy; an explicit
    NUMPY_MADVISE_HUGEPAGE is left alone.
    """
    if os.environ.get("NUMPY_MADVISE_HUGEPAGE"):
        return False
    if _set_before_load("numpy", "NUMPY_MADVISE_HUGEPAGE", "0"):
        return True
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy before 2.0
        from numpy.core import multiarray
    multiarray._set_madvise_hugepage(False)
    return True


def prepare_process() -> None:
    """Everything this module sets up for a long job; call it once, first."""
    limit_malloc_arenas()
    keep_freed_frames()
    passive_openmp_waits()
    single_threaded_blas()
    numpy_without_huge_pages()


class InBackground(threading.Thread):
    """`fn(*args, **kwargs)` started on its own thread at once; `result()` waits and returns its value
    or raises its exception. For start-up work (importing torch, loading and preparing the model)
    that can run while the main thread opens the inputs."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(name="howard-prepare", daemon=True)
        self._call = (fn, args, kwargs)
        self._value = self._error = None
        self.start()

    def run(self) -> None:
        fn, args, kwargs = self._call
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result() in the caller's thread
            self._error = exc

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


# Parts of torch's own import that eager inference never runs: its Python meta kernels, which only
# torch.compile, torch.export and fake tensors use. About 0.3 s of a 0.9-1.3 s import here.
EAGER_ONLY_SKIPS = ("torch._meta_registrations",)


def import_frozen(*modules: str, eager_only: bool = False) -> list:
    """Import `modules` (e.g. the model package, which imports torch) with the cyclic garbage
    collector paused, then move every object alive into the collector's permanent generation
    (`gc.freeze`); returns the modules.

    eager_only: for a process that only runs eager inference (the `howard matte` command), torch is
    imported without `EAGER_ONLY_SKIPS`. Afterwards they are importable as usual, so code that
    needs them later (torch.compile, export) must import them itself, before it runs.

    Importing torch creates about a million tracked objects. The collections they trigger find
    next to nothing and cost about 0.2 s of a 1.3-1.5 s import here; frozen, they are not walked
    again by the collections of the run that follows, each of which holds every thread up. Frozen
    objects are still freed when their reference count drops to zero, so frames and other arrays
    are unaffected; only a reference cycle alive at that moment and dropped later waits for the
    exit. Modules already imported are returned as they are, with nothing frozen."""
    import gc
    import importlib

    loaded = [sys.modules.get(m) for m in modules]
    if all(loaded):
        return loaded
    enabled = gc.isenabled()
    gc.disable()
    skipped = _skip_modules(EAGER_ONLY_SKIPS) if eager_only and "torch" not in sys.modules else {}
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        _unskip_modules(skipped)
        gc.freeze()
        if enabled:
            gc.enable()
        _unfreeze_at_exit()


def _skip_modules(names) -> dict:
    # An empty module under the name makes an import of it a no-op while it is in place.
    import types

    skipped = {name: types.ModuleType(name) for name in names if name not in sys.modules}
    sys.modules.update(skipped)
    return skipped


def _unskip_modules(skipped: dict) -> None:
    # Gone from sys.modules and from its package, a skipped module is imported for real by whoever
    # imports it next.
    for name, placeholder in skipped.items():
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        package, _, leaf = name.rpartition(".")
        parent = sys.modules.get(package)
        if parent is not None and getattr(parent, leaf, None) is placeholder:
            delattr(parent, leaf)


@functools.cache
def _unfreeze_at_exit() -> None:
    # An interpreter that exits normally collects everything once more; nanobind modules
    # (OpenImageIO) report what is still frozen then as leaks, so it is handed back first.
    import atexit
    import gc

    atexit.register(gc.unfreeze)


def exit_process(code: int) -> NoReturn:
    """End a command-line process with `code` without tearing the interpreter down.

    Once torch is imported, the interpreter's teardown takes 0.5-0.8 s on these cores and changes
    nothing a command leaves behind: every output is closed and renamed into place before this
    is called. So the exit handlers run (temporary folders, logging), the standard streams are
    flushed, and the process ends. Where a non-daemon thread is still running (never the case
    for Howard's own commands), the normal exit waits for it instead."""
    import atexit

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def import_in_background(*modules: str, eager_only: bool = False) -> InBackground:
    """Start importing `modules` (see `import_frozen`) on a thread of their own; a later import
    of them in any thread waits for that one to finish."""
    return InBackground(import_frozen, *modules, eager_only=eager_only)


class CpuBudget:
    """How many CPU threads inference gets, decided from what the other stages cost on this run.

    The reader, aligner and writer each run on a thread of their own beside inference. After each
    frame, `record(others_cpu_s, frame_s)` is given the CPU seconds those threads used for it
    (all of them together) and the wall seconds between two frames leaving inference; both are
    summed over the last `WINDOW` frames (stages finish items in lumps, a queue apart). The other
    stages then keep `others / period` cores busy, and
    inference gets the rest, rounded up where it is more than a little over a whole core: on
    2 cores, 2 threads when the other stages cost less per frame than the matte itself, else 1.
    `fixed` (a user's --threads) switches the measuring off. `threads` is the count for the next
    frame; `summary()` says what was decided, for the run report (its per-frame figures are the
    last window's: at the end of a clip the reader and aligner have already finished).

    `streams`: batches inferred at once, each on a thread of its own, sharing `threads` between
    them (`stream_threads()` each). Two frames side by side, one thread each, need no OpenMP
    barrier between them: on 2 cores the Matter alone put through an HD frame every 126-135 ms
    that way, against 167-170 ms with both threads on one frame (and 250 ms on one thread), and
    beside the other stages a single-threaded stream is only paused where a two-threaded frame
    waits, whole, for its slower half.
    """

    WINDOW = 4  # frames the estimates are taken over
    MARGIN = 0.15  # free core share below which inference gets no extra thread

    def __init__(self, cores: int, ceiling: int, start: int, fixed: int | None = None, streams: int = 1):
        self.cores, self.ceiling = max(1, cores), max(1, ceiling)
        self.fixed = fixed
        self.threads = fixed if fixed is not None else max(1, min(start, self.ceiling))
        self.streams = max(1, streams)
        self.others_s = self.period_s = None
        self._recent: collections.deque = collections.deque(maxlen=self.WINDOW)
        self.frames_at: dict[int, int] = {}  # threads -> frames inferred with that many
        self.changes: list[list[int]] = [[0, self.threads]]  # [frame index, threads from then on]
        self._frames = 0

    def record(self, others_cpu_s: float, frame_s: float | None, frames: int = 1) -> int:
        self.frames_at[self.threads] = self.frames_at.get(self.threads, 0) + frames
        self._frames += frames
        if frame_s is None or frame_s <= 0:  # the first frame's period includes start-up
            return self.threads
        self._recent.append((others_cpu_s, frame_s, frames))
        count = sum(r[2] for r in self._recent)
        self.others_s = sum(r[0] for r in self._recent) / count
        self.period_s = sum(r[1] for r in self._recent) / count
        if self.fixed is None:
            free = self.cores - self.others_s / self.period_s
            wanted = max(1, min(self.ceiling, math.ceil(free - self.MARGIN)))
            if wanted != self.threads:
                self.threads = wanted
                self.changes.append([self._frames, wanted])
        return self.threads

    def stream_threads(self) -> int:
        """Threads each of the `streams` gets: its share of `threads`, at least one."""
        return max(1, self.threads // self.streams)

    def most_used(self) -> int:
        return max(self.frames_at, key=self.frames_at.get) if self.frames_at else self.threads

    def summary(self) -> dict:
        return {"mode": "fixed" if self.fixed is not None else "measured", "cores": self.cores,
                "ceiling": self.ceiling, "threads": self.most_used(), "streams": self.streams,
                "threads_per_stream": max(1, self.most_used() // self.streams),
                "frames_by_threads": {str(k): v for k, v in sorted(self.frames_at.items())},
                "changes": self.changes,
                "other_stages_cpu_s_per_frame": None if self.others_s is None else round(self.others_s, 3),
                "frame_period_s": None if self.period_s is None else round(self.period_s, 3),
                "openmp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def versions() -> dict:
    """Versions of Howard and the libraries it runs on, for reports and `howard info`."""
    import cv2
    import numpy as np
    import OpenImageIO
    import torch

    import howard_core

    return {"howard": howard_core.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "openimageio": OpenImageIO.__version__,
            "opencolorio": _version("PyOpenColorIO", "opencolorio"), "av": _version("av", "av")}


def _version(module: str, dist: str) -> str | None:
    # From the installed package's metadata unless already imported: importing PyAV only to name its
    # version loads FFmpeg (16 MB resident) at the end of runs that read no movie.
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    import importlib.metadata  # here, not at the top: 35 ms of the command's start otherwise

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

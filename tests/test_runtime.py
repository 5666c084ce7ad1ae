"""The allocator setting the `howard` command applies before it starts any thread."""

import subprocess
import sys

import numpy as np
import pytest

from howard_core import runtime

# Four threads allocating at once: glibc gives threads that find the arena busy arenas of their own.
CHILD = r"""
import ctypes, sys, threading
from howard_core.runtime import limit_malloc_arenas
applied = limit_malloc_arenas() if sys.argv[1] == "limit" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
start = threading.Barrier(4)

def churn():
    start.wait()
    for _ in range(20000):
        libc.free(libc.malloc(4096))

threads = [threading.Thread(target=churn) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(applied, flush=True)
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode):
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                          env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
    return proc.stdout.strip(), proc.stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_one_arena_for_all_threads_once_limited():
    applied, limited = _arenas("limit")
    assert applied == "True" and limited == 1
    _, free = _arenas("free")
    assert free > 1  # without the limit the same threads do get arenas of their own


def test_an_explicit_environment_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert runtime.limit_malloc_arenas() is False


def test_cpu_cores_follow_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert runtime.cpu_cores() == 3


def test_openmp_waits_go_passive_before_torch_only(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # already imported: too late to matter
    assert runtime.passive_openmp_waits() is False and "OMP_WAIT_POLICY" not in runtime.os.environ
    monkeypatch.delitem(sys.modules, "torch")
    assert runtime.passive_openmp_waits() is True and runtime.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert runtime.passive_openmp_waits() is False and runtime.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_howard_command_starts_torch_with_passive_openmp_waits():
    code = ("import os, sys; from howard_core.runtime import prepare_process; prepare_process(); import torch; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in runtime.os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "PASSIVE"


def test_numpy_loads_with_one_openblas_thread_after_prepare_process():
    # OpenBLAS starts its worker threads when NumPy loads: a process with only its main thread
    # after `import numpy` (and a matrix product) has none.
    code = ("import os, sys; from howard_core.runtime import prepare_process; prepare_process(); "
            "import numpy as np; a = np.ones((300, 300)); a @ a; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in runtime.os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1", "1"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert out.stdout.split()[0] == "2"  # the user's own setting is kept


def test_numpy_arrays_get_no_huge_pages_after_prepare_process():
    code = ("from howard_core.runtime import prepare_process; {before} prepare_process(); import numpy; "
            "from numpy._core import multiarray; print(multiarray._get_madvise_hugepage())")
    env = {k: v for k, v in runtime.os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for before in ("", "import numpy;"):  # NumPy not loaded yet (the howard command), or already loaded
        out = subprocess.run([sys.executable, "-c", code.format(before=before)], capture_output=True, text=True,
                             check=True, env=env)
        assert out.stdout.strip() == "False", before
    out = subprocess.run([sys.executable, "-c", code.format(before="")], capture_output=True, text=True,
                         check=True, env={**env, "NUMPY_MADVISE_HUGEPAGE": "1"})
    assert out.stdout.strip() == "True"  # the user's own setting is kept


def _feed(budget, frames, others_s, period_s):
    for _ in range(frames):
        budget.record(others_s, period_s)
    return budget.threads


def test_cpu_budget_gives_inference_the_cores_the_other_stages_leave():
    budget = runtime.CpuBudget(cores=2, ceiling=2, start=1)
    budget.record(5.0, None)  # the first frame's period includes start-up: it decides nothing
    assert budget.threads == 1
    # Cheap other stages (0.1 CPU-s per 0.4 s frame): 1.75 cores free, inference gets both.
    assert _feed(budget, 4, 0.1, 0.4) == 2
    # Costly ones (0.5 CPU-s per 0.4 s frame keep 1.25 cores busy): back to one thread.
    assert _feed(budget, 4, 0.5, 0.4) == 1
    summary = budget.summary()
    # Each change comes once the recent frames show it (over a window of 4 frames).
    assert summary["mode"] == "measured" and summary["changes"] == [[0, 1], [2, 2], [8, 1]]
    assert summary["frames_by_threads"] == {"1": 3, "2": 6} and summary["threads"] == 2
    assert summary["other_stages_cpu_s_per_frame"] == 0.5 and summary["frame_period_s"] == 0.4
    # Never above the ceiling (torch's setting), never below one.
    wide = runtime.CpuBudget(cores=8, ceiling=3, start=7)
    assert wide.threads == 3 and _feed(wide, 4, 0.0, 0.2) == 3 and _feed(wide, 4, 4.0, 0.2) == 1


def test_cpu_budget_fixed_by_the_user_never_moves():
    budget = runtime.CpuBudget(cores=2, ceiling=2, start=1, fixed=2)
    assert _feed(budget, 6, 1.9, 1.0) == 2 and budget.summary()["mode"] == "fixed"


def test_in_background_returns_or_raises_in_the_caller():
    assert runtime.InBackground(lambda a, b=0: a + b, 2, b=3).result() == 5
    with pytest.raises(ValueError, match="bad"):
        runtime.InBackground(lambda: (_ for _ in ()).throw(ValueError("bad"))).result()


# Frame-sized buffers freed and allocated again, as every stage of a job does: the minor page faults
# they cost say whether freed memory was handed back to the kernel (each block faulted in anew) or kept.
FAULTS = r"""
import resource, sys
import numpy as np
from howard_core.runtime import keep_freed_frames
applied = keep_freed_frames() if sys.argv[1] == "keep" else None
frame = np.ones((1080, 1920, 3), np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    # A few HD frames in flight at once (25 MB each), then all freed, as frames pass through a stage.
    in_flight = [frame + k for k in range(4)]
    del in_flight
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, flush=True)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "", "PYTHONPATH": ":".join(sys.path)}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_frames_are_reused_not_faulted_in_again():
    applied, kept = _faults("keep")
    _, returned = _faults("default")
    pages = 1080 * 1920 * 3 * 4 // 4096
    assert applied == "True"
    assert kept < pages  # later rounds reuse the blocks of the first
    assert returned > 3 * kept  # glibc's defaults: blocks handed back and faulted in anew, round after round


def test_explicit_allocator_thresholds_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert runtime.keep_freed_frames() is False


EXIT_CHILD = r"""
import atexit, sys, threading, time
from howard_core.runtime import exit_process, import_frozen
import gc
import_frozen("json.tool")  # any module not yet imported
print("frozen", gc.get_freeze_count() > 0, gc.isenabled())
atexit.register(lambda: print("exit handler ran", flush=True))
if sys.argv[1] == "worker":
    def late():
        time.sleep(0.3)
        print("worker finished", flush=True)
    threading.Thread(target=late).start()
print("unflushed output", end="")
exit_process(int(sys.argv[2]))
"""


@pytest.mark.parametrize("mode", ["plain", "worker"])
def test_exit_process_keeps_the_exit_code_output_and_exit_handlers(mode):
    proc = subprocess.run([sys.executable, "-c", EXIT_CHILD, mode, "7"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.startswith("frozen True True\n")
    assert "unflushed output" in proc.stdout and "exit handler ran" in proc.stdout
    # A non-daemon thread still running is waited for: the normal exit, not a cut-off one.
    assert ("worker finished" in proc.stdout) == (mode == "worker")
    assert proc.stderr == ""  # nothing reported as leaked by nanobind or anything else at exit


def test_frozen_imports_leave_nothing_reported_at_a_normal_exit():
    # OpenImageIO's bindings report objects still alive at exit as leaks: what import_frozen froze
    # is handed back before that check.
    code = ("import OpenImageIO\nfrom howard_core.runtime import import_frozen\nimport_frozen('json.tool')\n"
            "import gc\nassert gc.get_freeze_count() > 0\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 0 and "leaked" not in proc.stderr, proc.stderr


EAGER_CHILD = r"""
import sys
from howard_core.runtime import import_frozen
import_frozen("howard_core.model", eager_only=sys.argv[1] == "eager")
import numpy as np, torch
from howard_core.model import Matter
from howard_core.synth import make_shot
from howard_core.weights import resolve_model
torch.set_num_threads(1)
print("meta kernels imported", "torch._meta_registrations" in sys.modules)
shot = make_shot(320, 192, plate_frames=1, clean_frames=1, seed=5)
def t(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()
out = Matter(resolve_model(None))(t(shot.plate[0]), t(shot.clean[0]))
np.savez(sys.argv[2], **{k: v.numpy() for k, v in out._asdict().items() if v is not None})
import torch._meta_registrations as meta  # importable for real afterwards
print("real module", hasattr(meta, "register_meta"))
"""


def test_an_eager_only_torch_import_mattes_exactly_like_a_full_one(tmp_path):
    seen = {}
    for mode in ("eager", "full"):
        proc = subprocess.run([sys.executable, "-c", EAGER_CHILD, mode, str(tmp_path / f"{mode}.npz")],
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
        assert proc.returncode == 0, proc.stderr
        seen[mode] = proc.stdout.splitlines()
    assert seen["eager"] == ["meta kernels imported False", "real module True"]
    assert seen["full"] == ["meta kernels imported True", "real module True"]
    eager, full = np.load(tmp_path / "eager.npz"), np.load(tmp_path / "full.npz")
    assert sorted(eager.files) == sorted(full.files) and "alpha" in eager.files
    for name in eager.files:
        np.testing.assert_array_equal(eager[name], full[name], err_msg=name)
    assert 0.05 < eager["alpha"].mean() < 0.95  # a real matte, not an empty one

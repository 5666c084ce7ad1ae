"""The allocator setting the `howard` command applies before it starts any thread."""

import subprocess
import sys

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

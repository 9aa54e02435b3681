"""The command's process-wide memory policy: what the render's peak memory rests on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# At exit from the real entry point: four threads allocate at once, then glibc's own report
# says how many arenas (<heap nr=...>) the process has.
COUNT_ARENAS_AFTER_MAIN = """
import atexit, ctypes, os, sys, tempfile, threading

def count_arenas():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.fopen.restype = ctypes.c_void_p
    together = threading.Barrier(4)

    def allocate():
        together.wait()
        block = libc.malloc(300)
        together.wait()
        libc.free(block)

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fd, path = tempfile.mkstemp()
    os.close(fd)
    stream = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    with open(path) as report:
        print("arenas:", report.read().count("<heap nr="))
    os.unlink(path)

atexit.register(count_arenas)
sys.argv = ["audioguide", *sys.argv[1:]]
if sys.argv[1] != "--control":
    from audioguide.__main__ import main
    main()
"""


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


def _arenas(*args: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", COUNT_ARENAS_AFTER_MAIN, *args], capture_output=True, text=True
    )
    return int(proc.stdout.strip().splitlines()[-1].removeprefix("arenas:"))


@pytest.mark.skipif(not _is_glibc(), reason="malloc arenas are glibc's")
def test_the_command_allocates_from_one_malloc_arena():
    # glibc's default, for comparison: each thread that allocates gets an arena of its own.
    assert _arenas("--control") > 1
    # Each arena keeps what was freed in it: the render's peak grew with the session's length.
    assert _arenas("--version") == 1


# At exit from the real entry point (or without it, for comparison): the page faults of
# allocating, filling and freeing span-sized numpy buffers in turn on two threads, as a
# render's workers do (a span mixed, its scratch and its int16 samples, then all freed), once
# the first of each has been made.
FAULTS_OF_SPAN_BUFFERS_AFTER_MAIN = """
import atexit, resource, sys, threading

def faults():
    import numpy as np

    def work():
        for _ in range(40):
            mixed = np.zeros(1 << 19, dtype=np.float32)  # a span: 2 MB
            mixed += 1.0
            scratch = mixed * np.float32(2.0)
            pcm = scratch.astype(np.int16)
            del mixed, scratch, pcm

    work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("faults:", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

atexit.register(faults)
sys.argv = ["audioguide", *sys.argv[1:]]
if sys.argv[1] != "--control":
    from audioguide.__main__ import main
    main()
"""


def _span_buffer_faults(*args: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_SPAN_BUFFERS_AFTER_MAIN, *args],
        capture_output=True,
        text=True,
    )
    return int(proc.stdout.strip().splitlines()[-1].removeprefix("faults:"))


@pytest.mark.skipif(not _is_glibc(), reason="glibc's malloc thresholds")
def test_span_sized_buffers_are_reused_not_mapped_afresh_each_time():
    # glibc's default hands the freed top of its heap back to the system once it is over
    # twice its mapping threshold (which rises only to the largest block freed), so every
    # span's buffers are faulted in again, page by page (1,280 pages a span).
    assert _span_buffer_faults("--control") > 20 * 1280
    # Tuned by the entry point, the freed buffers are reused: a few faults, not one per page.
    assert _span_buffer_faults("--version") < 2 * 1280


BLAS_THREADS_AFTER_MAIN = """
import atexit, sys

def blas_threads():
    import numpy
    from threadpoolctl import threadpool_info

    pools = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    print("blas:", pools)

atexit.register(blas_threads)
sys.argv = ["audioguide", *sys.argv[1:]]
from audioguide.__main__ import main
main()
"""


def test_the_command_starts_blas_with_one_thread_unless_told_otherwise():
    def threads(env: dict[str, str]) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", BLAS_THREADS_AFTER_MAIN, "--version"],
            capture_output=True,
            text=True,
            env=env,
        )
        return proc.stdout.strip().splitlines()[-1]

    chosen = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in chosen}
    # OpenBLAS's pool, one thread per core, only spins beside a render's own workers.
    assert threads(env) == "blas: [1]"
    assert threads({**env, "OPENBLAS_NUM_THREADS": "2"}) == "blas: [2]"

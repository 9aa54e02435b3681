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

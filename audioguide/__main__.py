"""The ``audioguide`` command and ``python -m audioguide``: the CLI (``cli``), with Ctrl-C,
SIGTERM and SIGHUP handled from the first moment, while the libraries are still importing,
and a full or closed standard output reported in one line."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import sys
from typing import NoReturn

from ._glibc import glibc
from .errors import STOP_SIGNALS, Interrupted

_WRITE_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EFBIG, errno.EDQUOT}
INTERRUPTED = "Interrupted; nothing was changed."


# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks this large and over are mapped on their own; the largest glibc allows (32 MB on 64-bit).
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the heap's top is handed back to the system only beyond this.
TRIM_THRESHOLD_BYTES = 64 << 20


def main() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    tune_malloc()  # before numpy starts its threads
    one_blas_thread()
    # The imports make tens of thousands of objects and almost no garbage: collecting as they
    # come took about 30 ms. What they made is kept for good, so later collections skip it.
    gc.disable()
    try:
        from .cli import cli  # numpy, click, PyYAML and the rest: about 0.25 s
    except Interrupted as exc:
        _exit_interrupted(exc)
    finally:
        gc.freeze()
        gc.enable()
    try:
        cli(prog_name="audioguide")
    except OSError as exc:
        if not _is_stdout_failure(exc):
            raise  # a bug, with its traceback
        _exit_stdout_failed(exc)
    except SystemExit:
        failure = _stdout_failure()  # what was printed last may wait in the buffer
        if failure is not None:
            _exit_stdout_failed(failure)
        raise
    finally:
        # What is left is freed with the process. Python's last collection of it at exit
        # took about 0.05 s of CPU after a render, serial, for nothing (every file the
        # command wrote is closed by now).
        gc.freeze()


def tune_malloc() -> None:
    """On glibc, have every thread allocate from one malloc arena, and keep span-sized blocks
    in the heap instead of mapping and unmapping each.

    glibc gives each new thread that allocates an arena of its own (up to eight per core) and
    keeps what is freed in it for that arena's next use. A render's worker threads allocate and
    free span-sized buffers in turn, so each arena held its own high-water mark and the peak
    grew with the session's length. Numpy's buffers are few and large, so sharing one arena's
    lock costs nothing measurable (docs/performance.md).

    Those buffers (1 to 3 MB: a span, a chunk of the loudness meter, a cue) were each mapped
    fresh and unmapped when freed (glibc's threshold starts at 128 kB and rises only with what
    is freed), and a freed top of the heap over twice that threshold was handed back at once:
    every buffer was faulted in page by page again, and each unmapping stopped the other core
    to flush its TLB. With the threshold at glibc's largest and the heap trimmed only beyond
    64 MB, freed buffers are reused as they are.
    """
    libc = glibc()
    if libc is not None:  # not on macOS, Windows or musl
        libc.mallopt(_M_ARENA_MAX, 1)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def one_blas_thread() -> None:
    """Start numpy's BLAS with one thread, unless the user chose a number.

    A render runs one worker thread per core and limits BLAS to one thread in each
    (``pipeline.render_session``): the thread pool OpenBLAS starts when numpy is imported, one
    thread per core, only spun waiting, about 0.1 s of CPU in every command.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second signal must not cut short the clean-up the first one started.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def _exit_interrupted(exc: Interrupted) -> NoReturn:
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        print(INTERRUPTED, file=sys.stderr)
    sys.exit(128 + exc.signum)


def _stdout_failure() -> OSError | None:
    """Flush the standard output; the error if it cannot be written."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        return exc
    return None


def _is_stdout_failure(exc: OSError) -> bool:
    """Whether ``exc`` came from writing the standard output: a write error that names no
    file, and the standard output still cannot take a line."""
    if exc.filename is not None or exc.errno not in _WRITE_ERRORS:
        return False
    try:
        sys.stdout.write("\n")
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _exit_stdout_failed(exc: OSError) -> NoReturn:
    # Nothing more can go there; without this, Python's own flush at exit fails again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    print(f"Error: cannot write to standard output ({exc.strerror})", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()

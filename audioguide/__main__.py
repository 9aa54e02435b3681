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


# mallopt's M_ARENA_MAX (glibc's malloc.h).
_M_ARENA_MAX = -8


def main() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    one_malloc_arena()  # before numpy starts its threads
    try:
        from .cli import cli  # numpy, click, mutagen and the rest: about 0.3 s
    except Interrupted as exc:
        _exit_interrupted(exc)
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


def one_malloc_arena() -> None:
    """On glibc, have every thread allocate from one malloc arena.

    glibc gives each new thread that allocates an arena of its own (up to eight per core) and
    keeps what is freed in it for that arena's next use. A render's worker threads allocate and
    free span-sized buffers in turn, so each arena held its own high-water mark and the peak
    grew with the session's length. Numpy's buffers are few and large, so sharing one arena's
    lock costs nothing measurable (docs/performance.md).
    """
    libc = glibc()
    if libc is not None:  # not on macOS, Windows or musl
        libc.mallopt(_M_ARENA_MAX, 1)


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

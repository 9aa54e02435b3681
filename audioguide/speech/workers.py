"""Worker processes for a speech engine: requests in, replies out, each within a time bound.

An engine whose library needs process-wide workarounds (patched modules, redirected
descriptors) runs it in workers started here, so the user's process keeps its terminal and
its modules as they were, every request has a time bound, and Ctrl-C or an error elsewhere
ends the workers at once. Messages are pickled and framed by length over the worker's stdin
and stdout; ``serve`` is the worker's side of that loop.

The worker imports its engine's module alone: the package's ``__init__`` modules import the
whole pipeline (numpy, scipy, ...), which a worker does not need, so they are stood in for
by bare packages and a worker starts in a few hundredths of a second, not a few tenths.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import SpeechError

_FRAME = struct.Struct("<I")
_PACKAGE_DIR = Path(__file__).resolve().parent


def usable_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` can allow fewer than the
    machine has): the default for worker processes, render threads and cache readers."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class WorkerGone(Exception):
    """The worker process ended or stopped answering."""


def send(stream: IO[bytes], message: object) -> None:
    """Write one message."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise WorkerGone
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# SIGINT is ignored from the first line: the parent handles Ctrl-C and ends its workers, and a
# worker that the terminal's SIGINT ended first would look like a crash.
_WORKER_MAIN = """
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
import sys, types
for name, path in {packages!r}:
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
from {module} import serve
serve()
"""


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, module: str) -> None:
        packages = (
            ("audioguide", str(_PACKAGE_DIR.parent)),
            ("audioguide.speech", str(_PACKAGE_DIR)),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_MAIN.format(packages=packages, module=module)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._tx = self.process.stdin
        self._rx = self.process.stdout.fileno()

    def call(self, request: tuple[Any, ...], timeout_s: float) -> Any:
        """Send a request and wait at most ``timeout_s`` for the reply; the worker is ended
        on any failure, Ctrl-C included, so it never outlives a broken exchange."""
        try:
            send(self._tx, request)
            deadline = time.monotonic() + timeout_s
            (size,) = _FRAME.unpack(_read_exactly(self._rx, _FRAME.size, deadline))
            return pickle.loads(_read_exactly(self._rx, size, deadline))
        except (OSError, WorkerGone, TimeoutError, EOFError, pickle.UnpicklingError) as exc:
            self.close()
            raise WorkerGone from exc
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """End the process; a thread waiting on its reply sees the pipe close. Safe from any
        thread (the pipes are closed only by ``close``, by the thread using the worker)."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        self.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class WorkerPool:
    """Up to ``size`` workers running ``module``'s ``serve``, started as they are needed.

    ``call`` sends a request to an idle worker and returns its reply; a reply
    ``("error", message)`` raises SpeechError(message), after which that worker ends itself
    (its library's state is not trusted after a failure) and a new one is started next time.
    """

    def __init__(self, module: str, start_timeout_s: float, size: int | None = None) -> None:
        self.module = module
        self.start_timeout_s = start_timeout_s
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._changed = threading.Condition()
        self.size = size or usable_cores()

    def call(self, request: tuple[Any, ...], timeout_s: float) -> Any:
        """The reply of a worker to ``request``, within ``timeout_s``. Raises WorkerGone when
        the worker ended or overran (it is ended then), SpeechError when it replied with one."""
        worker = self._acquire()
        reply = self._ask(worker, request, timeout_s)
        self._release(worker)
        return reply

    def _ask(self, worker: _Worker, request: tuple[Any, ...], timeout_s: float) -> Any:
        """``worker``'s reply to ``request``; the worker is ended (and the error raised) when
        it fails to answer or answers with an error."""
        try:
            reply = worker.call(request, timeout_s)
        except BaseException:
            self._discard(worker)
            raise
        if _is_error(reply):
            self._discard(worker)
            raise SpeechError(reply[1])
        return reply

    def _acquire(self) -> _Worker:
        with self._changed:
            while not self._idle and len(self._all) + self._starting >= self.size:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._starting += 1
        try:
            worker = _Worker(self.module)
        finally:
            with self._changed:
                self._starting -= 1
        with self._changed:
            self._all.add(worker)
        self._ask(worker, ("start",), self.start_timeout_s)
        return worker

    def _release(self, worker: _Worker) -> None:
        with self._changed:
            if worker.alive and worker in self._all:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
            self._changed.notify()

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        with self._changed:
            self._all.discard(worker)
            self._changed.notify()

    def close(self) -> None:
        """End every worker now. A thread waiting on a busy one gets ``WorkerGone`` at once
        instead of waiting out the cue's time bound."""
        with self._changed:
            busy = self._all.difference(self._idle)
            idle, self._all, self._idle = self._idle, set(), []
            self._changed.notify_all()
        for worker in busy:
            worker.kill()
        for worker in idle:
            worker.close()


def _is_error(reply: Any) -> bool:
    return isinstance(reply, tuple) and len(reply) == 2 and reply[0] == "error"


def serve(handle: Callable[[tuple[Any, ...]], Any]) -> None:
    """The worker's main loop: requests on stdin, ``handle(request)`` replies on stdout, until
    stdin closes or a request fails. Called first thing in the worker process; the first
    request is ``("start",)``, for which ``handle`` readies its library (the pool bounds that
    by its start timeout).

    ``handle`` raises SpeechError for a failure the user should read; the worker replies with
    its message and ends. Its stdout and stderr go to /dev/null for good: a library's prints
    from its own threads and C code can neither reach the terminal nor corrupt a reply.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the worker's first line did
    rx = os.fdopen(os.dup(0), "rb")
    tx = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        header = rx.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return  # the parent closed the pipe, or is gone
        request = pickle.loads(rx.read(_FRAME.unpack(header)[0]))
        reply: Any
        try:
            reply = handle(request)
        except SpeechError as exc:
            reply = ("error", str(exc))
        except Exception as exc:
            reply = ("error", f"the speech engine failed ({type(exc).__name__}: {exc})")
        send(tx, reply)
        if _is_error(reply):
            return

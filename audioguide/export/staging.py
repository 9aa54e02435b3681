"""Export stage, staging: where a session is written, and how it replaces the previous one.

A render writes into a hidden ``.NAME.*.partial`` folder beside its target and renames it into
place only when everything is written, so an error or Ctrl-C leaves the previous output as it
was; it replaces only a folder it can prove it wrote (``ownership``). ``write_zip`` packs a
finished folder the same way: beside, then renamed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import STOP_SIGNALS, ExportError
from .ownership import (
    ZIP_COMMENT,
    check_replaceable,
    check_zip_replaceable,
    write_manifest,
)

# In a staging folder while it is written, and in a previous output moved aside: which process
# made it, so a later render can tell a folder a killed render left from one still in use.
STAGING_MARKER = ".audioguide-staging.json"


def write_zip(folder: Path, zip_path: Path, *, force: bool = False) -> None:
    """Pack ``folder``'s files into ``zip_path`` under a folder of the same name.

    Audio is already compressed, so it is stored as is; names are stored as UTF-8. Written
    beside and renamed into place, so an old archive stays whole until the new one is. An
    existing file is replaced only if a render wrote it (its comment says so), or ``force``.
    """
    check_zip_replaceable(zip_path, force=force)
    fd, temporary = tempfile.mkstemp(prefix=f".{zip_path.name}.", dir=zip_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.comment = ZIP_COMMENT
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{folder.name}/{path.name}")
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, zip_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    """The process's umask, read once. Linux shows it in /proc; elsewhere it can only be read
    by setting it, which is process-wide (a file another thread makes meanwhile would get the
    wrong mode), so that is done once, not per render."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mark(folder: Path) -> None:
    """Mark ``folder`` as this process's, so a later render may remove it once this process
    is gone (killed before it could clean up)."""
    marker = {"pid": os.getpid(), "host": socket.gethostname()}
    (folder / STAGING_MARKER).write_text(json.dumps(marker), encoding="utf-8")


def _left_by_a_dead_render(folder: Path) -> bool:
    """Whether ``folder`` holds the marker of a render on this machine whose process is gone.
    Anything else (no marker, another machine, a process still running) is not ours."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
        pid, host = marker["pid"], marker["host"]
    except (OSError, ValueError, TypeError, KeyError):
        # Killed before (or while) it wrote the marker: the name's process id proves it, as
        # long as the folder holds nothing a render had begun to write.
        named = _pid_in_name(folder)
        if named is None or not _holds_at_most_the_marker(folder):
            return False
        pid, host = named, socket.gethostname()
    if host != socket.gethostname() or type(pid) is not int or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _pid_in_name(folder: Path) -> int | None:
    """The process id in a staging folder's name (``.NAME.PID.random.partial``), if any."""
    parts = folder.name.rsplit(".", 3)
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


def _holds_at_most_the_marker(folder: Path) -> bool:
    try:
        return {entry.name for entry in os.scandir(folder)} <= {STAGING_MARKER}
    except OSError:
        return False


def _remove_stale(parent: Path, name: str) -> None:
    """Remove the staging and moved-aside folders for ``name`` that a killed render left."""
    patterns = [f".{name}.*.partial"]
    # A previous output moved aside is removed only once the new one took its place: a render
    # killed between the two renames leaves the previous output there, and only there.
    if os.path.lexists(parent / name):
        patterns.append(f".{name}.*.old")
    for pattern in patterns:
        for folder in parent.glob(pattern):
            if _left_by_a_dead_render(folder):
                _remove_tree(folder)


def _remove_tree(folder: Path) -> OSError | None:
    """Remove ``folder`` and everything in it that can be; the first failure, if any."""
    failures: list[OSError] = []

    def failed(function: object, path: object, error: object) -> None:
        exc = error[1] if isinstance(error, tuple) else error
        if isinstance(exc, OSError):
            failures.append(exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=failed)
    else:
        shutil.rmtree(folder, onerror=failed)
    return failures[0] if failures else None


def _made_parents(folder: Path) -> list[Path]:
    """The folders that ``folder.mkdir(parents=True)`` would make, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    return missing


@contextlib.contextmanager
def staged_folder(
    target: Path,
    *,
    force: bool = False,
    keep: Sequence[Path] = (),
    warnings: list[str] | None = None,
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` may be replaced only if a render wrote it and nothing was added or changed
    since (``ownership``), or with ``force``; never if it holds one of the files in ``keep``
    (what the render reads). That is checked before anything is made and again just before
    the swap. The finished folder gets a manifest of its files. On any error (or Ctrl-C) the
    temporary folder, and any folder made for it, is removed and ``target`` is untouched.
    Staging folders that a killed render left for ``target`` are removed first. What could
    not be cleaned up after a successful swap is said in ``warnings``.
    """
    check_replaceable(target, force=force, keep=keep)
    parent = target.parent
    made = _made_parents(parent)
    staging: Path | None = None
    started = False
    try:
        # A signal while the folder is made is delivered once its name is known, here, so
        # the clean-up below removes it (a signal in between used to leave it behind).
        with _signals_held():
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(parent, target.name)
            # The process id in the name as well as in the marker: a render killed before it
            # wrote the marker still leaves a folder the next render can prove was its.
            staging = Path(
                tempfile.mkdtemp(
                    prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=parent
                )
            )
        staging.chmod(0o777 & ~_umask())  # mkdtemp's private 0700 would outlive the rename
        _mark(staging)
        started = True
        yield staging
        (staging / STAGING_MARKER).unlink()
        write_manifest(staging)
        check_replaceable(target, force=force, keep=keep)  # it may have changed meanwhile
        _replace_folder(staging, target, warnings if warnings is not None else [])
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        if isinstance(exc, OSError) and not started:
            raise _cannot_write(parent, exc) from None
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP arriving inside are delivered, to the handlers there were,
    when it ends. Only the main thread can set handlers, and only handlers set from Python
    can be put back; otherwise signals are not held."""
    main = threading.current_thread() is threading.main_thread()
    if not main or any(signal.getsignal(signum) is None for signum in STOP_SIGNALS):
        yield
        return
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda s, _: held.append(s)) for signum in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


def _cannot_write(parent: Path, exc: OSError) -> ExportError:
    return ExportError(
        f"{parent}: cannot write the output here ({exc.strerror}); choose another folder "
        "with -o DIR"
    )


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed render made, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _replace_folder(staging: Path, target: Path, warnings: list[str]) -> None:
    old = None
    if os.path.lexists(target):
        if not target.is_dir():
            raise ExportError(f"{target}: exists and is not a folder; move it or choose -o DIR")
        old = _move_aside(target)
    try:
        os.replace(staging, target)
    except BaseException:
        # Also on Ctrl-C between the two renames: put the previous output back in place.
        if old is not None and not os.path.lexists(target):
            os.replace(old, target)
        raise
    if old is None:
        return
    if old.is_symlink():
        old.unlink()  # a link replaced with --force: what it pointed to is left alone
        return
    failure = _remove_tree(old)
    if failure is not None:
        warnings.append(
            f"{old}: the previous output, moved aside, could not all be removed "
            f"({failure.strerror}); the next render removes it, or delete it by hand"
        )


def _move_aside(target: Path) -> Path:
    """Move ``target`` to a new hidden ``.NAME.*.old`` beside it, marked as this render's."""
    try:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    except OSError as exc:
        raise _cannot_move_aside(target, exc) from None
    try:
        if target.is_symlink():
            old.rmdir()  # a link cannot replace a folder; the name stays unique enough
        os.replace(target, old)
    except OSError as exc:
        with contextlib.suppress(OSError):
            old.rmdir()
        raise _cannot_move_aside(target, exc) from None
    if not old.is_symlink():
        with contextlib.suppress(OSError):  # unmarked, it is merely left for the user
            _mark(old)
    return old


def _cannot_move_aside(target: Path, exc: OSError) -> ExportError:
    return ExportError(
        f"{target}: cannot move the previous output aside to replace it ({exc.strerror}); "
        "check that folder's permissions, or choose another folder with -o DIR"
    )

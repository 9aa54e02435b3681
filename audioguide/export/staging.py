"""Export stage, staging: where a session is written, and how it replaces the previous one.

A render writes into a hidden ``.NAME.*.partial`` folder beside its target and renames it into
place only when everything is written, so an error or Ctrl-C leaves the previous output as it
was; it replaces only a folder it can prove it wrote (``ownership``). ``write_zip`` packs a
finished folder the same way: beside, then renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ExportError
from ..ownership import (
    ZIP_COMMENT,
    check_replaceable,
    check_zip_replaceable,
    write_manifest,
)


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_folder(
    target: Path, *, force: bool = False, keep: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` may be replaced only if a render wrote it and nothing was added or changed
    since (``ownership``), or with ``force``; never if it holds one of the files in ``keep``
    (what the render reads). That is checked before anything is made and again just before
    the swap. The finished folder gets a manifest of its files. On any error (or Ctrl-C) the
    temporary folder is removed and ``target`` is untouched.
    """
    check_replaceable(target, force=force, keep=keep)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would outlive the rename
    except OSError as exc:
        raise ExportError(
            f"{parent}: cannot write the output here ({exc.strerror}); choose another folder "
            "with -o DIR"
        ) from None
    try:
        yield staging
        write_manifest(staging)
        check_replaceable(target, force=force, keep=keep)  # it may have changed meanwhile
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, target: Path) -> None:
    old = None
    if os.path.lexists(target):
        if not target.is_dir():
            raise ExportError(f"{target}: exists and is not a folder; move it or choose -o DIR")
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        # Also on Ctrl-C between the two renames: put the previous output back in place.
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        if old.is_symlink():
            old.unlink()  # a link replaced with --force: what it pointed to is left alone
        else:
            shutil.rmtree(old, ignore_errors=True)

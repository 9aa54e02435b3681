"""Export stage, ownership: a render replaces only what it can prove it wrote.

Every session folder a render writes holds a manifest (``.audioguide.json``) listing each file
it wrote with its size. A later render may replace that folder only while it holds exactly
those files, each of its recorded size: a folder without a valid manifest, or with a file
added, changed or replaced since, is someone else's and is refused, untouched. ``--force``
overrides that refusal, never this one: a folder that holds a file the render reads (the
routine, its sounds) is never replaced. The same holds for the ``--zip`` archive beside it.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import ExportError

MANIFEST_NAME = ".audioguide.json"
MANIFEST_FORMAT = 1
ZIP_COMMENT = b"audioguide session"  # marks an archive as one a render wrote
_LISTED_NAMES = 3  # names shown when a folder is refused


def write_manifest(folder: Path) -> None:
    """Record every file in ``folder`` (the finished staging folder) with its size."""
    files = {
        entry.name: entry.stat(follow_symlinks=False).st_size
        for entry in os.scandir(folder)
        if entry.name != MANIFEST_NAME
    }
    data = {"audioguide": MANIFEST_FORMAT, "files": dict(sorted(files.items()))}
    (folder / MANIFEST_NAME).write_text(
        json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _manifest(folder: Path) -> dict[str, int] | None:
    """The files and sizes ``folder``'s manifest lists, or None if it has no valid one."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("audioguide") != MANIFEST_FORMAT:
        return None
    files = data.get("files")
    if not isinstance(files, dict):
        return None
    if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in files.items()):
        return None
    return files


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED_NAMES])
    more = len(names) - _LISTED_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _within(path: Path, folder: Path) -> bool:
    try:
        resolved = path.resolve()
        return resolved == folder or folder in resolved.parents
    except (OSError, RuntimeError):
        return False


def check_replaceable(target: Path, *, force: bool = False, keep: Iterable[Path] = ()) -> None:
    """Raise ExportError unless a render may replace ``target`` (a session folder).

    ``keep`` lists the files the render reads; a target that holds one is refused even with
    ``force``. A target that does not exist, or is an empty folder, may always be written.
    """
    try:
        info = target.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there to lose; making the folder reports what is in the way
    except OSError as exc:
        raise ExportError(
            f"{target}: cannot look at the output folder ({exc.strerror}); choose another "
            "folder with -o DIR"
        ) from None
    if stat.S_ISLNK(info.st_mode):
        if force:
            return  # the link itself is replaced; what it points to is never touched
        raise ExportError(
            f"{target}: is a link to {os.readlink(target)}, not a folder audioguide wrote; "
            "nothing was changed. Choose another folder with -o DIR, or add --force to "
            "replace the link (what it points to is left alone)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ExportError(f"{target}: exists and is not a folder; move it or choose -o DIR")
    real = target.resolve()
    for path in keep:
        if _within(path, real):
            raise ExportError(
                f"{target}: it holds {path}, which this render reads; nothing was changed. "
                "Choose another folder with -o DIR"
            )
    if force:
        return
    try:
        entries = sorted(os.scandir(target), key=lambda e: e.name)
    except OSError as exc:
        raise ExportError(
            f"{target}: cannot read the output folder ({exc.strerror}); choose another folder "
            "with -o DIR"
        ) from None
    if not entries:
        return
    listed = _manifest(target)
    if listed is None:
        folders = [e.name + "/" for e in entries if e.is_dir(follow_symlinks=False)]
        files = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        counts = [_plural(len(files), "file")] if files else []
        counts += [_plural(len(folders), "folder")] if folders else []
        raise ExportError(
            f"{target}: this folder was not written by audioguide (it holds "
            f"{' and '.join(counts)}: {_describe(sorted(folders + files))}); nothing was "
            "changed. Choose another folder with -o DIR, or add --force to replace it and "
            "everything in it"
        )
    foreign = [
        entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "")
        for entry in entries
        if entry.name != MANIFEST_NAME and not _recorded(entry, listed)
    ]
    if foreign:
        raise ExportError(
            f"{target}: files were added or changed since audioguide wrote this folder "
            f"({_describe(foreign)}); nothing was changed. Move them elsewhere, choose another "
            "folder with -o DIR, or add --force to replace the folder and them"
        )


def _recorded(entry: os.DirEntry[str], listed: dict[str, int]) -> bool:
    """Whether ``entry`` is a plain file the manifest lists, still of its recorded size."""
    if entry.name not in listed or not entry.is_file(follow_symlinks=False):
        return False
    try:
        return entry.stat(follow_symlinks=False).st_size == listed[entry.name]
    except OSError:
        return False


def check_zip_replaceable(zip_path: Path, *, force: bool = False) -> None:
    """Raise ExportError unless ``zip_path`` is absent or an archive a render wrote."""
    if force or not os.path.lexists(zip_path):
        return
    if zip_path.is_file() and not zip_path.is_symlink():
        try:
            with zipfile.ZipFile(zip_path) as archive:
                if archive.comment == ZIP_COMMENT:
                    return
        except (OSError, zipfile.BadZipFile):
            pass
    raise ExportError(
        f"{zip_path}: this file was not written by audioguide; nothing was changed. Move it, "
        "choose another folder with -o DIR, or add --force to replace it"
    )

"""The speech cache: synthesized cues kept on disk between renders.

Keyed by everything that changes the audio (text, engine, version, voice, rate), so a re-render
at another tempo synthesizes nothing, and the same cue gives the same samples every time. Entries
are written to a temporary file and renamed into place, so two renders at once never see half
an entry.

Beside each engine clip the cache keeps the cue as it is mixed: trimmed, resampled, levelled and
through the voice chain (``PreparedCue``), keyed by the clip's key and the version of what
prepares it, so a re-render neither synthesizes nor prepares any cue.

Every entry carries a SHA-256 of its key, its header and its samples. An entry that fails it
(a body zeroed by a power cut, random bytes, an entry that belongs to another key) reads as a
miss: the cue is synthesized or prepared again and the entry rewritten, never used.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .engine import SpeechClip

CACHE_ENV = "AUDIOGUIDE_CACHE_DIR"
CACHE_FORMAT = 2  # 2: entries carry a checksum of their key and samples
# Sample rates a speech engine plausibly writes; anything else is a damaged header.
MIN_RATE = 8_000
MAX_RATE = 96_000
CLIP_SUFFIX = ".clip"
PREPARED_SUFFIX = ".cue"
ENTRY_SUFFIXES = (CLIP_SUFFIX, PREPARED_SUFFIX)
_CLIP_MAGIC = b"AGS2"
_CLIP_HEADER = struct.Struct("<4sIQ")  # magic, sample rate, samples
_PREPARED_MAGIC = b"AGC2"
_PREPARED_HEADER = struct.Struct("<4sfQQ")  # magic, scale, dry length, samples
_CHECKSUM_BYTES = 32  # SHA-256 of key, header and samples, after the header


@dataclass(frozen=True)
class PreparedCue:
    """A cue as it is mixed: 16-bit samples at the session rate, times ``scale`` (float32
    in [-1, 1]); ``dry_samples`` is its spoken length before the voice chain's tail.

    ``checksum`` is its cache entry's SHA-256 (of the entry's key, header and samples), set
    when the cue was read from the cache or written to it: what the cue is, for the keys of
    what is kept about the mixes it is in (``kept_levels``). None for a cue never cached."""

    samples: np.ndarray
    scale: float
    dry_samples: int
    checksum: bytes | None = field(default=None, compare=False)

    def as_float(self) -> np.ndarray:
        out = self.samples.astype(np.float32)
        out *= np.float32(self.scale)
        return out


def cache_dir() -> Path:
    """Where audioguide keeps its cache: $AUDIOGUIDE_CACHE_DIR, else the platform's user cache
    folder (XDG_CACHE_HOME or ~/.cache on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "audioguide"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "audioguide" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "audioguide"


class SpeechCache:
    """Speech clips on disk as 16-bit samples with a checksum, one per (engine identity, text),
    and beside each the prepared cues made from it."""

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "speech"

    def key(self, identity: str, text: str, preparation: str | None = None) -> str:
        """The entry's name: of the engine's clip, or with ``preparation`` (what prepares the
        clip for mixing), of the prepared cue."""
        parts = [str(CACHE_FORMAT), identity, text]
        if preparation is not None:
            parts.append(preparation)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _path(self, key: str, suffix: str = CLIP_SUFFIX) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, identity: str, text: str) -> SpeechClip | None:
        """The cached clip, or None when there is none or the entry is damaged (then the
        caller synthesizes the cue again and ``put`` replaces the entry)."""
        key = self.key(identity, text)
        entry = read_checked(self._path(key), key, _CLIP_HEADER)
        if entry is None:
            return None
        (magic, rate, count), body, _ = entry
        if magic != _CLIP_MAGIC or count == 0 or not MIN_RATE <= rate <= MAX_RATE:
            return None
        if len(body) != 2 * count:
            return None
        return SpeechClip(_int16(body), rate)

    def put(self, identity: str, text: str, clip: SpeechClip) -> None:
        key = self.key(identity, text)
        body = clip.samples.astype("<i2").tobytes()
        header = _CLIP_HEADER.pack(_CLIP_MAGIC, clip.sample_rate, clip.samples.shape[0])
        write_checked(self._path(key), key, header, body)

    def get_prepared(self, identity: str, text: str, preparation: str) -> PreparedCue | None:
        """The prepared cue, or None when there is none or the entry is damaged."""
        key = self.key(identity, text, preparation)
        entry = read_checked(self._path(key, PREPARED_SUFFIX), key, _PREPARED_HEADER)
        if entry is None:
            return None
        (magic, scale, dry, count), body, checksum = entry
        if magic != _PREPARED_MAGIC or len(body) != 2 * count or not 0 < scale < 1:
            return None
        if not 0 < dry <= count:  # the spoken part lies within the cue
            return None
        return PreparedCue(_int16(body), scale, dry, checksum)

    def put_prepared(
        self, identity: str, text: str, preparation: str, cue: PreparedCue
    ) -> PreparedCue:
        """Keep ``cue``; returns it with its entry's ``checksum`` (set even when the cache
        cannot be written, as it is what the cue is)."""
        key = self.key(identity, text, preparation)
        count = cue.samples.shape[0]
        header = _PREPARED_HEADER.pack(_PREPARED_MAGIC, cue.scale, cue.dry_samples, count)
        body = cue.samples.astype("<i2").tobytes()
        checksum = write_checked(self._path(key, PREPARED_SUFFIX), key, header, body)
        return PreparedCue(cue.samples, cue.scale, cue.dry_samples, checksum)

    def clear(self) -> tuple[int, int]:
        """Remove every cached cue, prepared or not (and any temporary file left by a render
        that was killed mid-write); return (cues, bytes) removed.

        Removes the folder's contents, following a symlinked cache folder to the real one
        (the folder itself stays, so a symlink to another disk keeps working).
        """
        cues = size = 0
        if not self.root.is_dir():
            return 0, 0
        folders = []
        for path in sorted(self.root.rglob("*"), reverse=True):  # files before their folders
            if path.is_dir() and not path.is_symlink():
                folders.append(path)
                continue
            length = path.lstat().st_size
            path.unlink()
            cues += path.suffix == CLIP_SUFFIX
            size += length
        for folder in folders:
            folder.rmdir()
        return cues, size

    def stats(self) -> tuple[int, int]:
        """(cached cues, bytes they take with their prepared versions)."""
        files = size = 0
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.suffix == CLIP_SUFFIX:
                    files += 1
                if path.suffix in ENTRY_SUFFIXES:
                    size += path.stat().st_size
        return files, size


def remove_kept(files: Iterable[Path], folders: Iterable[tuple[Path, str]]) -> tuple[int, int]:
    """Remove what a render keeps beside the cues: each of ``files``, and in each
    ``(folder, suffix)`` the files of that suffix and the temporary files ``write_atomic``
    leaves when a process is killed mid-write; nothing else (a file of the user's in the cache
    folder stays). Returns (files, bytes) removed."""
    paths = [path for path in files if path.is_file()]
    for folder, suffix in folders:
        if folder.is_dir():
            paths += sorted(p for p in folder.iterdir() if p.suffix in (suffix, ".tmp"))
    count = size = 0
    for path in paths:
        length = path.lstat().st_size
        path.unlink(missing_ok=True)
        count += 1
        size += length
    return count, size


def _int16(body: memoryview) -> np.ndarray:
    """An entry's little-endian 16-bit samples as int16: a view of the bytes read, copied only
    on a big-endian machine."""
    return np.frombuffer(body, dtype="<i2").astype(np.int16, copy=False)


def _checksum(key: str, header: bytes | memoryview, body: bytes | memoryview) -> bytes:
    digest = hashlib.sha256(key.encode())
    digest.update(header)
    digest.update(body)
    return digest.digest()


def read_checked(
    path: Path, key: str, header: struct.Struct
) -> tuple[tuple[Any, ...], memoryview, bytes] | None:
    """An entry's header fields, body and checksum, or None when it is missing, cut short, or
    its checksum does not match its key, header and body (``write_checked`` wrote it)."""
    try:
        # The samples are a view of these bytes: a cue is not copied again into pages of its
        # own (a warm render reads 40 MB).
        data = path.read_bytes()
    except OSError:
        return None
    start = header.size + _CHECKSUM_BYTES
    if len(data) < start:
        return None
    view = memoryview(data)
    raw_header, stored, body = view[: header.size], view[header.size : start], view[start:]
    checksum = _checksum(key, raw_header, body)
    if checksum != stored:
        return None
    return header.unpack(raw_header), body, checksum


def write_checked(path: Path, key: str, header: bytes, body: bytes) -> bytes:
    """Write an entry (``header``, then the SHA-256 of ``key``, header and body, then
    ``body``) through ``write_atomic``; returns that checksum."""
    checksum = _checksum(key, header, body)

    def write(raw: BinaryIO) -> None:
        raw.write(header)
        raw.write(checksum)
        raw.write(body)

    write_atomic(path, write)
    return checksum


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a cache file (an entry, a cover, a memo) through a temporary file renamed into
    place: a reader at the same time sees the old file or the new one, never half of one. A
    cache that cannot be written only costs speed: an OSError keeps nothing and goes no
    further."""
    try:
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except FileNotFoundError:  # the entry's folder is made once, not tried every time
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw:
                write(raw)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        # A cache that cannot be written only costs speed; the render goes on.
        return

"""The speech cache: synthesized cues kept on disk between renders.

Keyed by everything that changes the audio (text, engine, version, voice, rate), so a re-render
at another tempo synthesizes nothing, and the same cue gives the same samples every time (espeak
can differ by a few milliseconds between runs). Entries are written to a temporary file and
renamed into place, so two renders at once never see half an entry.

Beside each engine clip (a WAV file) the cache keeps the cue as it is mixed: trimmed,
resampled, levelled and through the voice chain (``PreparedCue``), keyed by the clip's key and
a digest of the code and settings that prepare it, so a re-render neither synthesizes nor
prepares any cue.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import sys
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .engine import SpeechClip

CACHE_ENV = "AUDIOGUIDE_CACHE_DIR"
CACHE_FORMAT = 1
# Sample rates a speech engine plausibly writes; anything else is a damaged header.
MIN_RATE = 8_000
MAX_RATE = 96_000
CLIP_SUFFIX = ".wav"
PREPARED_SUFFIX = ".cue"
_PREPARED_MAGIC = b"AGC1"
_PREPARED_HEADER = struct.Struct("<4sfQQ")  # magic, scale, dry length, samples


@dataclass(frozen=True)
class PreparedCue:
    """A cue as it is mixed: 16-bit samples at the session rate, times ``scale`` (float32
    in [-1, 1]); ``dry_samples`` is its spoken length before the voice chain's tail."""

    samples: np.ndarray
    scale: float
    dry_samples: int

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
    """Speech clips on disk as 16-bit WAV files, one per (engine identity, text)."""

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
        """The cached clip, or None when there is none or the entry is damaged.

        A damaged entry (truncated, wrong format, not a WAV file) reads as a miss, so the
        caller synthesizes the cue again and ``put`` replaces the entry.
        """
        path = self._path(self.key(identity, text))
        try:
            with wave.open(str(path), "rb") as wav:
                rate = wav.getframerate()
                expected = wav.getnframes()
                if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                    return None
                frames = wav.readframes(expected)
        except (OSError, wave.Error, EOFError, ValueError):
            return None
        # A file cut short still opens; its header says how much audio there should be.
        if not frames or len(frames) != 2 * expected or not MIN_RATE <= rate <= MAX_RATE:
            return None
        return SpeechClip(np.frombuffer(frames, dtype="<i2").copy(), rate)

    def put(self, identity: str, text: str, clip: SpeechClip) -> None:
        def write(raw: BinaryIO) -> None:
            with wave.open(raw, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(clip.sample_rate)
                wav.writeframes(clip.samples.astype("<i2").tobytes())

        _write_atomic(self._path(self.key(identity, text)), write)

    def get_prepared(self, identity: str, text: str, preparation: str) -> PreparedCue | None:
        """The prepared cue, or None when there is none or the entry is damaged."""
        path = self._path(self.key(identity, text, preparation), PREPARED_SUFFIX)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) < _PREPARED_HEADER.size:
            return None
        magic, scale, dry, count = _PREPARED_HEADER.unpack_from(data)
        body = memoryview(data)[_PREPARED_HEADER.size :]
        if magic != _PREPARED_MAGIC or len(body) != 2 * count or not 0 < scale < 1:
            return None
        if not 0 < dry <= count:  # the spoken part lies within the cue
            return None
        return PreparedCue(np.frombuffer(body, dtype="<i2").astype(np.int16), scale, dry)

    def put_prepared(self, identity: str, text: str, preparation: str, cue: PreparedCue) -> None:
        def write(raw: BinaryIO) -> None:
            count = cue.samples.shape[0]
            raw.write(_PREPARED_HEADER.pack(_PREPARED_MAGIC, cue.scale, cue.dry_samples, count))
            raw.write(cue.samples.astype("<i2").tobytes())

        _write_atomic(self._path(self.key(identity, text, preparation), PREPARED_SUFFIX), write)

    def clear(self) -> tuple[int, int]:
        """Remove every cached cue, prepared or not (and any temporary file left by a render
        that was killed mid-write); return (cues, bytes) removed."""
        cues = size = 0
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.is_file():
                    cues += path.suffix == CLIP_SUFFIX
                    size += path.stat().st_size
            shutil.rmtree(self.root, ignore_errors=True)
        return cues, size

    def stats(self) -> tuple[int, int]:
        """(cached cues, bytes they take with their prepared versions)."""
        files = size = 0
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.suffix == CLIP_SUFFIX:
                    files += 1
                if path.suffix in (CLIP_SUFFIX, PREPARED_SUFFIX):
                    size += path.stat().st_size
        return files, size


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write an entry through a temporary file renamed into place: a reader at the same time
    sees the old entry or the new one, never half of one."""
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

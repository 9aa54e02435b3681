"""The speech cache: synthesized cues kept on disk between renders.

Keyed by everything that changes the audio (text, engine, version, voice, rate), so a re-render
at another tempo synthesizes nothing, and the same cue gives the same samples every time (espeak
can differ by a few milliseconds between runs). Entries are written to a temporary file and
renamed into place, so two renders at once never see half an entry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from .tts import SpeechClip

CACHE_ENV = "AUDIOGUIDE_CACHE_DIR"
CACHE_FORMAT = 1
# Sample rates a speech engine plausibly writes; anything else is a damaged header.
MIN_RATE = 8_000
MAX_RATE = 96_000


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

    def key(self, identity: str, text: str) -> str:
        blob = f"{CACHE_FORMAT}\0{identity}\0{text}".encode()
        return hashlib.sha256(blob).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.wav"

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
        path = self._path(self.key(identity, text))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as wav:
                    wav.setnchannels(1)
                    wav.setsampwidth(2)
                    wav.setframerate(clip.sample_rate)
                    wav.writeframes(clip.samples.astype("<i2").tobytes())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            # A cache that cannot be written only costs speed; the render goes on.
            return

    def clear(self) -> tuple[int, int]:
        # Also removes temporary files left by a render that was killed mid-write.
        """Remove every cached clip; return (files, bytes) removed."""
        files = size = 0
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.is_file():
                    files += 1
                    size += path.stat().st_size
            shutil.rmtree(self.root, ignore_errors=True)
        return files, size

    def stats(self) -> tuple[int, int]:
        """(cached clips, bytes they take)."""
        files = size = 0
        if self.root.is_dir():
            for path in self.root.rglob("*.wav"):
                files += 1
                size += path.stat().st_size
        return files, size

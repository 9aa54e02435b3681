"""Kept levels: a track's pass-1 measurement (``mix.track_levels``) kept in the cache folder
and read back by a render whose every input to it is the same.

A render measures each track's mix (pass 1) before it can master any of them, since one gain
masters the whole session: on 2 cores, 0.2 s of a 20-minute render's 2.1 s with its cues
cached, a third of what it does beyond its one MP3 encode. A track measured again from the
same inputs gives the same levels to the bit, so they are kept under a SHA-256 of those
inputs, and a render that finds them skips measuring that track; every other track is
measured as before.

What decides a track's levels, and so goes into the key:

- the track: every event (kind, time, length, words, phase, beat, tick, tempo), its index
  (each event's random stream) and its span;
- every cue it speaks, by what its samples are (``Speech.checksum``: the checksum of its
  prepared entry in the speech cache), not by its words: a cue made again, after the cache
  was cleared, is a new key;
- the mix settings but the loudness target (applied after measuring, to the levels);
- the code: a SHA-256 of every module and built-in sound of the package, with numpy's
  version, so that any change to the mixing, the breath guide, the bells or the meter, or an
  upgrade, is a new key, with no version to bump by hand and forget.

A track that mixes a sound file of the user's (a bell, a recorded bed) is measured every time:
its contents could change under the same name and dates, and all but WAV files are decoded by
ffmpeg, whose version is not the package's. A render without the cache (``use_cache``
false) neither reads nor keeps levels.

Each entry carries a SHA-256 of its key, header and contents (``speech.cache``'s entries):
one that is missing, cut short, damaged or another key's reads as a miss, and the track is
measured, never mastered from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .mix import MixSettings, TrackLevels, bed_kind, bell_file
from .routine import AMBIENT_KINDS
from .sounds import SOUNDS_FOLDER
from .speech import Speech
from .speech.cache import read_checked, write_checked
from .timeline import Track

LEVELS_MEMO = "levels"  # in the cache folder, beside the speech cache
LEVELS_SUFFIX = ".levels"
LEVELS_FORMAT = 1
_MAGIC = b"AGL1"
_HEADER = struct.Struct("<4sQQ")  # magic, blocks (powers and spoken), voice peaks
_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_digest() -> str | None:
    """A SHA-256 of every module and built-in sound of the package, and numpy's version;
    None when the package's sources are not on disk (then no levels are kept)."""
    files = sorted(_PACKAGE.rglob("*.py")) + sorted((_PACKAGE / SOUNDS_FOLDER).glob("*.wav"))
    if not files:
        return None
    digest = hashlib.sha256(f"{LEVELS_FORMAT}\0{np.__version__}\0{SAMPLE_RATE}".encode())
    try:
        for path in files:
            digest.update(b"\0" + path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def reads_user_files(track: Track, settings: MixSettings) -> bool:
    """Whether mixing ``track`` reads a sound file of the user's: a bell (when bells sound)
    or a recorded bed."""
    bells = settings.bells and any(e.kind in ("bell", "chime") for e in track.events)
    return (
        bool(bells and bell_file(settings, track)) or bed_kind(settings, track) not in AMBIENT_KINDS
    )


def levels_key(track: Track, speech: Speech, settings: MixSettings, code: str) -> str | None:
    """The key of ``track``'s levels, mixed from ``speech`` with ``settings`` by the package
    whose ``code_digest`` is ``code``; None when they are not kept (a sound file of the
    user's, a cue not cached)."""
    if reads_user_files(track, settings):
        return None
    cues = []
    for event in track.events:
        if event.kind == "say":
            assert event.text is not None
            checksum = speech.checksum(event.text)
            if checksum is None:
                return None
            cues.append(checksum.hex())
    mix = dataclasses.asdict(settings)
    del mix["loudness_lufs"]  # the gain's target, not the mix
    data = {"code": code, "track": dataclasses.asdict(track), "cues": cues, "mix": mix}
    text = json.dumps(data, sort_keys=True)  # ASCII: any title encodes
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class KeptLevels:
    """The levels kept in ``folder``, one file per key, by this package (``code_digest``,
    read once here, before any worker asks for a key)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.code = code_digest()

    def key(self, track: Track, speech: Speech, settings: MixSettings) -> str | None:
        """``levels_key`` for this package; None when its sources are not on disk."""
        return None if self.code is None else levels_key(track, speech, settings, self.code)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{LEVELS_SUFFIX}"

    def get(self, key: str) -> TrackLevels | None:
        """The levels kept under ``key``, or None when there are none or the entry is
        damaged."""
        entry = read_checked(self._path(key), key, _HEADER)
        if entry is None:
            return None
        (magic, blocks, peaks), body, _ = entry
        if magic != _MAGIC or len(body) != 9 * blocks + 8 * peaks:
            return None
        powers = np.frombuffer(body, dtype="<f8", count=blocks).astype(np.float64)
        spoken = np.frombuffer(body, dtype=np.uint8, count=blocks, offset=8 * blocks)
        if spoken.size and spoken.max() > 1:
            return None
        voice_peaks = np.frombuffer(body, dtype="<f8", count=peaks, offset=9 * blocks)
        return TrackLevels(powers, spoken.astype(bool), voice_peaks.astype(np.float64))

    def put(self, key: str, levels: TrackLevels) -> None:
        powers = np.asarray(levels.powers, dtype="<f8")
        spoken = np.asarray(levels.spoken, dtype=bool)
        voice_peaks = np.asarray(levels.voice_peaks, dtype="<f8")
        if powers.ndim != 1 or spoken.shape != powers.shape or voice_peaks.ndim != 1:
            raise ValueError("levels must be 1-D, one spoken flag per block power")
        header = _HEADER.pack(_MAGIC, powers.size, voice_peaks.size)
        body = powers.tobytes() + spoken.astype(np.uint8).tobytes() + voice_peaks.tobytes()
        write_checked(self._path(key), key, header, body)

"""Export stage: mastered track samples in, files a phone plays out.

MP3 through the LAME encoder in the lameenc wheel (no ffmpeg), constant bit rate so every
player reads the true duration; ID3v2.3 tags through mutagen; a UTF-8 M3U8 playlist; and the
whole folder written into a temporary folder beside the target and renamed into place at the
end, so a failure or Ctrl-C leaves the previous output as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lameenc
import numpy as np
from mutagen.id3 import ID3, TALB, TCON, TIT2, TPE1, TRCK, TXXX

from .errors import ExportError
from .synth import SAMPLE_RATE

DEFAULT_BITRATE_KBPS = 96
MP3_BITRATES_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
LAME_QUALITY = 5  # LAME's -q: 2 is slower with little gain for speech
# LAME's encoder delay plus the decoder's, in samples: a decoded MP3 starts this late.
MP3_DELAY_SAMPLES = 1105
GENRE = "Meditation"


@dataclass(frozen=True)
class TrackTags:
    title: str
    artist: str
    album: str
    track: int
    total: int
    comment: str = ""


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16, rounded (exact zeros stay exact zeros)."""
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


def encode_mp3(
    samples: np.ndarray, bitrate_kbps: int = DEFAULT_BITRATE_KBPS, sample_rate: int = SAMPLE_RATE
) -> bytes:
    """Encode mono float32 samples as constant-bit-rate MP3.

    The encoder and decoder together delay the sound by MP3_DELAY_SAMPLES, and lameenc writes
    no header telling players to trim it. So the input is advanced by that many samples (they
    lie in the track's silent lead-in): decoded, every sound lands on the sample the timeline
    gives it, in every player.
    """
    if bitrate_kbps not in MP3_BITRATES_KBPS:
        raise ExportError(
            f"--bitrate must be one of {', '.join(map(str, MP3_BITRATES_KBPS))} kbps "
            f"(got {bitrate_kbps}); {DEFAULT_BITRATE_KBPS} suits a voice"
        )
    pcm = to_pcm16(samples[MP3_DELAY_SAMPLES:])
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(1)
    encoder.set_quality(LAME_QUALITY)
    encoder.silence()
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def tag_mp3(path: Path, tags: TrackTags) -> None:
    """Write ID3v2.3 tags (title, artist, album, track n/N, genre, comment)."""
    id3 = ID3()
    id3.add(TIT2(encoding=3, text=tags.title))
    id3.add(TPE1(encoding=3, text=tags.artist))
    id3.add(TALB(encoding=3, text=tags.album))
    id3.add(TRCK(encoding=3, text=f"{tags.track}/{tags.total}"))
    id3.add(TCON(encoding=3, text=GENRE))
    if tags.comment:
        id3.add(TXXX(encoding=3, desc="audioguide", text=tags.comment))
    # No padding: libsndfile counts tag bytes as audio when it estimates an MP3's length.
    id3.save(str(path), v2_version=3, padding=lambda info: 0)


@dataclass(frozen=True)
class PlaylistEntry:
    file: str
    title: str
    duration_s: float


def playlist_text(entries: Sequence[PlaylistEntry], artist: str) -> str:
    """An extended M3U playlist: ``#EXTM3U`` first, plain relative names, LF line ends."""
    lines = ["#EXTM3U"]
    for entry in entries:
        lines.append(f"#EXTINF:{round(entry.duration_s)},{artist} - {entry.title}")
        lines.append(entry.file)
    return "\n".join(lines) + "\n"


def write_playlist(path: Path, entries: Sequence[PlaylistEntry], artist: str) -> None:
    """Write UTF-8 without a BOM, as phone players expect."""
    path.write_text(playlist_text(entries, artist), encoding="utf-8", newline="\n")


# ---------------------------------------------------------------------------------------------
# Atomic output folder


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    On any error (or Ctrl-C) the temporary folder is removed and ``target`` is untouched.
    """
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
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        if not target.is_dir():
            raise ExportError(f"{target}: exists and is not a folder; move it or choose -o DIR")
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

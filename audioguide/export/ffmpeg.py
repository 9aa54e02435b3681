"""Export stage, the ffmpeg sink: mastered tracks in, M4A (AAC), Ogg Vorbis, FLAC or WAV out.

MP3 needs nothing but the lameenc wheel (``mp3``); these need ffmpeg, found on the PATH. Each
track's samples go, a span at a time, into raw PCM files in the staging folder (its own, and
its place in the full session's), so no track or session sits in memory and no temporary file
lands anywhere else; ffmpeg then encodes each file, the full session with its chapters given
in an ffmetadata file. Tags and cover art are written afterwards (``tags``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..audio import SAMPLE_RATE, seconds_to_samples
from ..errors import ExportError
from .mp3 import to_pcm16
from .names import SessionFiles
from .tags import Chapter, SessionTags, tag_file

if TYPE_CHECKING:  # the timeline imports names from this package
    from ..timeline import Timeline, Track

AUDIO_FORMATS = ("mp3", "m4a", "ogg", "flac", "wav")
DEFAULT_FORMAT = "mp3"
# ffmpeg's muxer and codec for each, and whether it takes a bit rate (lossless ones do not).
_FFMPEG: dict[str, tuple[str, str, bool]] = {
    "m4a": ("ipod", "aac", True),
    "ogg": ("ogg", "libvorbis", True),
    "flac": ("flac", "flac", False),
    "wav": ("wav", "pcm_s16le", False),
}
_SESSION_PCM = ".session.pcm"  # the full session's PCM, until ffmpeg encodes it
_SESSION_METADATA = ".session.ffmeta"
_PCM_SUFFIX = ".pcm"  # a track's own PCM, until ffmpeg encodes it
INSTALL_FFMPEG = (
    "install ffmpeg (Debian/Ubuntu: sudo apt install ffmpeg; macOS: brew install ffmpeg; "
    "Windows: winget install ffmpeg), or use --format mp3, which needs nothing else"
)


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def check_format(audio_format: str) -> None:
    """Raise ExportError, before any rendering, when ``audio_format`` cannot be written."""
    if audio_format not in AUDIO_FORMATS:
        raise ExportError(
            f"--format must be one of {', '.join(AUDIO_FORMATS)} (got {audio_format!r})"
        )
    if audio_format != "mp3" and ffmpeg_path() is None:
        raise ExportError(
            f"--format {audio_format} needs ffmpeg, which is not installed: {INSTALL_FFMPEG}"
        )


def _codec_args(audio_format: str, bitrate_kbps: int) -> list[str]:
    _, codec, lossy = _FFMPEG[audio_format]
    args = ["-c:a", codec]
    if lossy:
        args += ["-b:a", f"{bitrate_kbps}k"]
    return args


class FfmpegSink:
    """Writes a session's files in ``audio_format`` into ``folder`` (the staging folder): each
    track's file if ``tracks``, the full-session file with chapters if ``full``.

    ``write_track`` may be called from several threads at once, one track each.
    """

    def __init__(
        self,
        folder: Path,
        timeline: Timeline,
        files: SessionFiles,
        tags: SessionTags,
        *,
        audio_format: str,
        bitrate_kbps: int,
        tracks: bool,
        full: bool,
    ) -> None:
        self.folder = folder
        self.timeline = timeline
        self.files = files
        self.tags = tags
        self.audio_format = audio_format
        self.bitrate_kbps = bitrate_kbps
        self.tracks = tracks
        self.full = full
        self._session_pcm = folder / _SESSION_PCM
        self._channels: int | None = None  # of every track: the full session's PCM is one

    def write_track(self, track: Track, spans: Iterable[np.ndarray]) -> None:
        """Encode one mastered track, given as consecutive spans of float32 samples (mono or
        frames x channels)."""
        track_pcm = self.folder / f".{track.index}{_PCM_SUFFIX}"
        at_byte: int | None = None
        with contextlib.ExitStack() as files:
            own = files.enter_context(open(track_pcm, "wb")) if self.tracks else None
            session = None
            if self.full:
                session = os.open(self._session_pcm, os.O_WRONLY | os.O_CREAT, 0o600)
                files.callback(os.close, session)
            for span in spans:
                channels = 1 if span.ndim == 1 else span.shape[1]
                if self._channels is None:
                    self._channels = channels
                elif channels != self._channels:
                    raise ValueError("every track of a session has the same channels")
                data = np.ascontiguousarray(to_pcm16(span)).tobytes()
                if own is not None:
                    own.write(data)
                if session is not None:
                    # Tracks arrive in any order; each goes to its place in one file.
                    if at_byte is None:
                        at_byte = seconds_to_samples(track.start_s) * 2 * channels
                    os.pwrite(session, data, at_byte)
                    at_byte += len(data)
        if self.tracks:
            path = self.folder / self.files.tracks[track.index - 1]
            try:
                self._encode(track_pcm, path)
            finally:
                track_pcm.unlink(missing_ok=True)
            tag_file(path, self.audio_format, self.tags.track(track))

    def finish(self) -> None:
        """Encode the full-session file, if asked for."""
        if not self.full:
            return
        path = self.folder / self.files.full
        tags = self.tags.full()
        metadata = self.folder / _SESSION_METADATA
        metadata.write_text(ffmetadata(tags.chapters), encoding="utf-8")
        try:
            self._encode(self._session_pcm, path, metadata)
        finally:
            self._session_pcm.unlink(missing_ok=True)
            metadata.unlink(missing_ok=True)
        tag_file(path, self.audio_format, tags)

    def _encode(self, raw_pcm: Path, path: Path, metadata: Path | None = None) -> None:
        """Encode a raw int16 PCM file to ``path``, with the chapters in ``metadata`` (an
        ffmetadata file) where the format holds them (M4A, Ogg, FLAC)."""
        ffmpeg = ffmpeg_path()
        if ffmpeg is None:
            raise ExportError(f"--format {self.audio_format} needs ffmpeg: {INSTALL_FFMPEG}")
        muxer, _, _ = _FFMPEG[self.audio_format]
        command = [
            ffmpeg, "-nostdin", "-v", "error", "-y",
            "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", str(self._channels or 1),
            "-i", str(raw_pcm),
        ]  # fmt: skip
        if metadata is not None:
            command += ["-i", str(metadata), "-map", "0:a", "-map_metadata", "1"]
            command += ["-map_chapters", "1"]
        command += [*_codec_args(self.audio_format, self.bitrate_kbps), "-f", muxer, str(path)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()[-1:] or ["no message"]
            raise ExportError(f"{path.name}: ffmpeg could not encode it ({detail[0]})")


def ffmetadata(chapters: Sequence[Chapter]) -> str:
    """ffmpeg's metadata file: one [CHAPTER] per chapter, times in milliseconds."""

    def escape(text: str) -> str:
        for char in "\\=;#\n":
            text = text.replace(char, "\\" + char)
        return text

    lines = [";FFMETADATA1"]
    for chapter in chapters:
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={round(chapter.start_s * 1000)}",
            f"END={round(chapter.end_s * 1000)}",
            f"title={escape(chapter.title)}",
        ]
    return "\n".join(lines) + "\n"

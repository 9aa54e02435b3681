"""Export stage: a session's mastered tracks in, the folder a phone plays out.

``SessionWriter`` takes each track's samples as it is mastered (from any thread, in any order)
and hands them to the sink for the format (``mp3``, or ``ffmpeg`` for the others), which
writes the audio files and their tags; beside each it writes the transcripts (``sidecars``).
``finish`` then has the sink write the full-session file with chapters, and writes the
playlist and the folder's cover. Which files are written follows the output mode: one file
per section, one for the whole session, or both. Names come from ``names``, tags from
``tags``, the staging folder and the zip from ``staging``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..checks import check_choice, check_flag, check_whole
from .cover import cover_in_background, cover_png
from .ffmpeg import AUDIO_FORMATS, DEFAULT_FORMAT, FfmpegSink, check_format
from .mp3 import (
    DEFAULT_BITRATE_KBPS,
    LAME_QUALITY,
    MP3_BITRATES_KBPS,
    Mp3Sink,
    check_bitrate,
    to_pcm16,
)
from .names import SessionFiles, session_files, slugify
from .sidecars import PlaylistEntry, write_chapters, write_playlist, write_transcripts
from .staging import staged_folder, write_zip
from .tags import SessionTags, track_cues

if TYPE_CHECKING:  # the timeline imports names from this package
    from ..timeline import Timeline, Track

__all__ = [
    "AUDIO_FORMATS",
    "DEFAULT_BITRATE_KBPS",
    "DEFAULT_FORMAT",
    "DEFAULT_OUTPUT_MODE",
    "LAME_QUALITY",
    "MP3_BITRATES_KBPS",
    "OUTPUT_MODES",
    "ExportOptions",
    "SessionFiles",
    "SessionWriter",
    "cover_in_background",
    "session_files",
    "slugify",
    "staged_folder",
    "to_pcm16",
    "write_zip",
]

# Which files a render writes: one per section, one for the whole session, or both.
OUTPUT_MODES = ("both", "tracks", "single")
DEFAULT_OUTPUT_MODE = "both"


@dataclass(frozen=True)
class ExportOptions:
    """How a session is written; the defaults are the CLI's."""

    audio_format: str = DEFAULT_FORMAT
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS
    mode: str = DEFAULT_OUTPUT_MODE
    year: int | None = None  # None: the year of the render
    zip: bool = False  # also write <folder>.zip beside the folder
    # Replace an output folder (or zip) even if audioguide cannot prove it wrote it. Never one
    # that holds a file the render reads.
    force: bool = False

    def __post_init__(self) -> None:
        check_choice(self.audio_format, "audio_format", AUDIO_FORMATS)
        check_bitrate(self.bitrate_kbps)
        check_choice(self.mode, "mode", OUTPUT_MODES)
        if self.year is not None:
            check_whole(self.year, "year", 1, 9999, "years")
        check_flag(self.zip, "zip")
        check_flag(self.force, "force")

    def check(self) -> None:
        """Raise ExportError for a format this machine cannot write (before any rendering)."""
        check_format(self.audio_format)

    @property
    def writes_tracks(self) -> bool:
        return self.mode in ("both", "tracks")

    @property
    def writes_full(self) -> bool:
        return self.mode in ("both", "single")


class Sink(Protocol):
    """Writes a session's audio files in one format, and their tags."""

    def write_track(self, track: Track, spans: Iterable[np.ndarray]) -> None:
        """Encode and write one mastered track, given as consecutive spans."""

    def finish(self) -> None:
        """Write the full-session file, if asked for, once every track is written."""


def make_sink(
    folder: Path, timeline: Timeline, files: SessionFiles, tags: SessionTags, options: ExportOptions
) -> Sink:
    """The sink that writes ``options.audio_format``."""
    what = {"tracks": options.writes_tracks, "full": options.writes_full}
    if options.audio_format == "mp3":
        return Mp3Sink(folder, timeline, files, tags, bitrate_kbps=options.bitrate_kbps, **what)
    return FfmpegSink(
        folder,
        timeline,
        files,
        tags,
        audio_format=options.audio_format,
        bitrate_kbps=options.bitrate_kbps,
        **what,
    )


class SessionWriter:
    """Writes one session's files into ``folder`` (the staging folder of a render).

    ``cover``: the session's cover being made already (``cover_in_background`` of its title
    and artist), waited for here; None draws it here.
    """

    def __init__(
        self,
        folder: Path,
        timeline: Timeline,
        options: ExportOptions,
        *,
        cover: Future[bytes] | None = None,
    ) -> None:
        options.check()
        self.folder = folder
        self.timeline = timeline
        self.options = options
        self.files = session_files(timeline, options.audio_format)
        self.cover = cover_png(timeline.title, timeline.artist) if cover is None else cover.result()
        year = options.year or datetime.date.today().year
        self.tags = SessionTags(timeline, year, self.cover)
        self.sink = make_sink(folder, timeline, self.files, self.tags, options)

    def write_track(self, track: Track, samples: np.ndarray | Iterable[np.ndarray]) -> None:
        """Encode and write one mastered track: float32, mono or frames x channels, whole or
        as consecutive spans (encoded as they come, so only a span is held)."""
        spans: Iterable[np.ndarray] = [samples] if isinstance(samples, np.ndarray) else samples
        self.sink.write_track(track, spans)
        if self.options.writes_tracks:
            write_transcripts(
                self.folder / self.files.tracks[track.index - 1],
                track_cues(track),
                title=track.title,
                artist=self.timeline.artist,
                album=self.timeline.title,
                length_s=track.duration_s,
            )

    def finish(self) -> tuple[Path, ...]:
        """Write the full-session file (if asked for), the playlist and the folder's cover.
        Returns the audio files written, in playing order."""
        timeline = self.timeline
        written: list[Path] = []
        entries: list[PlaylistEntry] = []
        if self.options.writes_tracks:
            for track, name in zip(timeline.tracks, self.files.tracks, strict=True):
                written.append(self.folder / name)
                entries.append(PlaylistEntry(name, track.title, track.duration_s))
        self.sink.finish()
        if self.options.writes_full:
            path = self.folder / self.files.full
            write_transcripts(
                path,
                self.tags.full().cues,
                title=timeline.title,
                artist=timeline.artist,
                album=timeline.title,
                length_s=timeline.total_s,
            )
            write_chapters(path, timeline.title, timeline.artist, self.tags.full().chapters)
            written.append(path)
            if not self.options.writes_tracks:
                entries.append(PlaylistEntry(self.files.full, timeline.title, timeline.total_s))
        write_playlist(self.folder / self.files.playlist, entries, timeline.artist)
        (self.folder / self.files.cover).write_bytes(self.cover)
        return tuple(written)

"""Export stage, one session: mastered tracks in, the folder a phone plays out.

``SessionWriter`` takes each track's samples as it is mastered (from any thread, in any order)
and writes its audio file, tags and ``.lrc`` transcript into the staging folder; ``finish``
then writes the full-session file with chapters and the playlist. Which files are written
follows the output mode: one file per section, one for the whole session, or both.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..checks import check_choice, check_flag, check_whole
from ..synth import seconds_to_samples
from .cover import cover_png
from .ffmpeg import (
    AUDIO_FORMATS,
    DEFAULT_FORMAT,
    check_format,
    encode_file,
    encode_raw_file,
    tag_file,
)
from .mp3 import (
    DEFAULT_BITRATE_KBPS,
    DEFAULT_OUTPUT_MODE,
    FULL_SESSION_SUFFIX,
    LAME_QUALITY,
    MP3_BITRATES_KBPS,
    OUTPUT_MODES,
    PlaylistEntry,
    SessionPiece,
    TrackEncoder,
    grid_start,
    session_info_frame,
    session_piece,
    to_pcm16,
    track_info_frame,
    write_playlist,
)
from .names import safe_name, unique_name
from .sidecars import lrc_text, track_cues, write_lrc
from .tags import Chapter, Cue, Gapless, TrackTags, tag_mp3

if TYPE_CHECKING:  # the timeline imports names from here
    from ..timeline import Timeline, Track

_RAW_SESSION = ".session.pcm"  # the full session's PCM for ffmpeg (formats other than MP3)
_PIECE_SUFFIX = ".frames"  # a track's frames for the full-session MP3, until it is joined


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
        check_whole(self.bitrate_kbps, "bitrate_kbps", 1, max(MP3_BITRATES_KBPS), "kbps")
        check_choice(self.bitrate_kbps, "bitrate_kbps", MP3_BITRATES_KBPS)
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


@dataclass(frozen=True)
class SessionFiles:
    """Names (in the session folder) of what a render writes."""

    tracks: tuple[str, ...]
    full: str
    playlist: str
    cover: str


def session_files(timeline: Timeline, audio_format: str = DEFAULT_FORMAT) -> SessionFiles:
    """Safe names, unique within the folder: the tracks keep the timeline's names."""
    taken: set[str] = set()
    tracks = tuple(
        unique_name(str(Path(t.file).with_suffix(f".{audio_format}")), taken)
        for t in timeline.tracks
    )
    title = safe_name(timeline.title, fallback="Session")
    full = unique_name(f"{title}{FULL_SESSION_SUFFIX}.{audio_format}", taken)
    playlist = unique_name(f"{title}.m3u8", taken)
    # Folder art: players that ignore embedded covers (and file browsers) look for this name.
    cover = unique_name("cover.png", taken)
    return SessionFiles(tracks, full, playlist, cover)


class SessionWriter:
    """Writes one session's files into ``folder`` (the staging folder of a render)."""

    def __init__(self, folder: Path, timeline: Timeline, options: ExportOptions) -> None:
        options.check()
        self.folder = folder
        self.timeline = timeline
        self.options = options
        self.names = session_files(timeline, options.audio_format)
        self.year = options.year or datetime.date.today().year
        self.cover = cover_png(timeline.title, timeline.artist)
        self._pieces: dict[int, SessionPiece] = {}
        self._lock = threading.Lock()
        self._channels = 1

    def _tags(
        self, track: Track, cues: tuple[Cue, ...], gapless: Gapless | None = None
    ) -> TrackTags:
        return TrackTags(
            title=track.title,
            artist=self.timeline.artist,
            album=self.timeline.title,
            track=track.index,
            total=len(self.timeline.tracks),
            year=self.year,
            comment=f"Rendered at {self.timeline.breath}",
            cover_png=self.cover,
            cues=cues,
            gapless=gapless,
        )

    def write_track(self, track: Track, samples: np.ndarray | Iterable[np.ndarray]) -> None:
        """Encode and write one mastered track: float32, mono or frames x channels, whole or
        as consecutive spans (an MP3 is encoded as they come, so only a span is held)."""
        spans: Iterable[np.ndarray] = [samples] if isinstance(samples, np.ndarray) else samples
        first_sample = seconds_to_samples(track.start_s)
        name = self.names.tracks[track.index - 1]
        path = self.folder / name
        cues = track_cues(track)
        fmt = self.options.audio_format
        if fmt == "mp3":
            encoder = TrackEncoder(first_sample, self.options.bitrate_kbps)
            for span in spans:
                encoder.feed(span)
            encoded = encoder.finish()
            piece = session_piece(encoded, self._next_grid_start(track))
            if self.options.writes_full:
                # Kept on disk, not in memory, until finish() joins the pieces.
                frames = memoryview(encoded.audio)[: piece.size]
                (self.folder / self._piece_name(track)).write_bytes(frames)
                with self._lock:
                    self._pieces[track.index] = piece
            if self.options.writes_tracks:
                with open(path, "wb") as out:
                    out.write(track_info_frame(encoded, piece.track_crc))
                    out.write(encoded.audio)
                tag_mp3(path, self._tags(track, cues, gapless=encoded.gapless))
        else:
            whole = np.concatenate(list(spans))
            self._channels = 1 if whole.ndim == 1 else whole.shape[1]
            pcm = to_pcm16(whole)
            del whole
            if self.options.writes_full:
                self._write_raw(pcm, first_sample)
            if self.options.writes_tracks:
                encode_file(path, pcm, fmt, self.options.bitrate_kbps)
                tag_file(path, fmt, self._tags(track, cues))
        if self.options.writes_tracks:
            write_lrc(path.with_suffix(".lrc"), self._lrc(track.title, cues, track.duration_s))
            from ..subtitles import write_subtitles  # here: it imports this package

            write_subtitles(path, cues, length_s=track.duration_s)

    def _next_grid_start(self, track: Track) -> int | None:
        tracks = self.timeline.tracks
        if track.index >= len(tracks):
            return None
        return grid_start(seconds_to_samples(tracks[track.index].start_s))

    @staticmethod
    def _piece_name(track: Track) -> str:
        return f".{track.index}{_PIECE_SUFFIX}"

    def _write_raw(self, pcm: np.ndarray, first_sample: int) -> None:
        # Tracks arrive in any order; each goes to its place in one file.
        data = np.ascontiguousarray(pcm).tobytes()
        raw = self.folder / _RAW_SESSION
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, first_sample * 2 * self._channels)
        finally:
            os.close(fd)

    def _lrc(self, title: str, cues: tuple[Cue, ...], length_s: float) -> str:
        return lrc_text(
            cues,
            title=title,
            artist=self.timeline.artist,
            album=self.timeline.title,
            length_s=length_s,
        )

    def finish(self) -> tuple[Path, ...]:
        """Write the full-session file (if asked for), the playlist and the folder's cover.
        Returns the audio files written, in playing order."""
        timeline = self.timeline
        written: list[Path] = []
        entries: list[PlaylistEntry] = []
        if self.options.writes_tracks:
            for track, name in zip(timeline.tracks, self.names.tracks, strict=True):
                written.append(self.folder / name)
                entries.append(PlaylistEntry(name, track.title, track.duration_s))
        if self.options.writes_full:
            path = self.folder / self.names.full
            self._write_full(path)
            written.append(path)
            if not self.options.writes_tracks:
                entries.append(PlaylistEntry(self.names.full, timeline.title, timeline.total_s))
        write_playlist(self.folder / self.names.playlist, entries, timeline.artist)
        (self.folder / self.names.cover).write_bytes(self.cover)
        return tuple(written)

    def _write_full(self, path: Path) -> None:
        timeline = self.timeline
        origin_s = timeline.tracks[0].start_s
        chapters = tuple(
            Chapter(t.title, t.start_s - origin_s, t.end_s - origin_s) for t in timeline.tracks
        )
        cues = tuple(cue for t in timeline.tracks for cue in track_cues(t, origin_s))
        tags = TrackTags(
            title=timeline.title,
            artist=timeline.artist,
            # An album of its own: in a music app it would otherwise sit among the tracks as a
            # second "track 1".
            album=f"{timeline.title}{FULL_SESSION_SUFFIX}",
            track=1,
            total=1,
            year=self.year,
            comment=f"Rendered at {timeline.breath}",
            cover_png=self.cover,
            cues=cues,
            chapters=chapters,
        )
        fmt = self.options.audio_format
        if fmt == "mp3":
            pieces = [self._pieces[t.index] for t in timeline.tracks]
            info, gapless = session_info_frame(pieces)
            with open(path, "wb") as out:
                out.write(info)
                for track in timeline.tracks:
                    piece_path = self.folder / self._piece_name(track)
                    with open(piece_path, "rb") as piece:
                        shutil.copyfileobj(piece, out, 1 << 20)
                    piece_path.unlink()
            tag_mp3(path, dataclasses.replace(tags, gapless=gapless))
        else:
            raw = self.folder / _RAW_SESSION
            try:
                encode_raw_file(path, raw, self._channels, fmt, self.options.bitrate_kbps, chapters)
            finally:
                raw.unlink(missing_ok=True)
            tag_file(path, fmt, tags)
        write_lrc(path.with_suffix(".lrc"), self._lrc(timeline.title, cues, timeline.total_s))
        from ..feed import write_chapters  # here: both import this package
        from ..subtitles import write_subtitles

        write_subtitles(path, cues, length_s=timeline.total_s)
        write_chapters(path, timeline.title, timeline.artist, chapters)

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
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cover import cover_png
from .errors import ExportError
from .export import (
    DEFAULT_BITRATE_KBPS,
    DEFAULT_OUTPUT_MODE,
    FULL_SESSION_SUFFIX,
    OUTPUT_MODES,
    EncodedTrack,
    PlaylistEntry,
    check_bitrate,
    encode_track,
    full_session_mp3,
    to_pcm16,
    track_mp3,
    write_playlist,
)
from .formats import DEFAULT_FORMAT, check_format, encode_file, encode_raw_file, tag_file
from .names import safe_name, unique_name
from .synth import seconds_to_samples
from .tags import Chapter, Cue, Gapless, TrackTags, tag_mp3
from .timeline import Timeline, Track
from .transcript import lrc_text, track_cues, write_lrc

_RAW_SESSION = ".session.pcm"  # the full session's PCM for ffmpeg (formats other than MP3)


@dataclass(frozen=True)
class ExportOptions:
    """How a session is written; the defaults are the CLI's."""

    audio_format: str = DEFAULT_FORMAT
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS
    mode: str = DEFAULT_OUTPUT_MODE
    year: int | None = None  # None: the year of the render

    def check(self) -> None:
        """Raise ExportError for options that cannot be written (before any rendering)."""
        check_format(self.audio_format)
        check_bitrate(self.bitrate_kbps)
        if self.mode not in OUTPUT_MODES:
            flags = ", ".join(f"--{mode}" for mode in OUTPUT_MODES)
            raise ExportError(f"choose what to write with one of {flags} (got {self.mode!r})")

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
        self._encoded: dict[int, EncodedTrack] = {}
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

    def write_track(self, track: Track, samples: np.ndarray) -> None:
        """Encode and write one mastered track (float32, mono or frames x channels)."""
        first_sample = seconds_to_samples(track.start_s)
        name = self.names.tracks[track.index - 1]
        path = self.folder / name
        cues = track_cues(track)
        fmt = self.options.audio_format
        self._channels = 1 if samples.ndim == 1 else samples.shape[1]
        if fmt == "mp3":
            encoded = encode_track(samples, first_sample, self.options.bitrate_kbps)
            if self.options.writes_full:
                with self._lock:
                    self._encoded[track.index] = encoded
            if self.options.writes_tracks:
                path.write_bytes(track_mp3(encoded))
                tag_mp3(path, self._tags(track, cues, gapless=encoded.gapless))
        else:
            pcm = to_pcm16(samples)
            if self.options.writes_full:
                self._write_raw(pcm, first_sample)
            if self.options.writes_tracks:
                encode_file(path, pcm, fmt, self.options.bitrate_kbps)
                tag_file(path, fmt, self._tags(track, cues))
        if self.options.writes_tracks:
            write_lrc(path.with_suffix(".lrc"), self._lrc(track.title, cues, track.duration_s))

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
            encoded = [self._encoded[t.index] for t in timeline.tracks]
            data, gapless = full_session_mp3(encoded)
            path.write_bytes(data)
            tag_mp3(path, dataclasses.replace(tags, gapless=gapless))
        else:
            raw = self.folder / _RAW_SESSION
            try:
                encode_raw_file(path, raw, self._channels, fmt, self.options.bitrate_kbps, chapters)
            finally:
                raw.unlink(missing_ok=True)
            tag_file(path, fmt, tags)
        write_lrc(path.with_suffix(".lrc"), self._lrc(timeline.title, cues, timeline.total_s))

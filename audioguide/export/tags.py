"""Export stage, tags: a timeline in, what a player shows out, written into finished files.

``SessionTags`` says what each file of a session is (title, artist, album, track n/N, year,
comment, cover, the spoken cues, chapters for the full session). MP3 gets ID3v2.3 through
mutagen (the version every phone reads): the cues as lyrics (USLT, and SYLT with their
times), the gapless trim as ``iTunSMPB`` and, for the full session, chapters (CTOC + CHAP) at
the section starts. Other containers get their own (MP4 atoms, Vorbis comments, ID3 in WAV).
mutagen is imported only here, and its errors become ours here; only when a file is tagged, so
a render imports it in a worker at its first track's end, beside the other worker's encoder,
not in the serial start of every command.
"""

from __future__ import annotations

import base64
import contextlib
import io
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from ..phrases import ENGLISH
from .names import FULL_SESSION_SUFFIX

if TYPE_CHECKING:  # the timeline imports names from this package
    from mutagen.id3 import ID3

    from ..timeline import Timeline, Track

GENRE = "Meditation"
LANGUAGE = ENGLISH.tag_language  # the cues audioguide adds are in English (phrases.py)
_NO_OFFSET = 0xFFFFFFFF  # CHAP: "use the times, not byte offsets"
_CHAPTER_PREFIX = "chp"


@dataclass(frozen=True)
class Cue:
    """A spoken instruction and when it starts, in seconds from the start of its file."""

    start_s: float
    text: str


@dataclass(frozen=True)
class Chapter:
    """A section of the full-session file, in seconds from its start."""

    title: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Gapless:
    """Samples a gapless player trims at the start and end, and the samples it then plays."""

    delay_samples: int
    padding_samples: int
    sample_count: int
    sample_rate: int


@dataclass(frozen=True)
class TrackTags:
    title: str
    artist: str
    album: str
    track: int
    total: int
    year: int | None = None
    comment: str = ""
    cover_png: bytes | None = None
    cues: tuple[Cue, ...] = ()
    gapless: Gapless | None = None
    chapters: tuple[Chapter, ...] = ()


def track_cues(track: Track, origin_s: float | None = None) -> tuple[Cue, ...]:
    """The spoken cues of ``track``, timed from ``origin_s`` (default: the track's start)."""
    origin_s = track.start_s if origin_s is None else origin_s
    return tuple(
        Cue(max(0.0, event.start_s - origin_s), " ".join(event.text.split()))
        for event in track.events
        if event.kind == "say" and event.text
    )


@dataclass(frozen=True)
class SessionTags:
    """What every file of one session says about it; ``track`` and ``full`` give each file's."""

    timeline: Timeline
    year: int
    cover_png: bytes

    @property
    def comment(self) -> str:
        """The breath it was rendered at and the voice that speaks."""
        voice = f", voice {self.timeline.voice}" if self.timeline.voice else ""
        return f"Rendered at {self.timeline.breath}{voice}"

    def track(self, track: Track, gapless: Gapless | None = None) -> TrackTags:
        return TrackTags(
            title=track.title,
            artist=self.timeline.artist,
            album=self.timeline.title,
            track=track.index,
            total=len(self.timeline.tracks),
            year=self.year,
            comment=self.comment,
            cover_png=self.cover_png,
            cues=track_cues(track),
            gapless=gapless,
        )

    def full(self, gapless: Gapless | None = None) -> TrackTags:
        """The full-session file's: one chapter per track, cues timed from its start."""
        timeline = self.timeline
        origin_s = timeline.tracks[0].start_s
        return TrackTags(
            title=timeline.title,
            artist=timeline.artist,
            # An album of its own: in a music app it would otherwise sit among the tracks as a
            # second "track 1".
            album=f"{timeline.title}{FULL_SESSION_SUFFIX}",
            track=1,
            total=1,
            year=self.year,
            comment=self.comment,
            cover_png=self.cover_png,
            cues=tuple(cue for t in timeline.tracks for cue in track_cues(t, origin_s)),
            gapless=gapless,
            chapters=tuple(
                Chapter(t.title, t.start_s - origin_s, t.end_s - origin_s) for t in timeline.tracks
            ),
        )


@contextlib.contextmanager
def _mutagen_errors(path: Path) -> Iterator[None]:
    """mutagen's errors as ours. A failed write (a full disk) stays the OSError it wraps, so
    the caller reports it as it reports every other failed write."""
    from mutagen import MutagenError

    try:
        yield
    except MutagenError as exc:
        if isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise ExportError(f"{path.name}: cannot write its tags ({exc})") from None


def itunsmpb(gapless: Gapless) -> str:
    """The ``iTunSMPB`` comment Apple's and Android's players read for gapless playback."""
    fields = [0, gapless.delay_samples, gapless.padding_samples]
    text = " " + " ".join(f"{value:08X}" for value in fields)
    return text + f" {gapless.sample_count:016X}" + " 00000000" * 8


def id3_tags(tags: TrackTags) -> ID3:
    """The ID3 frames for ``tags`` (not yet written)."""
    from mutagen.id3 import (
        APIC,
        CHAP,
        COMM,
        CTOC,
        ID3,
        SYLT,
        TALB,
        TCON,
        TDRC,
        TIT2,
        TLEN,
        TPE1,
        TRCK,
        TXXX,
        USLT,
        CTOCFlags,
        Encoding,
    )

    id3 = ID3()
    utf8 = Encoding.UTF8  # mutagen writes UTF-16 instead when saving v2.3
    id3.add(TIT2(encoding=utf8, text=tags.title))
    id3.add(TPE1(encoding=utf8, text=tags.artist))
    id3.add(TALB(encoding=utf8, text=tags.album))
    id3.add(TRCK(encoding=utf8, text=f"{tags.track}/{tags.total}"))
    id3.add(TCON(encoding=utf8, text=GENRE))
    if tags.year is not None:
        id3.add(TDRC(encoding=utf8, text=str(tags.year)))  # saved as TYER in v2.3
    if tags.comment:
        id3.add(COMM(encoding=utf8, lang=LANGUAGE, desc="", text=tags.comment))
        id3.add(TXXX(encoding=utf8, desc="audioguide", text=tags.comment))
    if tags.cover_png is not None:
        id3.add(APIC(encoding=utf8, mime="image/png", type=3, desc="Cover", data=tags.cover_png))
    if tags.cues:
        id3.add(USLT(encoding=utf8, lang=LANGUAGE, desc="", text=lyrics_text(tags.cues)))
        id3.add(
            SYLT(
                encoding=utf8,
                lang=LANGUAGE,
                format=2,  # times in milliseconds
                type=1,  # lyrics
                desc="",
                text=[(cue.text, round(cue.start_s * 1000)) for cue in tags.cues],
            )
        )
    if tags.gapless is not None:
        id3.add(COMM(encoding=utf8, lang=LANGUAGE, desc="iTunSMPB", text=itunsmpb(tags.gapless)))
        # Some players show TLEN rather than decode or read the Info frame.
        length_ms = round(tags.gapless.sample_count * 1000 / tags.gapless.sample_rate)
        id3.add(TLEN(encoding=utf8, text=str(length_ms)))
    if tags.chapters:
        ids = [f"{_CHAPTER_PREFIX}{i}" for i in range(len(tags.chapters))]
        id3.add(
            CTOC(
                element_id="toc",
                flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                child_element_ids=ids,
                sub_frames=[TIT2(encoding=utf8, text=tags.album)],
            )
        )
        for element_id, chapter in zip(ids, tags.chapters, strict=True):
            id3.add(
                CHAP(
                    element_id=element_id,
                    start_time=round(chapter.start_s * 1000),
                    end_time=round(chapter.end_s * 1000),
                    start_offset=_NO_OFFSET,
                    end_offset=_NO_OFFSET,
                    sub_frames=[TIT2(encoding=utf8, text=chapter.title)],
                )
            )
    return id3


def lyrics_text(cues: Sequence[Cue]) -> str:
    return "\n".join(cue.text for cue in cues)


def id3_bytes(tags: TrackTags, audio_size: int, path: Path) -> bytes:
    """The ID3v2.3 tag for the start of an MP3 of ``audio_size`` bytes, chapters in time
    order: what mutagen writes into such a file, made in memory, so the file is written once,
    the tag first, instead of having the tag inserted before its audio (every byte moved).

    ``path`` names the file in an error message.
    """
    made = io.BytesIO()
    # mutagen's own padding for a new tag before that much audio, so the bytes are the same.
    with _mutagen_errors(path):
        id3_tags(tags).save(made, v2_version=3, padding=lambda info: 1024 + audio_size // 1000)
    tag = made.getvalue()
    return _ordered_chapters(tag, path) if tags.chapters else tag


def _ordered_chapters(tag: bytes, path: Path) -> bytes:
    """``tag`` (a whole ID3v2.3 tag) with its CHAP frames in time order, the same length.

    mutagen orders frames by its own priority and then by size, so chapters come out shuffled;
    players that list CHAP frames as found (rather than following CTOC) would show them out of
    order.
    """
    if tag[:3] != b"ID3" or tag[3] != 3 or tag[5] != 0:
        # Unsynchronised or extended tags would need more parsing; mutagen writes neither.
        raise ValueError(f"{path}: expected a plain ID3v2.3 tag")
    body = tag[10 : 10 + _syncsafe(tag[6:10])]
    frames: list[tuple[bytes, bytes]] = []
    at = 0
    while at + 10 <= len(body) and body[at : at + 4] != b"\0\0\0\0":
        frame_id = body[at : at + 4]
        (length,) = struct.unpack(">I", body[at + 4 : at + 8])
        frames.append((frame_id, body[at : at + 10 + length]))
        at += 10 + length
    chapters = [data for frame_id, data in frames if frame_id == b"CHAP"]
    chapters.sort(key=_chapter_start_ms)
    ordered = iter(chapters)
    rebuilt = b"".join(next(ordered) if fid == b"CHAP" else data for fid, data in frames)
    return tag[:10] + rebuilt + tag[10 + len(rebuilt) :]


def _chapter_start_ms(frame: bytes) -> int:
    element_end = frame.index(b"\0", 10)
    (start_ms,) = struct.unpack(">I", frame[element_end + 1 : element_end + 5])
    return int(start_ms)


def _syncsafe(data: bytes) -> int:
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]


def tag_file(path: Path, audio_format: str, tags: TrackTags) -> None:
    """Write ``tags`` the way each container holds them (MP4 atoms, Vorbis comments, ID3)."""
    with _mutagen_errors(path):
        if audio_format == "m4a":
            _tag_mp4(path, tags)
        elif audio_format in ("ogg", "flac"):
            _tag_vorbis(path, audio_format, tags)
        elif audio_format == "wav":
            _tag_wave(path, tags)
        else:
            raise ValueError(audio_format)


def _tag_wave(path: Path, tags: TrackTags) -> None:
    from mutagen.wave import WAVE

    wave = WAVE(str(path))
    wave.add_tags()
    frames: Any = wave.tags  # mutagen's stubs call it None until tags are added
    for frame in id3_tags(tags).values():
        frames.add(frame)
    wave.save(v2_version=3)


def _tag_mp4(path: Path, tags: TrackTags) -> None:
    from mutagen.mp4 import MP4, MP4Cover

    mp4 = MP4(str(path))
    mp4["\xa9nam"] = [tags.title]
    mp4["\xa9ART"] = [tags.artist]
    mp4["\xa9alb"] = [tags.album]
    mp4["trkn"] = [(tags.track, tags.total)]
    mp4["\xa9gen"] = [GENRE]
    if tags.year is not None:
        mp4["\xa9day"] = [str(tags.year)]
    if tags.comment:
        mp4["\xa9cmt"] = [tags.comment]
    if tags.cues:
        mp4["\xa9lyr"] = [lyrics_text(tags.cues)]
    if tags.cover_png is not None:
        mp4["covr"] = [MP4Cover(tags.cover_png, imageformat=MP4Cover.FORMAT_PNG)]
    mp4.save()


def _tag_vorbis(path: Path, audio_format: str, tags: TrackTags) -> None:
    from mutagen.flac import FLAC, Picture
    from mutagen.oggvorbis import OggVorbis

    audio = FLAC(str(path)) if audio_format == "flac" else OggVorbis(str(path))
    comments = {
        "TITLE": tags.title,
        "ARTIST": tags.artist,
        "ALBUM": tags.album,
        "TRACKNUMBER": str(tags.track),
        "TRACKTOTAL": str(tags.total),
        "GENRE": GENRE,
    }
    if tags.year is not None:
        comments["DATE"] = str(tags.year)
    if tags.comment:
        comments["COMMENT"] = tags.comment
    if tags.cues:
        comments["LYRICS"] = lyrics_text(tags.cues)
    # Chapters as the Vorbis comment convention players and ffmpeg read (ffmpeg reads it but
    # does not write it): CHAPTER001=00:00:00.000, CHAPTER001NAME=title.
    for number, chapter in enumerate(tags.chapters, start=1):
        comments[f"CHAPTER{number:03d}"] = _clock(chapter.start_s)
        comments[f"CHAPTER{number:03d}NAME"] = chapter.title
    for key, value in comments.items():
        audio[key] = value
    if tags.cover_png is not None:
        picture = Picture()
        picture.type = 3
        picture.mime = "image/png"
        picture.desc = "Cover"
        picture.data = tags.cover_png
        if isinstance(audio, FLAC):
            audio.clear_pictures()
            audio.add_picture(picture)
        else:
            audio["METADATA_BLOCK_PICTURE"] = base64.b64encode(picture.write()).decode("ascii")
    audio.save()


def _clock(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"

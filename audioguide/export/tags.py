"""Tags for the export stage: what a player shows, written into finished MP3 files.

ID3v2.3 through mutagen (the version every phone reads): title, artist, album, track n/N,
genre, year, a comment with the breath tempo, cover art, the spoken cues as lyrics (USLT, and
SYLT with their times), the gapless trim as ``iTunSMPB`` and, for the full session, chapters
(CTOC + CHAP) at the section starts.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

from ..phrases import ENGLISH

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


def itunsmpb(gapless: Gapless) -> str:
    """The ``iTunSMPB`` comment Apple's and Android's players read for gapless playback."""
    fields = [0, gapless.delay_samples, gapless.padding_samples]
    text = " " + " ".join(f"{value:08X}" for value in fields)
    return text + f" {gapless.sample_count:016X}" + " 00000000" * 8


def id3_tags(tags: TrackTags) -> ID3:
    """The ID3 frames for ``tags`` (not yet written)."""
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


def tag_mp3(path: Path, tags: TrackTags) -> None:
    """Write ``tags`` into the MP3 at ``path`` as ID3v2.3, chapters in time order."""
    id3_tags(tags).save(str(path), v2_version=3)
    if tags.chapters:
        _order_chapters(path)


def _order_chapters(path: Path) -> None:
    """Put the CHAP frames in time order within the tag.

    mutagen orders frames by its own priority and then by size, so chapters come out shuffled;
    players that list CHAP frames as found (rather than following CTOC) would show them out of
    order. The tag is rewritten in place with the same length.
    """
    with path.open("r+b") as file:
        header = file.read(10)
        if header[:3] != b"ID3" or header[3] != 3 or header[5] != 0:
            # Unsynchronised or extended tags would need more parsing; mutagen writes neither.
            raise ValueError(f"{path}: expected a plain ID3v2.3 tag")
        size = _syncsafe(header[6:10])
        body = file.read(size)
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
        file.seek(10)
        file.write(rebuilt)


def _chapter_start_ms(frame: bytes) -> int:
    element_end = frame.index(b"\0", 10)
    (start_ms,) = struct.unpack(">I", frame[element_end + 1 : element_end + 5])
    return int(start_ms)


def _syncsafe(data: bytes) -> int:
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]

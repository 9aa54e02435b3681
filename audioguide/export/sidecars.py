"""Export stage, sidecars: the files beside the audio, a session's tracks and cues in.

The playlist (UTF-8 ``.m3u8``, as phone players read it) and the transcripts beside each audio
file: ``.lrc`` for players that show lyrics (and people who read along), WebVTT for a browser's
``<track>`` element and SRT, the two a podcast feed's ``podcast:transcript`` offers, each written
from the same cues by ``write_transcripts``. The times are the
cue starts from the timeline, counted from the start of the file they sit beside. Beside the
full-session file, its chapters as Podcasting 2.0 JSON, which a static feed links to (feed.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .tags import Chapter, Cue

VTT_SUFFIX = ".vtt"
SRT_SUFFIX = ".srt"
CHAPTERS_SUFFIX = ".chapters.json"


def lrc_timestamp(seconds: float) -> str:
    """``[mm:ss.xx]``, minutes running past 59 for long sessions as LRC readers accept."""
    centiseconds = round(seconds * 100)
    minutes, rest = divmod(centiseconds, 6000)
    return f"[{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}]"


def lrc_text(cues: Sequence[Cue], *, title: str, artist: str, album: str, length_s: float) -> str:
    """An LRC transcript: ID tags, then one ``[mm:ss.xx]text`` line per cue."""
    minutes, seconds = divmod(round(length_s), 60)

    def one_line(text: str) -> str:
        return " ".join(text.split())

    lines = [
        f"[ti:{one_line(title)}]",
        f"[ar:{one_line(artist)}]",
        f"[al:{one_line(album)}]",
        f"[length:{minutes:02d}:{seconds:02d}]",
        "[re:audioguide]",
    ]
    lines += [f"{lrc_timestamp(cue.start_s)}{one_line(cue.text)}" for cue in cues]
    return "\n".join(lines) + "\n"


def write_lrc(path: Path, text: str) -> None:
    """UTF-8 without a BOM, LF line ends."""
    path.write_text(text, encoding="utf-8", newline="\n")


def write_transcripts(
    audio_path: Path,
    cues: Sequence[Cue],
    *,
    title: str,
    artist: str,
    album: str,
    length_s: float,
) -> None:
    """Every transcript of the audio file at ``audio_path``, beside it: the same name with
    each transcript format's extension."""
    text = lrc_text(cues, title=title, artist=artist, album=album, length_s=length_s)
    write_lrc(audio_path.with_suffix(".lrc"), text)
    write_subtitles(audio_path, cues, length_s=length_s)


@dataclass(frozen=True)
class PlaylistEntry:
    file: str
    title: str
    duration_s: float


def playlist_text(entries: Sequence[PlaylistEntry], artist: str) -> str:
    """An extended M3U playlist: ``#EXTM3U`` first, plain relative names, LF line ends."""
    lines = ["#EXTM3U"]
    for entry in entries:
        title = " ".join(f"{artist} - {entry.title}".split())  # one line, whatever the title
        lines.append(f"#EXTINF:{round(entry.duration_s)},{title}")
        lines.append(entry.file)
    return "\n".join(lines) + "\n"


def write_playlist(path: Path, entries: Sequence[PlaylistEntry], artist: str) -> None:
    """Write UTF-8 without a BOM, as phone players expect."""
    path.write_text(playlist_text(entries, artist), encoding="utf-8", newline="\n")


# WebVTT and SRT: for a browser's <track> element and a feed's podcast:transcript. A cue is
# shown from its start until the next cue starts, the last one until the end of the file.


def _cue_spans(cues: Sequence[Cue], length_s: float) -> list[tuple[int, int, str]]:
    """(start_ms, end_ms, one-line text) per cue; an end never before its start."""
    if not cues:
        return []  # a part with no speech (a bell, a pause) has an empty transcript
    starts_ms = [round(cue.start_s * 1000) for cue in cues]
    ends_ms = [*starts_ms[1:], max(round(length_s * 1000), starts_ms[-1] if starts_ms else 0)]
    return [
        (start_ms, max(start_ms, end_ms), " ".join(cue.text.split()))
        for cue, start_ms, end_ms in zip(cues, starts_ms, ends_ms, strict=True)
    ]


def _timestamp(ms: int, fraction_mark: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{fraction_mark}{millis:03d}"


def _vtt_escape(text: str) -> str:
    # "-->" is left as it is: inside a cue's text WebVTT reads it as text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_text(cues: Sequence[Cue], *, length_s: float) -> str:
    """A WebVTT file: the header, then one numbered cue per spoken instruction."""
    blocks = ["WEBVTT"]
    for number, (start_ms, end_ms, text) in enumerate(_cue_spans(cues, length_s), start=1):
        timing = f"{_timestamp(start_ms, '.')} --> {_timestamp(end_ms, '.')}"
        blocks.append(f"{number}\n{timing}\n{_vtt_escape(text)}")
    return "\n\n".join(blocks) + "\n"


def srt_text(cues: Sequence[Cue], *, length_s: float) -> str:
    """A SubRip file: numbered cues with ``hh:mm:ss,mmm`` times."""
    blocks = [
        f"{number}\n{_timestamp(start_ms, ',')} --> {_timestamp(end_ms, ',')}\n{text}"
        for number, (start_ms, end_ms, text) in enumerate(_cue_spans(cues, length_s), start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def write_subtitles(audio_path: Path, cues: Sequence[Cue], *, length_s: float) -> None:
    """Write ``.vtt`` and ``.srt`` beside ``audio_path``: UTF-8 without a BOM, LF line ends."""
    for suffix, text in (
        (VTT_SUFFIX, vtt_text(cues, length_s=length_s)),
        (SRT_SUFFIX, srt_text(cues, length_s=length_s)),
    ):
        audio_path.with_suffix(suffix).write_text(text, encoding="utf-8", newline="\n")


def chapters_json_text(title: str, artist: str, chapters: Sequence[Chapter]) -> str:
    """Podcasting 2.0 JSON chapters, times in seconds to the millisecond (as ID3 keeps them)."""
    data = {
        "version": "1.2.0",
        "title": title,
        "author": artist,
        "chapters": [
            {"startTime": round(c.start_s, 3), "endTime": round(c.end_s, 3), "title": c.title}
            for c in chapters
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def write_chapters(audio_path: Path, title: str, artist: str, chapters: Sequence[Chapter]) -> None:
    """Write ``<audio>.chapters.json`` beside ``audio_path`` (at render time, for a static
    feed): UTF-8, LF line ends."""
    text = chapters_json_text(title, artist, chapters)
    audio_path.with_suffix(CHAPTERS_SUFFIX).write_text(text, encoding="utf-8", newline="\n")

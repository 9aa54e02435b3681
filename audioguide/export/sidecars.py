"""Export stage, sidecars: the files beside the audio, a session's tracks and cues in.

The playlist (UTF-8 ``.m3u8``, as phone players read it) and the transcripts beside each audio
file: ``.lrc`` for players that show lyrics (and people who read along), and any other
transcript format, each written from the same cues by ``write_transcripts``. The times are the
cue starts from the timeline, counted from the start of the file they sit beside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .tags import Cue


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
    from ..subtitles import write_subtitles  # here: that module imports this package

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

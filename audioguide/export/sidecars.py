"""Transcripts for the export stage: a track's spoken cues in, an ``.lrc`` file out.

Players that show lyrics (and people who read along) see the instruction being spoken. The
times are the cue starts from the timeline, counted from the start of the file they sit beside.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .tags import Cue

if TYPE_CHECKING:  # the timeline imports names from this package
    from ..timeline import Track


def track_cues(track: Track, origin_s: float | None = None) -> tuple[Cue, ...]:
    """The spoken cues of ``track``, timed from ``origin_s`` (default: the track's start)."""
    origin_s = track.start_s if origin_s is None else origin_s
    return tuple(
        Cue(max(0.0, event.start_s - origin_s), " ".join(event.text.split()))
        for event in track.events
        if event.kind == "say" and event.text
    )


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

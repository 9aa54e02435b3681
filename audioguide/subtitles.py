"""Transcripts for the export stage: a file's spoken cues in, WebVTT and SRT text out.

The same cues as the ``.lrc`` beside them (transcript.py), for the players that read subtitle
formats instead: a browser's ``<track>`` element takes WebVTT, and podcast apps read either from
a feed's ``podcast:transcript``. A cue is shown from its start until the next cue starts, the
last one until the end of the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .export.tags import Cue

VTT_SUFFIX = ".vtt"
SRT_SUFFIX = ".srt"


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

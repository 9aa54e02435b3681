"""Export stage, names: a timeline in, the file names of its session folder out.

Every name is made here, once: the tracks, the full-session file, the playlist and the cover
(``session_files``), and ``plan --json`` asks for the same ones. Names that Android, iOS and
FAT32 cards all accept, made from free-form titles: no path
separators or characters FAT32 refuses, no trailing dots or spaces, short enough for every
file system (FAT32 counts 255 UTF-16 units, ext4 and APFS 255 UTF-8 bytes), and unique within
a folder even where case does not count.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..timeline import Timeline

FULL_SESSION_SUFFIX = " (full)"
MAX_NAME_CHARS = 120
MAX_NAME_BYTES = 200  # UTF-8; leaves room for " (full)", " (2)" and an extension under 255
# Control characters (C0, C1, line separators) and what FAT32, Windows or a path refuse.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029:?*"<>|\\/]+')
_RESERVED = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}  # fmt: skip


def safe_name(title: str, *, fallback: str = "untitled", max_chars: int = MAX_NAME_CHARS) -> str:
    """A file or folder name for ``title``: no path separators or characters FAT32 refuses,
    no leading or trailing dots and spaces, not a reserved DOS name, at most ``max_chars``."""
    text = unicodedata.normalize("NFC", title)
    text = _UNSAFE.sub(" ", text)
    text = " ".join(text.split())
    text = _clip_utf8(text[:max_chars], MAX_NAME_BYTES).strip(" .")
    if not text or text.upper().split(".")[0] in _RESERVED:
        text = f"{fallback} {text}".strip() if text else fallback
    return text


def _clip_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")  # never half a character


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``... before the extension, whichever is not in
    ``taken`` (compared without case, as FAT32 and iOS do). Adds the result to ``taken``."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem} ({n}){dot}{ext}"
    taken.add(candidate.casefold())
    return candidate


def slugify(title: str) -> str:
    """A lowercase ASCII slug (``back-pain``) for folder names."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:60].strip("-") or "session"


def track_filename(index: int, title: str, ext: str = "mp3", total: int = 1) -> str:
    """``01 - Welcome.mp3``: numbered so every player sorts the tracks in order, with as many
    digits as ``total`` (the session's track count) needs, and two at least."""
    digits = max(2, len(str(total)))
    return f"{index:0{digits}d} - {safe_name(title, fallback=f'Track {index}')}.{ext}"


@dataclass(frozen=True)
class SessionFiles:
    """Names (in the session folder) of what a render writes."""

    tracks: tuple[str, ...]
    full: str
    playlist: str
    cover: str


def session_files(timeline: Timeline, audio_format: str = "mp3") -> SessionFiles:
    """Safe names, unique within the folder, for a session written in ``audio_format``."""
    taken: set[str] = set()
    tracks = tuple(
        unique_name(track_filename(t.index, t.title, audio_format, len(timeline.tracks)), taken)
        for t in timeline.tracks
    )
    title = safe_name(timeline.title, fallback="Session")
    full = unique_name(f"{title}{FULL_SESSION_SUFFIX}.{audio_format}", taken)
    playlist = unique_name(f"{title}.m3u8", taken)
    # Folder art: players that ignore embedded covers (and file browsers) look for this name.
    cover = unique_name("cover.png", taken)
    return SessionFiles(tracks, full, playlist, cover)

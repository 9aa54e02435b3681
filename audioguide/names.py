"""File names that Android, iOS and FAT32 cards all accept, made from free-form titles."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r'[\x00-\x1f\x7f:?*"<>|\\/]+')
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
    text = text[:max_chars].strip(" .")
    if not text or text.upper().split(".")[0] in _RESERVED:
        text = f"{fallback} {text}".strip() if text else fallback
    return text


def slugify(title: str) -> str:
    """A lowercase ASCII slug (``back-pain``) for folder names."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:60].strip("-") or "session"


def track_filename(index: int, title: str, ext: str = "mp3") -> str:
    """``01 - Welcome.mp3``: numbered so every player sorts the tracks in order."""
    return f"{index:02d} - {safe_name(title, fallback=f'Track {index}')}.{ext}"

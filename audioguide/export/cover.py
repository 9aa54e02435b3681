"""Cover art for the export stage: a routine title in, a calm square PNG out.

Phones show the cover on the lock screen and in the player, so every file carries one: a
dusk-coloured gradient, a soft ring (an enso, drawn in one breath) and the title. Drawn with
Pillow, whose bundled font needs no system fonts. Deterministic: the same title gives the
same bytes.

Drawing it takes about 0.1 s of CPU and Pillow's import, for the same bytes every time:
``memoized_cover_png`` keeps what it drew in a memo folder (a render's is beside the speech
cache) and reads it back, never importing Pillow. A render draws it on a thread of its own
from the start (``cover_in_background``), beside the speech, so no step waits on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..speech.cache import write_atomic

COVER_SIZE_PX = 600  # players scale it; 600 px stays sharp on a phone and small in the tag
# What cover_png draws: change it with any change to the drawing, so no memo of the old one
# is used. The memo's key also holds Pillow's version, which rasterizes and compresses it.
# 2: saved without Pillow's optimize pass (28 ms of CPU for 0.8% fewer bytes).
COVER_VERSION = 2
MEMO_SUFFIX = ".cover"
_DIGEST_BYTES = 32  # a memo is the SHA-256 of its key and PNG, then the PNG
_TOP_RGB = np.array([38, 52, 84], dtype=np.float32)  # deep evening blue
_BOTTOM_RGB = np.array([196, 150, 120], dtype=np.float32)  # warm horizon
_INK_RGB = (246, 238, 226)


def cover_png(title: str, subtitle: str = "", size_px: int = COVER_SIZE_PX) -> bytes:
    """A ``size_px`` square PNG showing ``title`` (and a smaller ``subtitle``)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont  # only when a cover is drawn

    t = np.linspace(0.0, 1.0, size_px, dtype=np.float32)[:, None, None] ** 1.4
    gradient = _TOP_RGB * (1 - t) + _BOTTOM_RGB * t
    pixels = np.broadcast_to(gradient, (size_px, size_px, 3)).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")

    ring = Image.new("L", image.size, 0)
    centre, radius = size_px / 2, size_px * 0.30
    box = (centre - radius, size_px * 0.36 - radius, centre + radius, size_px * 0.36 + radius)
    # Open at the top right, as an enso brushed in one stroke.
    ImageDraw.Draw(ring).arc(box, start=-60, end=260, fill=200, width=max(2, size_px // 60))
    ring = ring.filter(ImageFilter.GaussianBlur(size_px / 300))
    image.paste(Image.new("RGB", image.size, _INK_RGB), mask=ring)

    draw = ImageDraw.Draw(image)
    title_font = ImageFont.load_default(size=size_px // 13)
    lines = textwrap.wrap(title, width=22)[:3] or [""]
    y = size_px * 0.72
    for line in lines:
        draw.text((centre, y), line, font=title_font, fill=_INK_RGB, anchor="mm")
        y += size_px / 12
    if subtitle:
        small = ImageFont.load_default(size=size_px // 26)
        draw.text((centre, size_px * 0.94), subtitle, font=small, fill=_INK_RGB, anchor="mm")
    out = io.BytesIO()
    # Pillow's optimize pass tries every compression setting: 37 ms instead of 9, in every
    # first render of a title, for 42.0 kB instead of 41.7.
    image.save(out, format="PNG")
    return out.getvalue()


def memoized_cover_png(
    title: str, subtitle: str = "", size_px: int = COVER_SIZE_PX, *, memo: Path | None
) -> bytes:
    """``cover_png(title, subtitle, size_px)``, read from the folder ``memo`` when it was drawn
    before, else drawn and kept there (None: always drawn).

    A memo that is missing, cut short, damaged or another key's is drawn again and replaced;
    one that cannot be written only costs the next render the drawing.
    """
    pillow = _pillow_version()
    if memo is None or pillow is None:
        return cover_png(title, subtitle, size_px)
    key = "\0".join((str(COVER_VERSION), pillow, str(size_px), title, subtitle))
    name = hashlib.sha256(key.encode()).hexdigest()
    path = memo / f"{name}{MEMO_SUFFIX}"
    try:
        kept = path.read_bytes()
    except OSError:
        kept = b""
    digest, png = kept[:_DIGEST_BYTES], kept[_DIGEST_BYTES:]
    if png and _digest(key, png) == digest:
        return png
    png = cover_png(title, subtitle, size_px)
    entry = _digest(key, png) + png
    write_atomic(path, lambda out: out.write(entry))
    return png


def cover_in_background(
    title: str, subtitle: str = "", size_px: int = COVER_SIZE_PX, *, memo: Path | None
) -> Future[bytes]:
    """``memoized_cover_png(title, subtitle, size_px, memo=memo)``, made on a thread of its
    own; its result (or its exception) is the future's.

    The executor's thread is joined when the interpreter exits: a render that fails or is
    interrupted meanwhile still lets it finish writing its memo (a few hundredths of a second)
    before the process ends."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cover")
    future = pool.submit(memoized_cover_png, title, subtitle, size_px, memo=memo)
    pool.shutdown(wait=False)
    return future


def _pillow_version() -> str | None:
    """The text of Pillow's version module, read without importing Pillow (which a render
    that finds its cover in the memo never needs); None where it cannot be read."""
    spec = importlib.util.find_spec("PIL")
    if spec is None or spec.origin is None:
        return None
    try:
        return Path(spec.origin).with_name("_version.py").read_text(encoding="utf-8")
    except OSError:
        return None


def _digest(key: str, png: bytes) -> bytes:
    return hashlib.sha256(key.encode() + b"\0" + png).digest()

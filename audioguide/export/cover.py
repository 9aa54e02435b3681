"""Cover art for the export stage: a routine title in, a calm square PNG out.

Phones show the cover on the lock screen and in the player, so every file carries one: a
dusk-coloured gradient, a soft ring (an enso, drawn in one breath) and the title. Drawn with
Pillow, whose bundled font needs no system fonts. Deterministic: the same title gives the
same bytes.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

COVER_SIZE_PX = 600  # players scale it; 600 px stays sharp on a phone and small in the tag
_TOP_RGB = np.array([38, 52, 84], dtype=np.float32)  # deep evening blue
_BOTTOM_RGB = np.array([196, 150, 120], dtype=np.float32)  # warm horizon
_INK_RGB = (246, 238, 226)


def cover_png(title: str, subtitle: str = "", size_px: int = COVER_SIZE_PX) -> bytes:
    """A ``size_px`` square PNG showing ``title`` (and a smaller ``subtitle``)."""
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
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()

"""The font of every picture BrainSeg writes (key images, the PDF report): :func:`caption_font`.

A scalable system font with the characters a report needs (``mm²``) when one is installed
(DejaVu Sans on Linux, Arial on Windows and macOS), else Pillow's built-in font, which has no
superscripts: :func:`square_mm` then spells the unit ``mm2`` rather than print a missing glyph.
"""

from __future__ import annotations

import functools

from PIL import ImageFont

__all__ = ["caption_font", "square_mm"]

# Found by FreeType's own search (font folders of the platform) or as given.
_CANDIDATES = (
    "DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "Arial.ttf",
    "arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.cache
def _system_font_file() -> str | None:
    for name in _CANDIDATES:
        try:
            ImageFont.truetype(name, 12)
        except OSError:
            continue
        return name
    return None


@functools.cache
def caption_font(size: int) -> Font:
    """The picture font at ``size`` pixels (a system font with ``²``, else Pillow's own)."""
    name = _system_font_file()
    return ImageFont.truetype(name, size) if name else ImageFont.load_default(size=size)


def square_mm() -> str:
    """``mm²``, or ``mm2`` when only Pillow's built-in font (no superscripts) is available."""
    return "mm²" if _system_font_file() else "mm2"

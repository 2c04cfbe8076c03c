"""Window/level and the drawing of a slice: how 8-bit MR intensities map to grey on a screen or in
an exported picture, with BrainSeg's outline.

One home for the viewer (:mod:`brainseg_app`) and the exported key images
(:mod:`brainseg_core.export`), so a picture shows what the reader saw.
"""

from __future__ import annotations

import numpy as np

from brainseg_core.io.volume import CHANNELS

__all__ = ["FULL_WINDOW", "OUTLINE_RGB", "apply_window", "auto_window", "levels", "overlay_image"]

#: Colour of BrainSeg's outline in exported pictures and reports.
OUTLINE_RGB = (255, 0, 0)

#: ``(width, level)`` of the full 8-bit range (the images as stored).
FULL_WINDOW = (255.0, 127.5)


def auto_window(pixels: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """A window that spans the foreground's ``[low, high]`` percentiles.

    Args:
        pixels: image values of any shape (e.g. one channel of a whole volume).
        low: lower percentile.
        high: upper percentile.

    Returns:
        ``(width, level)``; the full 8-bit range for an empty (all zero) image.
    """
    fg = pixels[pixels > 0]
    if fg.size == 0:
        return FULL_WINDOW
    if fg.size > 1_000_000:
        fg = fg[:: fg.size // 1_000_000 + 1]
    lo, hi = (float(v) for v in np.percentile(fg, [low, high]))
    if hi - lo < 1.0:
        hi = lo + 1.0
    return hi - lo, (hi + lo) / 2.0


def levels(width: float, level: float) -> tuple[float, float]:
    """Display range ``(black, white)`` of a window ``width`` centred at ``level``."""
    w = max(1.0, float(width))
    return level - w / 2.0, level + w / 2.0


def apply_window(pixels: np.ndarray, width: float, level: float) -> np.ndarray:
    """``pixels`` mapped to 0-255 grey through the window (clipped), as uint8."""
    black, white = levels(width, level)
    scaled = (pixels.astype(np.float32) - black) * (255.0 / (white - black))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def overlay_image(
    image: np.ndarray, mask: np.ndarray, *, window: tuple[float, float] = FULL_WINDOW, zoom: int = 1
) -> np.ndarray:
    """The FLAIR channel of a slice in grey, through ``window``, with the outline of ``mask`` in red.

    Args:
        image: ``(H, W, 3)`` uint8 slice, channels in :data:`brainseg_core.io.volume.CHANNELS` order.
        mask: ``(H, W)`` bool mask.
        window: ``(width, level)`` of the grey levels.
        zoom: whole-number enlargement (pixels repeated, never interpolated); the outline is one
            source pixel wide, so it stays visible at any zoom.

    Returns:
        ``(H * zoom, W * zoom, 3)`` uint8 RGB image.
    """
    flair = apply_window(image[..., CHANNELS.index("FLAIR")], *window)
    rgb = np.repeat(flair[..., None], 3, axis=2)
    rgb[_outline(mask)] = OUTLINE_RGB
    return np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1) if zoom > 1 else rgb

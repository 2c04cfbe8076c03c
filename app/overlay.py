"""Pure numpy helpers behind the slice view: mask fill images, outlines and window/level.

Kept free of Qt so they are fast to test. Image coordinates follow pyqtgraph's row-major
``ImageItem``: pixel ``(row, col)`` covers ``x in [col, col + 1]``, ``y in [row, row + 1]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["boundary_segments", "mask_rgba"]


def mask_rgba(mask: np.ndarray, colour: tuple[int, int, int], opacity: float) -> np.ndarray:
    """An RGBA image that paints ``mask`` in ``colour`` and is transparent elsewhere.

    Args:
        mask: ``(H, W)`` boolean mask.
        colour: ``(r, g, b)`` in 0-255.
        opacity: fill opacity in ``[0, 1]``.

    Returns:
        ``(H, W, 4)`` uint8 image.

    Raises:
        ValueError: if ``mask`` is not 2-D or ``opacity`` is outside ``[0, 1]``.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be within [0, 1], got {opacity}")
    out = np.zeros((*mask.shape, 4), np.uint8)
    m = mask.astype(bool)
    out[m, :3] = colour
    out[m, 3] = round(opacity * 255)
    return out


def boundary_segments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Line segments along the pixel edges between mask and background.

    Collinear neighbouring edges are merged, so a square of any size is 4 segments.

    Args:
        mask: ``(H, W)`` boolean mask.

    Returns:
        ``(x, y)`` float arrays of even length; points ``2k`` and ``2k + 1`` are the ends of one
        segment (the layout of ``pyqtgraph.arrayToQPath(..., connect="pairs")``).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    m = np.pad(mask.astype(bool), 1)
    # Horizontal edges: between padded rows r and r + 1, i.e. image y = r, for x in [c, c + 1].
    h_line, h_start, h_stop = _runs(m[:-1, 1:-1] != m[1:, 1:-1])  # rows of an (H + 1, W) array
    # Vertical edges: between padded cols c and c + 1, i.e. image x = c, for y in [r, r + 1].
    v_line, v_start, v_stop = _runs((m[1:-1, :-1] != m[1:-1, 1:]).T)  # rows of a (W + 1, H) array
    # one segment per run, its two ends as consecutive points: horizontal runs first, then vertical
    xs = np.concatenate([np.stack([h_start, h_stop], 1).ravel(), np.repeat(v_line, 2)])
    ys = np.concatenate([np.repeat(h_line, 2), np.stack([v_start, v_stop], 1).ravel()])
    return xs.astype(float), ys.astype(float)


def _runs(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(line, start, stop)`` arrays of every run of True along the rows of a 2-D boolean array."""
    padded = np.pad(edges, ((0, 0), (1, 1)))
    diff = np.diff(padded.astype(np.int8), axis=1)
    starts = np.argwhere(diff == 1)
    stops = np.argwhere(diff == -1)
    # argwhere is row-major, so starts and stops pair up one to one.
    return starts[:, 0], starts[:, 1], stops[:, 1]

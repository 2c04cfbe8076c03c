"""Render ``resources/icons/brainseg.svg`` to the PNG, ICO and ICNS icons (run by hand after editing the SVG).

Uses QtSvg from PySide6 (already a dependency) for the PNGs and pillow for the Windows ``.ico`` and
macOS ``.icns``; nothing extra to install. Writes into ``resources/icons/``:
``brainseg-<size>.png`` for 16, 32, 48, 64, 128, 256 and 512 px, ``brainseg.ico``, ``brainseg.icns``.

Usage::

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
PNG_SIZES = (16, 32, 48, 64, 128, 256, 512)


def render_pngs(svg: Path, out_dir: Path, sizes: tuple[int, ...] = PNG_SIZES) -> list[Path]:
    """Render ``svg`` to square PNGs ``brainseg-<size>.png`` with a transparent background.

    Args:
        svg: the SVG icon.
        out_dir: destination folder.
        sizes: edge lengths in pixels.

    Returns:
        The written PNG paths, in ``sizes`` order.

    Raises:
        ValueError: the SVG cannot be parsed.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg}: not a valid SVG file")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"brainseg-{size}.png"
        if not image.save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the PNG")
        written.append(path)
    return written


def main() -> int:
    """Regenerate every raster icon from the SVG."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image

    pngs = render_pngs(ICONS / "brainseg.svg", ICONS)
    largest = Image.open(pngs[-1])
    # Sizes rendered from the SVG are embedded as they are (crisper than pillow's downscaling).
    rendered = [Image.open(p) for p in pngs if Image.open(p).width <= 256]
    largest.save(
        ICONS / "brainseg.ico",
        sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)],
        append_images=rendered,
    )
    largest.save(ICONS / "brainseg.icns")
    for path in [*pngs, ICONS / "brainseg.ico", ICONS / "brainseg.icns"]:
        print(f"{path.relative_to(ICONS.parent.parent)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

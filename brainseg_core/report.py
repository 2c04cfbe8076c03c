"""A one-page PDF report per patient, for a reader's file (``--format report``).

The page (A4 portrait, 150 dpi) holds: the patient and analysis header (models with their
sha256 prefix, thresholds, device, date), the tumour volume and slice count, the tumour
probability across slices with the gate, up to six key images (the slices with the largest
outlines, then any review items) annotated like the exported pictures, the per-slice table of the
slices with tumour or a review flag, and the research-use notice. Drawn with Pillow and saved as
PDF by Pillow: no new dependency, no Qt in the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw

import brainseg_core
from brainseg_core.display import overlay_image
from brainseg_core.fonts import Font, caption_font, square_mm
from brainseg_core.io.volume import Volume
from brainseg_core.results import MaskSource, PatientResult
from brainseg_core.review import ReviewReason, describe_reasons, review_reasons

__all__ = ["KEY_IMAGES", "draw_orientation_markers", "key_slices", "report_page", "write_report"]

#: Most key images on the page.
KEY_IMAGES = 6
_PAGE = (1240, 1754)  # A4 at 150 dpi
_MARGIN = 60
_NOTICE = "Research use only - not for diagnosis. BrainSeg is a second reader; a radiologist decides."


def key_slices(
    result: PatientResult, reasons: Sequence[tuple[ReviewReason, ...]], limit: int = KEY_IMAGES
) -> list[int]:
    """The slices worth a picture: largest outlines first, then review items, at most ``limit``.

    Review items flagged only for where they lie (a gap or just past a tumour's end: nearly every
    patient has two) come after those flagged for what the models said about them.

    Args:
        result: the patient's result.
        reasons: each slice's review reasons (:func:`~brainseg_core.review.review_reasons`).
        limit: the most slices.
    """
    by_area = sorted((s for s in result.slices if s.area_px > 0), key=lambda s: -s.area_px)
    chosen = [s.index for s in by_area[: max(1, limit - 2)]]
    flagged = [(s.index, why) for s, why in zip(result.slices, reasons, strict=True) if why]
    flagged.sort(key=lambda item: set(item[1]) <= _WHERE_IT_LIES)  # stable: slice order within each
    chosen += [i for i, _ in flagged if i not in chosen]
    return sorted(chosen[:limit])


#: Review reasons that say where a slice lies, not what the models said about it.
_WHERE_IT_LIES = frozenset({ReviewReason.GAP, ReviewReason.TUMOUR_END})


def report_page(
    volume: Volume,
    result: PatientResult,
    *,
    window: tuple[float, float],
    reasons: Sequence[tuple[ReviewReason, ...]] | None = None,
) -> Image.Image:
    """The report page as an RGB image (see the module docstring).

    Args:
        volume: the patient.
        result: its result.
        window: ``(width, level)`` of the FLAIR grey levels in the key images.
        reasons: each slice's review reasons (default: :func:`~brainseg_core.review.review_reasons`
            of ``result`` against the volume's ground truth, as the viewer and the exports list them).

    Returns:
        A white A4 page at 150 dpi.
    """
    if reasons is None:
        reasons = review_reasons(result, truth=volume.masks)
    page = Image.new("RGB", _PAGE, "white")
    draw = ImageDraw.Draw(page)
    x, y = _MARGIN, _MARGIN
    draw.text((x, y), f"BrainSeg report: {result.patient_id}", fill="black", font=caption_font(34))
    y += 50
    models = f"segmenter {result.segmenter.name} ({result.segmenter.sha256[:12]})"
    gate_model = (
        "no slice classifier (every slice segmented)"
        if result.classifier is None
        else f"slice classifier {result.classifier.name} ({result.classifier.sha256[:12]})"
    )
    t = result.thresholds
    volume_text = (
        f"{result.volume_ml:.2f} mL ({result.volume_voxels:,} voxels)"
        if result.volume_ml is not None
        else f"{result.volume_voxels:,} voxels (pixel spacing unknown: no mL)"
    )
    steps = [
        *([t.describe_region()] if t.largest_component else []),
        *([f"faint edges >= {t.edge:g}"] if t.edge else []),
    ]
    header = [
        f"Source: {volume.source}",
        f"Analysed with {models} on {result.device}"
        + "".join(f"; averaged with {m.name} ({m.sha256[:12]})" for m in result.ensemble)
        + ("; flip test-time augmentation" if result.flip_tta else ""),
        f"and {gate_model}",
        f"Thresholds: slice gate {t.describe_gate() if result.classifier is not None else f'{t.gate:.3g}'}"
        + f", mask {t.mask:.3g}, min area {t.min_area_px} px",
        *(["Whole volume: " + ", ".join(steps)] if steps else []),
        f"Tumour on {result.tumour_slices} of {volume.n_slices} slices; volume {volume_text}",
        f"Report made {datetime.now(UTC).isoformat(timespec='minutes')} "
        f"by BrainSeg {brainseg_core.__version__}",
    ]
    small = caption_font(20)
    for line in header:
        draw.text((x, y), line, fill="black", font=small)
        y += 28
    y += 10
    y = _draw_plot(draw, result, (x, y, _PAGE[0] - _MARGIN, y + 230)) + 20
    y = _draw_key_images(page, draw, volume, result, window, reasons, y) + 10
    y = _draw_table(draw, volume, result, reasons, x, y)
    draw.text((x, _PAGE[1] - _MARGIN), _NOTICE, fill=(160, 0, 0), font=small)
    return page


def _draw_plot(draw: ImageDraw.ImageDraw, result: PatientResult, box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    font = caption_font(18)
    draw.text(
        (x0, y0),
        "Tumour probability per slice (dots: red = outlined; dashed line: the gate)",
        fill="black",
        font=font,
    )
    top, bottom, left = y0 + 30, y1 - 25, x0 + 40
    draw.rectangle((left, top, x1, bottom), outline=(120, 120, 120))
    n = max(1, len(result.slices))

    def px(i: int, p: float) -> tuple[float, float]:
        return left + (i + 0.5) * (x1 - left) / n, bottom - p * (bottom - top)

    gate = result.thresholds.gate if result.classifier is not None else None
    if gate is not None:
        gy = px(0, gate)[1]
        for gx in range(left, x1, 12):
            draw.line((gx, gy, min(gx + 6, x1), gy), fill=(200, 120, 0), width=2)
    points = [px(s.index, s.tumour_probability) for s in result.slices]
    if len(points) > 1:
        draw.line(points, fill=(90, 90, 90), width=2)
    for s, (cx, cy) in zip(result.slices, points, strict=True):
        colour = (220, 30, 30) if s.area_px > 0 else (150, 150, 150)
        draw.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), fill=colour)
    for value in (0.0, 0.5, 1.0):
        draw.text((x0, px(0, value)[1] - 9), f"{value:.1f}", fill="black", font=caption_font(14))
    draw.text((left, bottom + 4), f"slices 1 to {n}", fill="black", font=caption_font(14))
    return y1


def draw_orientation_markers(
    draw: ImageDraw.ImageDraw, edge_labels: dict[str, str], box: tuple[int, int, int, int], size: int
) -> None:
    """Write R/L/A/P (``edge_labels``, see :attr:`Geometry.edge_labels`) at the middle of each
    edge of the picture in ``box`` = ``(left, top, width, height)``, as a workstation does."""
    x, y, w, h = box
    font = caption_font(size)
    places: dict[str, tuple[float, float]] = {
        "left": (x + 6, y + h / 2),
        "right": (x + w - 6, y + h / 2),
        "top": (x + w / 2, y + 6),
        "bottom": (x + w / 2, y + h - 6),
    }
    anchors = {"left": "lm", "right": "rm", "top": "mt", "bottom": "mb"}
    for where, text in edge_labels.items():
        draw.text(places[where], text, fill=(240, 230, 140), font=font, anchor=anchors[where])


def _draw_key_images(
    page: Image.Image,
    draw: ImageDraw.ImageDraw,
    volume: Volume,
    result: PatientResult,
    window: tuple[float, float],
    reasons: Sequence[tuple[ReviewReason, ...]],
    y: int,
) -> int:
    chosen = key_slices(result, reasons)
    if not chosen:
        draw.text((_MARGIN, y), "No slice has a tumour outline.", fill="black", font=caption_font(20))
        return y + 40
    cols = 3
    cell = (_PAGE[0] - 2 * _MARGIN - (cols - 1) * 16) // cols
    font = caption_font(16)
    for k, index in enumerate(chosen):
        s = result.slices[index]
        picture = overlay_image(volume.images[index], s.mask, window=window)
        tile = Image.fromarray(picture).resize((cell, cell), Image.Resampling.NEAREST)
        cx = _MARGIN + (k % cols) * (cell + 16)
        cy = y + (k // cols) * (cell + 48)
        page.paste(tile, (cx, cy))
        if volume.geometry is not None:
            draw_orientation_markers(draw, volume.geometry.edge_labels, (cx, cy, cell, cell), 18)
        area = f"{s.area_px} px" + ("" if s.area_mm2 is None else f" = {s.area_mm2:.0f} {square_mm()}")
        caption = f"slice {volume.slice_numbers[index]}: {area}"
        draw.text((cx, cy + cell + 4), _fit(draw, caption, font, cell), fill="black", font=font)
        # whose outline, and why to review it, in a few words on a line of their own (the table and
        # the CSV say it in full)
        notes = ["reader's mask"] if s.source is MaskSource.READER else []
        if reasons[index]:
            notes.append("review: " + ", ".join(r.label() for r in reasons[index]))
        if notes:
            line = _fit_words(draw, notes, font, cell)
            draw.text((cx, cy + cell + 24), line, fill=(190, 90, 0) if reasons[index] else "black", font=font)
    rows = (len(chosen) + cols - 1) // cols
    draw.text(
        (_MARGIN, y + rows * (cell + 48)),
        f"FLAIR at W {window[0]:.0f} L {window[1]:.0f}; red: BrainSeg's outline",
        fill=(90, 90, 90),
        font=font,
    )
    return y + rows * (cell + 48) + 28


def _draw_table(
    draw: ImageDraw.ImageDraw,
    volume: Volume,
    result: PatientResult,
    reasons: Sequence[tuple[ReviewReason, ...]],
    x: int,
    y: int,
) -> int:
    font = caption_font(17)
    rows = [s for s, why in zip(result.slices, reasons, strict=True) if s.area_px > 0 or why]
    draw.text((x, y), f"slice   P(tumour)   area px   area {square_mm()}   review", fill="black", font=font)
    y += 26
    limit = (_PAGE[1] - _MARGIN - 40 - y) // 22
    for s in rows[: max(0, limit)]:
        mm2 = "" if s.area_mm2 is None else f"{s.area_mm2:.1f}"
        review = describe_reasons(reasons[s.index])
        if s.source is MaskSource.READER:
            review = "reader's mask" + (f"; {review}" if review else "")
        number = volume.slice_numbers[s.index]
        line = f"{number:>5}   {s.tumour_probability:9.3f}   {s.area_px:>7}   {mm2:>8}   {review}"
        draw.text((x, y), _fit(draw, line, font, _PAGE[0] - _MARGIN - x), fill="black", font=font)
        y += 22
    if len(rows) > limit:
        draw.text((x, y), f"... {len(rows) - limit} more slices in the CSV report", fill="black", font=font)
        y += 22
    return y


def _fit_words(draw: ImageDraw.ImageDraw, notes: Sequence[str], font: Font, width: int) -> str:
    """``notes`` joined with ``"; "``, the last labels (comma-separated) dropped whole, with a
    ``+N`` count, where the line would run past ``width`` pixels."""
    text = "; ".join(notes)
    words = text.split(", ")
    dropped = 0
    while len(words) > 1 and draw.textlength(text, font=font) > width:
        words.pop()
        dropped += 1
        text = ", ".join(words) + f" +{dropped}"
    return _fit(draw, text, font, width)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """``text``, cut with an ellipsis where it would run past ``width`` pixels (the CSV has it whole)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip(" ;,") + "..."


def write_report(
    path: Path,
    volume: Volume,
    result: PatientResult,
    *,
    window: tuple[float, float],
    reasons: Sequence[tuple[ReviewReason, ...]] | None = None,
) -> None:
    """Write the report page of ``volume`` as a one-page PDF at ``path`` (arguments: :func:`report_page`).

    Raises:
        OSError: when the file cannot be written.
    """
    report_page(volume, result, window=window, reasons=reasons).save(path, format="PDF", resolution=150.0)

"""Writing a patient's predicted masks, overlays and report to disk.

:func:`export_results` writes into ``out_dir/<patient_id>/``:

- ``tif``: ``<patient>_<n>_mask.tif`` per slice, uint8 0/255 single-page greyscale TIFF (the LGG
  dataset's own mask convention), ``n`` = the slice number from the source file name;
- ``stack``: ``<patient>_mask_stack.tif``, the same masks as one N-page uint8 0/255 TIFF;
- ``png``: key images for a report, ``<patient>_<n>_overlay.png`` for every slice with a tumour
  outline or a review flag: the FLAIR channel at the window the reader used (or its foreground's
  1-99.5 % window), enlarged to at least 512 px, the outline in red, and a caption with the patient,
  slice, channel, window, area, volume, models, a legend and the research-use notice;
- ``png-all``: the same picture for every slice;
- ``csv``: ``<patient>_report.csv`` (one row per slice: slice number, tumour probability,
  whether the slice passed the gate and was read by the segmenter, whether it has tumour, area in
  px and mm², ``review``: the slice's review reasons, ``;``-separated, exactly those the viewer's
  review queue lists (:func:`~brainseg_core.review.review_reasons` of the result against the
  folder's ground truth when it has one), and ``mask_source``: ``model`` or
  ``reader`` where the reader edited the mask, see :mod:`brainseg_core.edits`) and
  ``<patient>_summary.csv`` (``key,value`` rows: tumour slices, volume, thresholds, models,
  device), two plain tables that open cleanly in a spreadsheet;
- ``report``: ``<patient>_report.pdf``, a one-page report (:mod:`brainseg_core.report`);
- ``nifti``: ``<patient>_mask.nii.gz``, uint8 0/1 with exactly the reference volume's shape and
  affine (the FLAIR file for NIfTI input, the FLAIR series' geometry for DICOM input), so it
  overlays the source in Slicer or ITK-SNAP without registration; for TIFF input, the slices
  stored in RAS order with a diagonal affine of the voxel size used (1 mm where unknown);
- ``dicom-seg``: ``<patient>_seg.dcm``, a binary DICOM Segmentation (one segment, "Tumor")
  referencing the source FLAIR series (DICOM input only; :mod:`brainseg_core.dicom_seg`);
- always ``brainseg_export.json``: the model bundles (name, sha256), every threshold that shaped
  the masks (gate, mask probability, minimum area, largest region), the voxel size used for areas
  and volumes, the geometry (source affine, display axes) and the file each channel came from,
  whose mask each slice carries (``mask_sources``: the model's or the reader's), device,
  BrainSeg version, UTC time and the files written.

Every format writes the final masks: the reader's on edited slices, the model's elsewhere.
:func:`export_training_data` writes a corrected patient in the dataset's own layout
(``<patient>_<n>.tif`` copies of the slices and ``<patient>_<n>_mask.tif`` 0/255 masks, plus
``brainseg_corrections.json``) for ``brainseg-train``, under the same guards.

Safety: every file is written atomically into a hidden staging folder beside the destination,
which replaces the destination only when everything succeeded, so a cancelled or failed export
leaves nothing half-written. An existing export is replaced only with ``overwrite=True``, a folder
that is not a BrainSeg export is never replaced, and nothing is ever written into a folder that
holds the volume's source images or masks. While a patient is exported into a folder, an exclusive
lock (``out_dir/.<patient>.lock``) makes a second writer of the same patient there fail at once
instead of silently replacing the first one's files; holding that lock, the exporter also removes
staging folders that a killed export of the patient left behind. A full disk is said plainly.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import errno
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from PIL import Image, ImageDraw

import brainseg_core
from brainseg_core.atomic import atomic_write
from brainseg_core.display import auto_window, overlay_image
from brainseg_core.errors import Cancelled, ExportError
from brainseg_core.fonts import caption_font, square_mm
from brainseg_core.io.lgg import EXPORT_SIDECAR
from brainseg_core.io.volume import CHANNELS, PatientFormat, Volume
from brainseg_core.progress import CancelArg, cancel_checker
from brainseg_core.report import draw_orientation_markers, write_report
from brainseg_core.results import MaskSource
from brainseg_core.review import ReviewReason, describe_reasons, review_reasons
from brainseg_core.thorough import describe_run

if TYPE_CHECKING:
    from brainseg_core.geometry import Geometry
    from brainseg_core.results import PatientResult

__all__ = [
    "CORRECTIONS_SIDECAR",
    "FORMATS",
    "SIDECAR_NAME",
    "ExportFormat",
    "check_destination",
    "check_export_folder",
    "check_formats",
    "export_results",
    "export_training_data",
    "key_image",
    "models_line",
]


class ExportFormat(enum.StrEnum):
    """What an export writes (see the module docstring); members in the order they are written."""

    TIF = "tif"
    STACK = "stack"
    PNG = "png"
    PNG_ALL = "png-all"
    CSV = "csv"
    REPORT = "report"
    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"

    @property
    def label(self) -> str:
        """A short name for menus and dialogs."""
        return _FORMAT_TEXT[self][0]

    @property
    def description(self) -> str:
        """One sentence on what the format writes (tooltips, help)."""
        return _FORMAT_TEXT[self][1]


_FORMAT_TEXT = {
    ExportFormat.TIF: (
        "Per-slice masks (_mask.tif)",
        "One 0/255 mask TIFF per slice, named like the dataset's own",
    ),
    ExportFormat.STACK: ("Mask stack (multi-page TIFF)", "All masks of a patient in one multi-page TIFF"),
    ExportFormat.PNG: (
        "Key images (PNG)",
        "Annotated pictures of the slices with tumour or a review flag, as viewed, for reports",
    ),
    ExportFormat.PNG_ALL: ("Every slice as a picture (PNG)", "The annotated picture of every slice"),
    ExportFormat.CSV: ("CSV report", "Per-slice tumour probability and area, plus the patient summary"),
    ExportFormat.REPORT: (
        "PDF report (one page)",
        "Header, volume, probability across slices, key images and the slices with tumour, for a file",
    ),
    ExportFormat.NIFTI: (
        "Mask volume (NIfTI)",
        "The mask as .nii.gz on the source scan's grid, for Slicer, ITK-SNAP and research pipelines",
    ),
    ExportFormat.DICOM_SEG: (
        "DICOM SEG",
        "A DICOM Segmentation referencing the FLAIR series, for PACS and DICOM viewers (DICOM input)",
    ),
}

#: Every export format, in the order they are written.
FORMATS: tuple[ExportFormat, ...] = tuple(ExportFormat)
#: What an export writes when no format is named.
DEFAULT_FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat.TIF,
    ExportFormat.STACK,
    ExportFormat.PNG,
    ExportFormat.CSV,
)
#: The shorter side of an exported picture is enlarged to at least this (whole-number zoom).
KEY_IMAGE_MIN_SIDE = 512
#: Printed on every exported picture.
RESEARCH_NOTICE = "Research use only - not for diagnosis. Red: BrainSeg's tumour outline."
SIDECAR_NAME = EXPORT_SIDECAR
#: Version 2: ``summary.slices_to_review`` lists every review reason of a slice (``reasons``).
SIDECAR_FORMAT = "brainseg-export/2"
#: The record a training-data folder of corrections carries (also its overwrite marker).
CORRECTIONS_SIDECAR = "brainseg_corrections.json"
CORRECTIONS_FORMAT = "brainseg-corrections/1"


def check_formats(formats: Iterable[str] | str) -> tuple[ExportFormat, ...]:
    """Validate export format names (a sequence or a comma-separated string).

    Returns:
        The chosen formats in :data:`FORMATS` order, without duplicates.

    Raises:
        ValueError: for an unknown name or an empty choice.
    """
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    chosen = [f.strip().lower() for f in formats]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown or not chosen:
        raise ValueError(
            f"unknown export format(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(FORMATS)}"
        )
    return tuple(f for f in FORMATS if f.value in chosen)


def _check_result(volume: Volume, result: PatientResult) -> None:
    if result.patient_id != volume.patient_id or len(result.slices) != volume.n_slices:
        raise ExportError(
            f"the result of {result.patient_id} ({len(result.slices)} slices) does not belong to "
            f"volume {volume.patient_id} ({volume.n_slices} slices)"
        )
    bad = [s.index for s in result.slices if s.mask.shape != volume.shape]
    if bad:
        raise ExportError(
            f"{volume.patient_id}: masks of slices {bad} are not {volume.shape} like the images"
        )
    pid = volume.patient_id
    if not pid or pid in (".", "..") or any(c in pid for c in "/\\:\0"):
        raise ExportError(f"patient id {pid!r} cannot be used as a folder name")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_not_source(patient_id: str, source: Path, slice_paths: Iterable[Path], dest: Path) -> None:
    """Refuse a destination inside a folder that holds source files, or one that contains them."""
    source = source.resolve()
    sources = {p.resolve() for p in slice_paths} | {source}
    source_dirs = {p.parent for p in sources if p != source} | {source if source.is_dir() else source.parent}
    for folder in sorted(source_dirs):
        if _is_within(dest, folder):
            where = "is the folder" if dest == folder else f"is inside {folder}, the folder"
            raise ExportError(
                f"{dest}: {where} holding the source images of {patient_id}; choose an "
                "output folder outside the data folders (sources are never overwritten)"
            )
    for src in sorted(sources):
        if _is_within(src, dest):
            raise ExportError(
                f"{dest}: contains the source {src} of {patient_id}; choose another output folder"
            )


def models_line(result: PatientResult) -> str:
    """What a key image's caption says made ``result``: the segmenter and gate, and in thorough
    mode what was averaged in (e.g. ``"models: seg + gate (thorough: averaged with seg-seed1)"``)."""
    models = result.segmenter.name + ("" if result.classifier is None else f" + {result.classifier.name}")
    run = describe_run(result.flip_tta, result.ensemble)
    return f"models: {models}" + (f" (thorough: {run})" if run else "")


def key_image(
    volume: Volume,
    result: PatientResult,
    index: int,
    *,
    window: tuple[float, float],
    reasons: Sequence[ReviewReason] = (),
) -> np.ndarray:
    """The annotated picture of slice ``index`` for a report (see the module docstring).

    Args:
        volume: the patient.
        result: its result.
        index: the slice.
        window: ``(width, level)`` of the FLAIR grey levels (the reader's, or automatic).
        reasons: the slice's review reasons (:func:`~brainseg_core.review.review_reasons`).

    Returns:
        ``(H', W', 3)`` uint8 RGB: the enlarged slice above a caption band.
    """
    s = result.slices[index]
    zoom = max(1, -(-KEY_IMAGE_MIN_SIDE // min(volume.shape)))
    picture = overlay_image(volume.images[index], s.mask, window=window, zoom=zoom)
    area = f"{s.area_px} px" + ("" if s.area_mm2 is None else f" = {s.area_mm2:.1f} {square_mm()}")
    volume_text = (
        f"{result.volume_ml:.2f} mL" if result.volume_ml is not None else f"{result.volume_voxels} voxels"
    )
    lines = [
        f"{result.patient_id}   slice {volume.slice_numbers[index]} ({index + 1} of {volume.n_slices})   "
        f"FLAIR   W {window[0]:.0f} L {window[1]:.0f}",
        f"tumour area on this slice {area}; patient tumour volume {volume_text}"
        + (f"; REVIEW: {describe_reasons(reasons)}" if reasons else "")
        + ("; outline edited by the reader" if s.source is MaskSource.READER else ""),
        models_line(result),
        RESEARCH_NOTICE,
    ]
    size = max(12, picture.shape[1] // 40)
    font = caption_font(size)
    line_height = int(size * 1.35) + 2
    canvas = Image.new("RGB", (picture.shape[1], picture.shape[0] + line_height * len(lines) + 8), "black")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if volume.geometry is not None:  # orientation markers, as on the screen (TIFFs carry none)
        h, w = picture.shape[:2]
        draw_orientation_markers(draw, volume.geometry.edge_labels, (0, 0, w, h), max(14, w // 28))
    for k, line in enumerate(lines):
        draw.text((6, picture.shape[0] + 4 + k * line_height), line, fill=(230, 230, 230), font=font)
    return np.asarray(canvas)


def _write_tiff(data: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, photometric="minisblack")

    return write


def _write_stack(stack: np.ndarray) -> Callable[[Path], None]:
    """One page per slice, whatever the slice shape (tifffile would read a width of 1, 3 or 4 as
    colour samples of one page if the stack were written as one array)."""

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp) as tw:
            for page in stack:
                tw.write(page, photometric="minisblack", planarconfig="contig", metadata=None)

    return write


def _write_key_image(
    volume: Volume,
    result: PatientResult,
    index: int,
    window: tuple[float, float],
    reasons: Sequence[ReviewReason],
) -> Callable[[Path], None]:
    # drawn when written, not when the list of files is made
    return lambda tmp: Image.fromarray(key_image(volume, result, index, window=window, reasons=reasons)).save(
        tmp, format="PNG"
    )


def _write_csv(rows: Sequence[Sequence[object]]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)

    return write


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _report_rows(
    volume: Volume, result: PatientResult, reasons: Sequence[tuple[ReviewReason, ...]]
) -> list[list[object]]:
    classified = result.classifier is not None
    rows: list[list[object]] = [
        [
            "slice_number",
            "tumour_probability",
            "segmenter_read",
            "tumour",
            "area_px",
            "area_mm2",
            "review",
            "mask_source",
        ]
    ]
    for number, s, why in zip(volume.slice_numbers, result.slices, reasons, strict=True):
        prob = _fmt(s.tumour_probability, 4) if classified else ""  # blank when no classifier ran
        review = ";".join(r.value for r in why)
        row = [
            number,
            prob,
            _csv_value(s.segmented),
            _csv_value(s.area_px > 0),
            s.area_px,
            _fmt(s.area_mm2, 2),
        ]
        rows.append([*row, review, s.source.value])
    return rows


def _csv_value(value: object) -> object:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else value


def _geometry(volume: Volume, result: PatientResult) -> Geometry:
    """The volume's geometry, or for TIFF input the display grid with the spacing used."""
    from brainseg_core.geometry import Geometry

    if volume.geometry is not None:
        return volume.geometry
    n, (h, w) = volume.n_slices, volume.shape
    return Geometry.for_display((n, h, w), result.spacing)


def _mask_volume(result: PatientResult) -> np.ndarray:
    return np.stack([s.mask for s in result.slices]).astype(bool)


def _write_nifti(volume: Volume, result: PatientResult) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        import gzip

        import nibabel as nib

        geometry = _geometry(volume, result)
        data = geometry.to_source(_mask_volume(result)).astype(np.uint8)
        img = nib.Nifti1Image(data, geometry.source_affine)
        img.set_sform(geometry.source_affine, code=1)  # scanner coordinates, as the source
        img.set_qform(geometry.source_affine, code=1)
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = b"BrainSeg tumour mask (research use)"
        # nibabel picks compression from the file name; the staging name is not .nii.gz
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6))

    return write


def _write_dicom_seg(volume: Volume, result: PatientResult) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        from brainseg_core.dicom_seg import write_dicom_seg

        # the segmenter drew the masks (with thorough mode's, "+N": the models averaged with it);
        # DICOM limits both names to 64 characters (LO)
        name = result.segmenter.name if result.segmenter is not None else "BrainSeg"
        if result.ensemble:
            name = f"{name[: 64 - 3]}+{len(result.ensemble)}"
        write_dicom_seg(
            volume,
            _mask_volume(result),
            tmp,
            algorithm=name[:64],
            algorithm_version=f"BrainSeg {brainseg_core.__version__}"[:64],
        )

    return write


def _summary_rows(
    volume: Volume, result: PatientResult, reasons: Sequence[tuple[ReviewReason, ...]]
) -> list[list[object]]:
    from brainseg_core.geometry import DISPLAY_AXCODES

    spacing = result.spacing
    geometry = _geometry(volume, result)
    sources: list[list[object]] = [
        [f"{name}_source", src] for name, src in zip(CHANNELS, volume.channel_sources, strict=False)
    ]
    rows: list[list[object]] = [
        ["key", "value"],
        ["patient_id", result.patient_id],
        ["slices", volume.n_slices],
        ["tumour_slices", result.tumour_slices],
        ["tumour_volume_voxels", result.volume_voxels],
        ["tumour_volume_ml", _fmt(result.volume_ml, 3)],
        *([key, _csv_value(value)] for key, value in result.thresholds.to_json().items()),
        ["row_spacing_mm", _csv_value(spacing and spacing.row_mm)],
        ["col_spacing_mm", _csv_value(spacing and spacing.col_mm)],
        ["slice_thickness_mm", _csv_value(spacing and spacing.thickness_mm)],
        ["geometry", geometry.description],
        ["display_axes", "".join(DISPLAY_AXCODES)],
        ["source_affine_ras_mm", json.dumps(geometry.to_json()["source_affine_ras_mm"])],
        *sources,
        ["slices_to_review", sum(1 for why in reasons if why)],
        ["reader_edited_slices", sum(1 for s in result.slices if s.source is MaskSource.READER)],
    ]
    for kind, ref in (("classifier", result.classifier), ("segmenter", result.segmenter)):
        rows += [
            [f"{kind}_name", "" if ref is None else ref.name],
            [f"{kind}_sha256", "" if ref is None else ref.sha256],
        ]
    for i, ref in enumerate(result.ensemble, start=2):  # thorough mode: the models averaged in
        rows += [[f"segmenter{i}_name", ref.name], [f"segmenter{i}_sha256", ref.sha256]]
    rows.append(["flip_tta", _csv_value(result.flip_tta)])
    rows.append(["device", result.device])
    return rows


def _sidecar(
    volume: Volume,
    result: PatientResult,
    formats: tuple[ExportFormat, ...],
    files: list[str],
    window: tuple[float, float],
    reasons: Sequence[tuple[ReviewReason, ...]],
) -> str:
    data = {
        "format": SIDECAR_FORMAT,
        "patient_id": result.patient_id,
        "source": str(volume.source),
        "slices": volume.n_slices,
        "software_version": brainseg_core.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": result.device,
        "models": result.models_json(),
        "thresholds": result.thresholds.to_json(),
        "spacing_mm": None if result.spacing is None else result.spacing.to_list(),
        "flip_tta": result.flip_tta,
        "geometry": _geometry(volume, result).to_json(),
        "channel_sources": dict(zip(CHANNELS, volume.channel_sources, strict=False)),
        "picture_window": list(window),
        "mask_sources": _mask_sources(volume, result),
        "summary": {
            "slices_to_review": [
                {"slice": n, "reasons": [r.value for r in why]}
                for n, why in zip(volume.slice_numbers, reasons, strict=True)
                if why
            ],
            "tumour_slices": result.tumour_slices,
            "volume_voxels": result.volume_voxels,
            "volume_ml": result.volume_ml,
        },
        "formats": [f.value for f in formats],
        "files": files,
    }
    return json.dumps(data, indent=2) + "\n"


def _mask_sources(volume: Volume, result: PatientResult) -> list[dict[str, object]]:
    """Per slice (by slice number): whose mask it is, ``model`` or ``reader``."""
    return [
        {"slice": n, "source": s.source.value}
        for n, s in zip(volume.slice_numbers, result.slices, strict=True)
    ]


def _jobs(
    volume: Volume,
    result: PatientResult,
    formats: tuple[ExportFormat, ...],
    window: tuple[float, float],
    reasons: Sequence[tuple[ReviewReason, ...]],
) -> list[tuple[str, Callable[[Path], None]]]:
    pid = volume.patient_id
    masks = [np.where(s.mask, np.uint8(255), np.uint8(0)) for s in result.slices]
    jobs: list[tuple[str, Callable[[Path], None]]] = []
    if ExportFormat.TIF in formats:
        jobs += [
            (f"{pid}_{n}_mask.tif", _write_tiff(m)) for n, m in zip(volume.slice_numbers, masks, strict=True)
        ]
    if ExportFormat.STACK in formats:
        stack = np.stack(masks) if masks else np.zeros((0, *volume.shape), np.uint8)
        jobs.append((f"{pid}_mask_stack.tif", _write_stack(stack)))
    if ExportFormat.PNG in formats or ExportFormat.PNG_ALL in formats:
        every = ExportFormat.PNG_ALL in formats
        jobs += [
            (f"{pid}_{n}_overlay.png", _write_key_image(volume, result, s.index, window, why))
            for n, s, why in zip(volume.slice_numbers, result.slices, reasons, strict=True)
            if every or s.area_px > 0 or why
        ]
    if ExportFormat.REPORT in formats:
        jobs.append(
            (
                f"{pid}_report.pdf",
                lambda tmp: write_report(tmp, volume, result, window=window, reasons=reasons),
            )
        )
    if ExportFormat.CSV in formats:
        jobs.append((f"{pid}_report.csv", _write_csv(_report_rows(volume, result, reasons))))
        jobs.append((f"{pid}_summary.csv", _write_csv(_summary_rows(volume, result, reasons))))
    if ExportFormat.NIFTI in formats:
        jobs.append((f"{pid}_mask.nii.gz", _write_nifti(volume, result)))
    if ExportFormat.DICOM_SEG in formats:
        if volume.format is not PatientFormat.DICOM:
            raise ExportError(
                f"{pid}: a DICOM SEG references the source DICOM series, and this patient was not "
                "read from DICOM; export it as NIfTI (nifti) instead"
            )
        jobs.append((f"{pid}_seg.dcm", _write_dicom_seg(volume, result)))
    names = [name for name, _ in jobs]
    if len(set(names)) != len(names):
        raise ExportError(f"{pid}: two slices share a slice number; cannot name their files uniquely")
    return jobs


@contextlib.contextmanager
def exclusive_lock(path: Path, *, holder: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``path`` (created) for the ``with`` block.

    Args:
        path: the lock file.
        holder: what the lock protects, for the error message.

    Raises:
        ExportError: when another process (or thread) holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            if sys.platform == "win32":  # pragma: no cover - Windows
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ExportError(
                f"{path.parent}: another export of {holder} into this folder is running; wait for it "
                "to finish or choose another output folder"
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


def _remove_stale_staging(out_dir: Path, patient_id: str) -> None:
    """Staging and swap-out folders of ``patient_id`` left by a killed export (caller holds the lock)."""
    for pattern in (f".{patient_id}.*.partial", f".{patient_id}.old-*"):
        for stale in out_dir.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


def _write_problem(exc: BaseException, folder: Path) -> str:
    """The reason to report for a failed write: a full disk in plain words."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    with contextlib.suppress(OSError):
        full = full or shutil.disk_usage(folder).free < (1 << 20)
    if full:
        return "the disk is full (no space left on the device); free some space or choose another folder"
    return str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)


def _swap_into_place(staging: Path, dest: Path) -> None:
    """Move the finished staging folder to ``dest``, replacing an old export there."""
    if not dest.exists():
        os.replace(staging, dest)
        return
    if not any(dest.iterdir()):
        dest.rmdir()
        os.replace(staging, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dest, old)
    try:
        os.replace(staging, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_destination(volume: Volume, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Check that ``volume``'s export may be written into ``out_dir`` (no file is written).

    :func:`export_results` runs this check itself; front ends call it before a long analysis so
    that a refused destination is reported at once.

    Args:
        volume: the volume to export.
        out_dir: folder that would receive ``<patient_id>/``.
        overwrite: whether an existing export may be replaced.

    Returns:
        The destination folder ``out_dir/<patient_id>`` (absolute).

    Raises:
        ExportError: the destination is in (or contains) a source folder of the volume, an export
            already exists and ``overwrite`` is False, or the destination is not a BrainSeg export
            folder or not a folder at all.
    """
    return check_export_folder(
        volume.patient_id, volume.source, out_dir, slice_paths=volume.slice_paths, overwrite=overwrite
    )


def check_export_folder(
    patient_id: str,
    source: Path,
    out_dir: str | Path,
    *,
    slice_paths: Iterable[Path] = (),
    overwrite: bool = False,
    marker: str = SIDECAR_NAME,
) -> Path:
    """:func:`check_destination` for a patient known by its source path (no volume read).

    Args:
        patient_id: the patient's id (the export's folder name).
        source: the patient folder or stack file.
        out_dir: folder that would receive ``<patient_id>/``.
        slice_paths: the slice files when they may lie outside ``source`` (links).
        overwrite: whether an existing export may be replaced.
        marker: the file that makes an existing folder one BrainSeg may replace (the export
            sidecar; :data:`CORRECTIONS_SIDECAR` for training data).

    Returns:
        The destination folder ``out_dir/<patient_id>`` (absolute).

    Raises:
        ExportError: as :func:`check_destination`.
    """
    out_dir = Path(out_dir)
    dest = out_dir.resolve() / patient_id
    _check_not_source(patient_id, Path(source), slice_paths, dest.resolve())  # dest may be a link
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder; choose an output folder")
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest}: exists and is not a folder; remove it or choose another output folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise ExportError(
                f"{dest}: an export of {patient_id} already exists; allow overwriting "
                "(--overwrite) to replace it, or choose another output folder"
            )
        if not (dest / marker).is_file():
            raise ExportError(
                f"{dest}: exists and is not a BrainSeg export folder (no {marker}); it is left "
                "alone, choose another output folder"
            )
    return dest


def export_results(
    volume: Volume,
    result: PatientResult,
    out_dir: str | Path,
    *,
    formats: Iterable[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    window: tuple[float, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelArg = None,
) -> list[Path]:
    """Write the masks, overlays and report of one patient (see the module docstring).

    Args:
        volume: the analysed volume (gives the slice numbers, images and source paths).
        result: its :class:`brainseg_core.inference.PatientResult`.
        out_dir: folder that receives ``<patient_id>/``; created if needed.
        formats: :class:`ExportFormat` members or their names (or a comma-separated string).
        overwrite: replace an existing export of this patient in ``out_dir``.
        window: ``(width, level)`` of the FLAIR grey levels in the pictures, as the reader viewed
            them (default: the volume's FLAIR foreground 1-99.5 % window).
        progress: ``progress(done, total)`` callback, counted in files.
        cancel: a ``threading.Event`` or a callable returning True to stop; checked before every
            file. A cancelled export leaves the destination as it was.

    Returns:
        The paths written, the sidecar last.

    Raises:
        ValueError: for an unknown format.
        ExportError: the destination is in (or contains) a source folder of the volume, an export
            already exists and ``overwrite`` is False, the destination is not a BrainSeg export
            folder, ``result`` does not belong to ``volume``, or a file cannot be written.
        Cancelled: when ``cancel`` is set.
    """
    chosen = check_formats(formats)
    _check_result(volume, result)
    out_dir = Path(out_dir)
    check_destination(volume, out_dir, overwrite=overwrite)  # fail before creating anything
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot create the export folder ({exc.strerror or exc})") from None
    with exclusive_lock(out_dir / f".{volume.patient_id}.lock", holder=volume.patient_id):
        # again under the lock: another writer may have finished an export meanwhile
        dest = check_destination(volume, out_dir, overwrite=overwrite)
        _remove_stale_staging(out_dir, volume.patient_id)
        if window is None:
            window = auto_window(volume.images[..., CHANNELS.index("FLAIR")])
        reasons = review_reasons(result, truth=volume.masks)
        jobs = _jobs(volume, result, chosen, window, reasons)
        return _write_staged(
            volume.patient_id,
            out_dir,
            dest,
            jobs,
            (SIDECAR_NAME, lambda names: _sidecar(volume, result, chosen, names, window, reasons)),
            progress,
            cancel_checker(cancel),
        )


def _write_staged(
    patient_id: str,
    out_dir: Path,
    dest: Path,
    jobs: list[tuple[str, Callable[[Path], None]]],
    sidecar: tuple[str, Callable[[list[str]], str]],
    progress: Callable[[int, int], None] | None,
    is_cancelled: Callable[[], bool],
) -> list[Path]:
    """Write ``jobs`` and the sidecar into a staging folder, then swap it in at ``dest`` (caller
    holds the patient's lock)."""
    total = len(jobs) + 1
    try:
        staging = out_dir / f".{patient_id}.{uuid.uuid4().hex}.partial"
        staging.mkdir(mode=0o777)  # the umask applies, unlike mkdtemp's owner-only 0o700
    except OSError as exc:
        raise ExportError(
            f"{out_dir}: cannot create the export folder ({_write_problem(exc, out_dir)})"
        ) from None
    try:
        if progress is not None:
            progress(0, total)
        for done, (name, write) in enumerate(jobs, start=1):
            if is_cancelled():
                raise Cancelled(f"{patient_id}: export cancelled")
            with atomic_write(staging / name) as tmp:
                write(tmp)
            if progress is not None:
                progress(done, total)
        names = [name for name, _ in jobs]
        sidecar_name, sidecar_text = sidecar
        with atomic_write(staging / sidecar_name) as tmp:
            tmp.write_text(sidecar_text(names), encoding="utf-8")
        _swap_into_place(staging, dest)
    except (Cancelled, ExportError):
        raise
    except Exception as exc:  # OSError, or a codec's own error on a short write (e.g. a full disk)
        raise ExportError(f"{dest}: cannot write the export ({_write_problem(exc, out_dir)})") from None
    finally:
        with contextlib.suppress(OSError):
            if staging.exists():
                shutil.rmtree(staging)
    if progress is not None:
        progress(total, total)
    return [dest / name for name in names] + [dest / sidecar_name]


def _copy_file(source: Path) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        shutil.copyfile(source, tmp)

    return write


def export_training_data(
    volume: Volume,
    result: PatientResult,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    cancel: CancelArg = None,
) -> list[Path]:
    """Write a corrected patient as training data in the dataset's own layout.

    ``out_dir/<patient_id>/`` receives ``<patient_id>_<n>.tif`` (a byte copy of each slice's TIFF
    when the patient is a folder of slice TIFFs, else the slice's RGB pixels), ``<patient_id>_<n>
    _mask.tif`` (the final mask, uint8 0/255: the reader's where edited, the model's elsewhere) and
    :data:`CORRECTIONS_SIDECAR` (which slices are the reader's, the models, the thresholds). The
    folder reads back as a patient of a dataset root (``brainseg-train DATA``). Written like
    :func:`export_results`: staged and swapped in, under the patient's lock, never into or over a
    source folder.

    Args:
        volume: the patient.
        result: its final result (with the reader's edits applied).
        out_dir: the training-data root that receives ``<patient_id>/``.
        overwrite: replace an earlier copy of this patient written here (a folder with
            :data:`CORRECTIONS_SIDECAR`; nothing else is ever replaced).
        cancel: checked before every file.

    Returns:
        The paths written, the sidecar last.

    Raises:
        ExportError: a source folder, an existing folder without ``overwrite`` or not written by
            this function, a result of another volume, or a file that cannot be written.
        Cancelled: when ``cancel`` is set.
    """
    _check_result(volume, result)
    out_dir = Path(out_dir)

    def check() -> Path:
        return check_export_folder(
            volume.patient_id,
            volume.source,
            out_dir,
            slice_paths=volume.slice_paths,
            overwrite=overwrite,
            marker=CORRECTIONS_SIDECAR,
        )

    check()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    pid = volume.patient_id
    # one TIFF per slice (the LGG layout) is copied byte for byte; a stack, NIfTI or DICOM
    # volume has no such files, and its slices are written from the pixels read
    per_slice = (
        volume.format is PatientFormat.TIFF
        and len(set(volume.slice_paths)) == volume.n_slices
        and all(p.suffix.lower() in (".tif", ".tiff") and p.is_file() for p in volume.slice_paths)
    )
    jobs: list[tuple[str, Callable[[Path], None]]] = []
    for i, (n, s) in enumerate(zip(volume.slice_numbers, result.slices, strict=True)):
        image = _copy_file(volume.slice_paths[i]) if per_slice else _write_rgb(volume.images[i])
        jobs.append((f"{pid}_{n}.tif", image))
        jobs.append((f"{pid}_{n}_mask.tif", _write_tiff(np.where(s.mask, np.uint8(255), np.uint8(0)))))
    if len({name for name, _ in jobs}) != len(jobs):
        raise ExportError(f"{pid}: two slices share a slice number; cannot name their files uniquely")

    def record(_names: list[str]) -> str:
        data = {
            "format": CORRECTIONS_FORMAT,
            "patient_id": pid,
            "source": str(volume.source),
            "software_version": brainseg_core.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": result.models_json(),
            "thresholds": result.thresholds.to_json(),
            "reader_slices": [
                n
                for n, s in zip(volume.slice_numbers, result.slices, strict=True)
                if s.source is MaskSource.READER
            ],
            "mask_sources": _mask_sources(volume, result),
        }
        return json.dumps(data, indent=2) + "\n"

    with exclusive_lock(out_dir / f".{pid}.lock", holder=pid):
        dest = check()
        _remove_stale_staging(out_dir, pid)
        return _write_staged(
            pid, out_dir, dest, jobs, (CORRECTIONS_SIDECAR, record), None, cancel_checker(cancel)
        )


def _write_rgb(image: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, np.ascontiguousarray(image), photometric="rgb")

    return write

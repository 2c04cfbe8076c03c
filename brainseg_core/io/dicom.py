"""Reading DICOM MR studies: series listing, sequence guessing, pixel stacks and their geometry.

A *study folder* holds the files of one DICOM study (one StudyInstanceUID), under any file names,
directly or in subfolders (one per series, as PACS exports and CD-ROMs lay them out; a DICOMDIR
may be present and is not needed). :func:`list_series` groups the files by SeriesInstanceUID and
orders every series' instances by their position along the slice normal (never by file name);
:func:`read_dicom_study` picks the FLAIR, T1 pre-contrast and T1 post-contrast series (guessed from
SeriesDescription / ProtocolName / SequenceName and ContrastBolusAgent, or chosen by the caller),
decodes their pixels (RescaleSlope / RescaleIntercept applied; compressed transfer syntaxes decoded
by pylibjpeg) and returns them as one :class:`~brainseg_core.io.volume.Volume` on the FLAIR grid,
with the FLAIR instances as :attr:`~brainseg_core.io.volume.Volume.reference_files` (what a DICOM
SEG written for the result references). :func:`find_studies` lists the study folders under a
dataset root.

Geometry: the stored array of a series is ``(column i, row j, slice k)``: ``stack.transpose(2, 1,
0)`` of the ``(slices, rows, cols)`` pixel stack. Its voxel-to-world affine is built from
ImageOrientationPatient, ImagePositionPatient and PixelSpacing, with the slice step
``(last position - first position) / (n - 1)``, and converted from DICOM's LPS to RAS+ (the first
two rows negated).

Single-frame images only (MR, CT and the like); enhanced multi-frame images are reported as not
supported yet. A series that cannot be used (a structured report or presentation state, a
localizer, missing or duplicate slice positions, a missing slice, a 4-D time series, a truncated
file) is left out with a warning that names it; only a study without a usable FLAIR series is an
error.

Ground truth: a DICOM Segmentation in the study that references the FLAIR series (such as the one
BrainSeg itself exports) becomes :attr:`~brainseg_core.io.volume.Volume.masks` (any segment is
tumour), so DICOM datasets evaluate and train like the others. pydicom and highdicom load on first
use (they take a few tenths of a second to import).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainseg_core.errors import DataError
from brainseg_core.io.sequences import (
    MODEL_SEQUENCES,
    Sequence,
    SequenceImage,
    assemble_channels,
    sequence_from_description,
)
from brainseg_core.io.volume import PatientFormat, Volume

if TYPE_CHECKING:
    from brainseg_core.geometry import Geometry

__all__ = [
    "SeriesInfo",
    "find_studies",
    "holds_dicom",
    "is_dicom_file",
    "list_series",
    "read_dicom_study",
]

_DICOMDIR = "DICOMDIR"
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Modalities whose objects are not images (reports, presentation states, key objects, SEG/RT...).
_NOT_IMAGES = {"SR", "PR", "KO", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC", "AU", "ECG", "PLAN"}
# Enhanced (multi-frame) image storage SOP classes: enhanced MR, MR spectroscopy, enhanced CT,
# legacy-converted enhanced MR/CT.
_MULTI_FRAME_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1",
    "1.2.840.10008.5.1.4.1.1.4.3",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.4.4",
    "1.2.840.10008.5.1.4.1.1.2.2",
}
# Files that are never DICOM: not even their headers are looked at.
_NOT_DICOM_SUFFIXES = {
    ".txt", ".json", ".xml", ".html", ".pdf", ".csv", ".md", ".tif", ".tiff", ".png", ".jpg",
    ".jpeg", ".gz", ".nii", ".zip", ".exe", ".ini", ".inf", ".py",
}  # fmt: skip
_HEADER_PEEKS = 3  # file headers holds_dicom reads per folder at most
_SPACING_TOL = 0.01  # relative: slice gaps may differ by 1 % before a series counts as irregular
_ORIENTATION_TOL = 1e-3  # direction cosines
_POSITION_TOL_MM = 0.01  # slices closer than this along the normal are at the same position


# ---------------------------------------------------------------------------- cheap detection


def is_dicom_file(path: str | Path) -> bool:
    """Whether a file looks like DICOM: a ``.dcm`` suffix or ``DICM`` at byte 128 (cheap).

    Args:
        path: the file.

    Returns:
        True for a ``.dcm`` file or a file with the DICOM Part 10 preamble; False for anything else,
        including unreadable paths and folders.
    """
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        return p.is_file()
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:  # a folder, a broken link, no permission
        return False


def _maybe_dicom_names(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The visible files of ``folder`` whose names do not rule DICOM out."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith(".") or Path(e.name).suffix.lower() in _NOT_DICOM_SUFFIXES:
            continue
        try:
            if e.is_file():
                yield e
        except OSError:
            continue


def _folder_has_dicom(folder: Path) -> bool:
    peeks = 0
    for e in _maybe_dicom_names(folder):
        if e.name.upper() == _DICOMDIR or e.name.lower().endswith(".dcm"):
            return True
        if peeks < _HEADER_PEEKS:
            peeks += 1
            if is_dicom_file(e.path):
                return True
    return False


def holds_dicom(folder: str | Path) -> bool:
    """Whether a folder holds DICOM files directly, in its immediate subfolders, or a DICOMDIR.

    Cheap: it looks at file names and at most a few file headers per folder.

    Args:
        folder: the folder to look at.

    Returns:
        True when DICOM files (or a DICOMDIR) were seen.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if _folder_has_dicom(folder):
        return True
    try:
        subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return False
    return any(_folder_has_dicom(Path(s)) for s in subs)


# ---------------------------------------------------------------------------- series listing


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study, from its headers.

    Attributes:
        series_uid: SeriesInstanceUID.
        series_number: SeriesNumber, None when absent.
        description: SeriesDescription, else ProtocolName, else ``""``.
        modality: Modality (``"MR"``, ``"CT"``, ``"SR"``, ...).
        n_instances: number of files (instances) in the series.
        sequence: the sequence guessed from the descriptions and the contrast agent, or None.
        files: the instances, ordered by position along the slice normal (by InstanceNumber where
            the positions cannot be used).
        problem: why the series cannot be opened (e.g. ``"not an image (SR)"``,
            ``"duplicate slice positions"``), None when it can.
    """

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    n_instances: int
    sequence: Sequence | None
    files: tuple[Path, ...]
    problem: str | None = None

    @property
    def name(self) -> str:
        """How messages name the series: ``series 4 'AX FLAIR'``."""
        number = "?" if self.series_number is None else str(self.series_number)
        return f"series {number} '{self.description}'" if self.description else f"series {number}"

    def summary(self) -> str:
        """One line for a list of series: name, guess, size and problem."""
        guess = self.sequence.label if self.sequence else "sequence unknown"
        text = f"{self.name} ({self.modality}, {guess}, {self.n_instances} files)"
        return f"{text}: {self.problem}" if self.problem else text


@dataclass
class _Instance:
    path: Path
    header: Any  # pydicom Dataset without pixel data
    broken: str | None = None  # why its pixel data cannot be read (a truncated file)


@dataclass
class _Series:
    """A series' headers and what was worked out from them."""

    info: SeriesInfo
    instances: list[_Instance]
    affine: np.ndarray | None = None
    shape: tuple[int, int, int] | None = None  # stored (cols, rows, slices)


@dataclass
class _Scan:
    study: Path
    series: list[_Series]
    unreadable: list[str] = field(default_factory=list)
    patient_id: str = ""


def _walk_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == _DICOMDIR:
                continue
            if Path(name).suffix.lower() in _NOT_DICOM_SUFFIXES:
                continue
            out.append(Path(dirpath) / name)
    return out


def _expected_pixel_bytes(ds: Any) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces, None when unknown."""
    try:
        if not ds.file_meta.TransferSyntaxUID.is_encapsulated and "Rows" in ds:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            bits = int(ds.BitsAllocated)
            count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
            return (count * bits + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None
    return None


def _read_header(path: Path) -> tuple[Any, str | None]:
    """``(header, problem)`` of a DICOM file: ``(None, None)`` for a non-DICOM file, a problem when
    the header is whole but the pixel data is cut short; raises ValueError for a broken header."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            header_end = f.tell()
    except InvalidDicomError:
        return None, None
    except Exception as exc:  # pydicom raises many types for a truncated header
        raise ValueError(f"cannot be read as DICOM ({type(exc).__name__}: {exc})") from exc
    meta = getattr(ds, "file_meta", None)
    meta_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if meta_class == _MEDIA_STORAGE_DIRECTORY or _text(ds, "SOPClassUID") == _MEDIA_STORAGE_DIRECTORY:
        return None, None
    if "SeriesInstanceUID" not in ds or "StudyInstanceUID" not in ds:
        if not meta_class and "SOPClassUID" not in ds:
            return None, None  # neither a file meta header nor a SOP class: not a DICOM object
        raise ValueError(
            "is incomplete or truncated: it has no SeriesInstanceUID / StudyInstanceUID (copy the file again)"
        )
    expected = _expected_pixel_bytes(ds)
    if expected is not None:
        remaining = path.stat().st_size - header_end
        if remaining < expected + 8:  # the pixel data element's tag and length come first
            return ds, (
                f"is truncated: its pixel data has {max(remaining - 12, 0)} of {expected} bytes "
                "(copy the file again)"
            )
    return ds, None


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _series_number(ds: Any) -> int | None:
    try:
        value = ds.get("SeriesNumber")
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _floats(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _scan(study: Path) -> _Scan:
    """Read every DICOM header under ``study`` and work out each series' order and problems."""
    if not study.is_dir():
        raise DataError(study, "is not a folder; open a DICOM study folder")
    by_series: dict[str, list[_Instance]] = defaultdict(list)
    studies: dict[str, tuple[str, Path]] = {}
    scan = _Scan(study, [])
    for path in _walk_files(study):
        if not is_dicom_file(path):
            continue
        try:
            ds, broken = _read_header(path)
        except ValueError as exc:
            scan.unreadable.append(f"{path}: {exc}")
            continue
        if ds is None:
            continue
        study_uid = _text(ds, "StudyInstanceUID")
        if study_uid and study_uid not in studies:
            label = " ".join(t for t in (_text(ds, "StudyDescription"), _text(ds, "StudyDate")) if t)
            studies[study_uid] = (label, path)
        by_series[_text(ds, "SeriesInstanceUID")].append(_Instance(path, ds, broken))
    if len(studies) > 1:
        named = [
            f"study {uid}{f' ({label})' if label else ''}, e.g. {path}"
            for uid, (label, path) in list(studies.items())[:2]
        ]
        raise DataError(
            study,
            f"holds files of {len(studies)} studies ({'; '.join(named)}); open one study folder at a time",
        )
    if not by_series:
        why = f" ({len(scan.unreadable)} unreadable: {scan.unreadable[0]})" if scan.unreadable else ""
        raise DataError(study, f"holds no DICOM files{why}; open a folder of DICOM images")
    for uid, instances in by_series.items():
        scan.series.append(_describe(uid, instances))
    if not any(s.info.problem is None or "Rows" in s.instances[0].header for s in scan.series):
        raise DataError(
            study,
            "holds no DICOM images, only "
            + ", ".join(s.info.summary() for s in scan.series)
            + "; open a folder with the MR series",
        )
    scan.series.sort(
        key=lambda s: (s.info.series_number is None, s.info.series_number or 0, s.info.series_uid)
    )
    first = scan.series[0].instances[0].header
    scan.patient_id = _text(first, "PatientID")
    return scan


def _describe(uid: str, instances: list[_Instance]) -> _Series:
    ds = instances[0].header
    description = _text(ds, "SeriesDescription") or _text(ds, "ProtocolName")
    guess_text = " ".join(_text(ds, k) for k in ("SeriesDescription", "ProtocolName", "SequenceName"))
    sequence = sequence_from_description(guess_text, contrast_agent=bool(_text(ds, "ContrastBolusAgent")))
    modality = _text(ds, "Modality") or "?"

    def by_number(inst: _Instance) -> tuple[int, str]:
        try:
            return int(inst.header.get("InstanceNumber") or 0), inst.path.name
        except (TypeError, ValueError):
            return 0, inst.path.name

    instances = sorted(instances, key=by_number)
    series = _Series(
        SeriesInfo(uid, _series_number(ds), description, modality, len(instances), sequence, ()), instances
    )
    broken = [i for i in instances if i.broken]
    problem = _image_problem(instances)
    if broken:
        more = f" (and {len(broken) - 1} more files)" if len(broken) > 1 else ""
        problem = f"{broken[0].path} {broken[0].broken}{more}"
    elif problem is None:
        problem = _order_and_grid(series)  # sorts series.instances by position and sets the grid
    files = tuple(i.path for i in series.instances)
    series.info = SeriesInfo(
        uid, series.info.series_number, description, modality, len(files), sequence, files, problem
    )
    return series


def _image_problem(instances: list[_Instance]) -> str | None:
    ds = instances[0].header
    modality = _text(ds, "Modality")
    if modality in _NOT_IMAGES or "Rows" not in ds or "Columns" not in ds:
        return f"not an image ({modality or _text(ds, 'SOPClassUID') or 'no pixel data'})"
    if any(
        _text(i.header, "SOPClassUID") in _MULTI_FRAME_CLASSES
        or int(i.header.get("NumberOfFrames", 1) or 1) > 1
        for i in instances
    ):
        return "multi-frame (enhanced) images are not supported yet; export the series as single-frame images"
    if any(int(i.header.get("SamplesPerPixel", 1) or 1) != 1 for i in instances):
        return "colour images (not greyscale MR/CT slices)"
    incomplete = [i.path for i in instances if "Rows" not in i.header or "Columns" not in i.header]
    if incomplete:
        return f"{incomplete[0]} has no Rows / Columns (truncated?)"
    if len({(int(i.header.Rows), int(i.header.Columns)) for i in instances}) > 1:
        return "image size (rows x columns) varies between images"
    return None


def _order_and_grid(series: _Series) -> str | None:
    """Sort the instances along the slice normal and set the series' affine; or say what is wrong."""
    instances = series.instances
    iops = [_floats(i.header, "ImageOrientationPatient", 6) for i in instances]
    ipps = [_floats(i.header, "ImagePositionPatient", 3) for i in instances]
    spacings = [_floats(i.header, "PixelSpacing", 2) for i in instances]
    missing = [
        name
        for name, values in (
            ("ImageOrientationPatient", iops),
            ("ImagePositionPatient", ipps),
            ("PixelSpacing", spacings),
        )
        if any(v is None for v in values)
    ]
    if missing:
        return f"no {' / '.join(missing)} in some images (not a 3-D series: a scout or secondary capture?)"
    iop = np.asarray(iops, np.float64)
    if np.abs(iop - iop[0]).max() > _ORIENTATION_TOL:
        return "slice orientation varies between images (a localizer or mixed series)"
    spacing = np.asarray(spacings, np.float64)
    if np.abs(spacing - spacing[0]).max() > _SPACING_TOL * spacing[0].min():
        return "pixel spacing varies between images"
    if min(spacing[0]) <= 0:
        return "non-positive PixelSpacing"
    row_dir, col_dir = iop[0, :3], iop[0, 3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1) > 0.01 or abs(float(row_dir @ col_dir)) > 0.01:
        return "ImageOrientationPatient is not two perpendicular unit vectors"
    pos = np.asarray(ipps, np.float64)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    pos, dist = pos[order], dist[order]
    series.instances = [instances[i] for i in order]
    n = len(instances)
    if n > 1:
        place = np.concatenate([[0], np.cumsum(np.diff(dist) > _POSITION_TOL_MM)])  # same place, same number
        if place[-1] + 1 < n:
            repeats = set(Counter(place.tolist()).values())
            if place[-1] > 0 and len(repeats) == 1:
                return (
                    f"every slice position is repeated {repeats.pop()} times (a 4-D, time or multi-echo "
                    "series; BrainSeg reads 3-D series)"
                )
            return f"duplicate slice positions ({n} images at {place[-1] + 1} positions)"
        step = (pos[-1] - pos[0]) / (n - 1)
        gaps = np.diff(dist)
        expected = float(step @ normal)
        if gaps.max() - gaps.min() > _SPACING_TOL * expected:
            return (
                f"irregular slice spacing (gaps from {gaps.min():.3g} to {gaps.max():.3g} mm: a missing "
                "slice?)"
            )
        off_line = np.linalg.norm(pos - (pos[0] + np.arange(n)[:, None] * step), axis=1).max()
        if off_line > _SPACING_TOL * np.linalg.norm(step) + _POSITION_TOL_MM:
            return "slice positions do not lie on a line"
    else:
        ds = instances[0].header
        thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        step = normal * float(thickness)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[0, 1]  # column index i runs along the row direction
    lps[:3, 1] = col_dir * spacing[0, 0]  # row index j runs along the column direction
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    series.affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> RAS+
    ds = instances[0].header
    series.shape = (int(ds.Columns), int(ds.Rows), n)
    return None


def list_series(study: Path) -> list[SeriesInfo]:
    """Every series of a study folder, from the headers of all its files.

    Every file under the folder is looked at (any name, any depth; a DICOMDIR is not needed and
    is ignored; non-DICOM files are skipped). Instances are grouped by SeriesInstanceUID and
    ordered by position along the slice normal (the cross product of ImageOrientationPatient).

    Args:
        study: the study folder.

    Returns:
        The series ordered by SeriesNumber, each with its sequence guess and, for a series that
        cannot be opened, the reason.

    Raises:
        DataError: naming the folder when it holds no DICOM files or no DICOM images, or files of
            more than one study.
    """
    return [s.info for s in _scan(Path(study)).series]


def series_plan(
    study: Path, *, choose: Mapping[str, str] | None = None
) -> tuple[list[SeriesInfo], dict[Sequence, SeriesInfo]]:
    """Every series of a study and the ones :func:`read_dicom_study` would use for each sequence.

    What a reader confirms before the analysis: the guesses (or the ``choose`` overrides) next to
    everything else the study holds.

    Args:
        study: the study folder.
        choose: overrides, as for :func:`read_dicom_study`.

    Returns:
        ``(series, picked)``: all series ordered by SeriesNumber, and the series picked per
        sequence (a sequence without a usable series is absent).

    Raises:
        DataError: as :func:`list_series`, and for a ``choose`` value matching no series or several.
    """
    scan = _scan(Path(study))
    picked = _choose(scan, choose, [])
    return [s.info for s in scan.series], {seq: s.info for seq, s in picked.items()}


# ---------------------------------------------------------------------------- reading a study


def _match(series: list[_Series], wanted: str) -> list[_Series]:
    w = wanted.strip()
    exact = [
        s
        for s in series
        if s.info.series_uid == w or (s.info.series_number is not None and str(s.info.series_number) == w)
    ]
    if exact:
        return exact
    return [s for s in series if w and w.lower() in s.info.description.lower()]


def _choose(scan: _Scan, choose: Mapping[str, str] | None, warnings: list[str]) -> dict[Sequence, _Series]:
    listing = "; ".join(s.info.summary() for s in scan.series)
    picked: dict[Sequence, _Series] = {}
    for name, wanted in (choose or {}).items():
        try:
            seq = Sequence(name)
        except ValueError:
            raise ValueError(f"unknown sequence {name!r}; use one of flair, pre, post") from None
        matches = _match(scan.series, str(wanted))
        if len(matches) != 1:
            how = "no series" if not matches else f"{len(matches)} series"
            raise DataError(scan.study, f"{how} match {wanted!r} for {seq.label} (series found: {listing})")
        if matches[0].info.problem:
            raise DataError(
                scan.study,
                f"the series chosen for {seq.label}, {matches[0].info.name}, cannot be used: "
                f"{matches[0].info.problem}",
            )
        picked[seq] = matches[0]
    taken = {id(s) for s in picked.values()}
    for seq in MODEL_SEQUENCES:
        if seq in picked:
            continue
        candidates = [
            s for s in scan.series if s.info.problem is None and s.info.sequence is seq and id(s) not in taken
        ]
        if not candidates:
            continue
        candidates.sort(key=lambda s: -s.info.n_instances)
        best = candidates[0]
        if len(candidates) > 1:
            others = ", ".join(s.info.name for s in candidates[1:])
            warnings.append(
                f"{scan.study}: {len(candidates)} series look like {seq.label}; used {best.info.name} "
                f"({best.info.n_instances} images), not {others}"
            )
        picked[seq] = best
        taken.add(id(best))
    return picked


def _read_pixels(series: _Series) -> np.ndarray:
    """The ``(slices, rows, cols)`` stack with the rescale applied; raises DataError naming the file."""
    import pydicom

    slices: list[np.ndarray] = []
    rescales: list[tuple[float, float]] = []
    assert series.shape is not None
    cols, rows, _n = series.shape
    for inst in series.instances:
        try:
            ds = pydicom.dcmread(inst.path)
            arr = np.asarray(ds.pixel_array)
        except Exception as exc:  # truncated data, a codec missing, a corrupt frame
            raise DataError(inst.path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
        if arr.shape != (rows, cols):
            raise DataError(inst.path, f"pixel data is {arr.shape}, the header says {(rows, cols)}")
        if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
            arr = arr.max() - arr  # displayed inverted: higher values darker
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(arr)
        rescales.append((slope, intercept))
    if all(r == (1.0, 0.0) for r in rescales) and len({s.dtype for s in slices}) == 1:
        return np.stack(slices)
    out = np.empty((len(slices), rows, cols), np.float32)
    for k, (arr, (slope, intercept)) in enumerate(zip(slices, rescales, strict=True)):
        out[k] = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return out


def _geometry(series: _Series) -> Geometry:
    from brainseg_core.geometry import Geometry

    assert series.affine is not None and series.shape is not None
    return Geometry(series.affine, series.shape, f"DICOM {series.info.name}")


def read_dicom_study(study: Path, *, choose: Mapping[str, str] | None = None) -> Volume:
    """Read a DICOM study folder into a volume of pre-contrast, FLAIR and post-contrast channels.

    Args:
        study: the study folder (see the module docstring for the layouts).
        choose: the series to use for some sequences, overriding the guesses: each value is a
            SeriesNumber, a SeriesInstanceUID or a part of a SeriesDescription (any case).

    Returns:
        The patient on the FLAIR grid, display-ordered, with :attr:`Volume.geometry`,
        :attr:`Volume.reference_files` (the FLAIR instances in stored slice order) and
        :attr:`Volume.channel_sources` set; ``masks`` from a DICOM SEG of the FLAIR series in the
        study (ground truth, any segment), else None.

    Raises:
        DataError: naming the folder when it holds no DICOM images, more than one study, no
            usable FLAIR series (the message lists the series found with their guesses), or when a
            ``choose`` value matches no series or several; naming the file when a FLAIR file
            cannot be decoded. A pre- or post-contrast series that cannot be read is left out
            with a warning instead.
    """
    study = Path(study)
    scan = _scan(study)
    warnings = list(scan.unreadable)
    picked = _choose(scan, choose, warnings)
    used = {id(s) for s in picked.values()}
    truth_series = _ground_truth_series(scan, picked.get(Sequence.FLAIR))
    for s in scan.series:
        if s.info.problem and id(s) not in used and s is not truth_series:
            warnings.append(f"{study}: {s.info.name} left out: {s.info.problem}")
    if Sequence.FLAIR not in picked:
        unreadable = f"; unreadable files: {'; '.join(scan.unreadable[:3])}" if scan.unreadable else ""
        raise DataError(
            study,
            "has no usable FLAIR series; BrainSeg's models need FLAIR (series found: "
            + "; ".join(s.info.summary() for s in scan.series)
            + f"){unreadable}",
        )
    images: dict[Sequence, SequenceImage] = {}
    for seq, series in picked.items():
        try:
            stack = _read_pixels(series)
        except DataError as exc:
            if seq is Sequence.FLAIR:
                raise
            warnings.append(f"{exc}; {series.info.name} ({seq.label}) left out")
            continue
        images[seq] = SequenceImage(
            stack.transpose(2, 1, 0), _geometry(series), f"{study}: {series.info.name}"
        )
    try:
        channels, geometry, more = assemble_channels(images, where=str(study))
    except ValueError as exc:
        raise DataError(study, str(exc).split(": ", 1)[-1]) from exc
    warnings += more
    from brainseg_core.io.tiff import to_uint8

    uint8 = to_uint8(list(channels))
    flair = picked[Sequence.FLAIR]
    n = uint8.shape[0]
    masks = None
    if truth_series is not None:
        try:
            masks = geometry.to_display(_read_ground_truth(truth_series, flair).transpose(2, 1, 0))
        except DataError as exc:
            warnings.append(f"{exc}; ground truth ignored")
    return Volume(
        patient_id=scan.patient_id or study.name,
        source=study,
        slice_paths=_display_slice_paths(flair, geometry, study, n),
        slice_numbers=list(range(1, n + 1)),
        images=uint8,
        masks=masks,
        warnings=warnings,
        geometry=geometry,
        reference_files=tuple(i.path for i in flair.instances),
        channel_sources=tuple(
            images[s].source if s in images else images[Sequence.FLAIR].source for s in MODEL_SEQUENCES
        ),
        format=PatientFormat.DICOM,
    )


def _ground_truth_series(scan: _Scan, flair: _Series | None) -> _Series | None:
    """The DICOM SEG of the study that segments the FLAIR series (ground truth), if any."""
    if flair is None:
        return None
    segs = [
        s
        for s in scan.series
        if s.info.modality == "SEG"
        and any(
            _text(ref, "SeriesInstanceUID") == flair.info.series_uid
            for i in s.instances
            for ref in i.header.get("ReferencedSeriesSequence", [])
        )
    ]
    return segs[-1] if segs else None  # the highest series number: the latest


def _read_ground_truth(seg: _Series, flair: _Series) -> np.ndarray:
    """A DICOM SEG's frames on the FLAIR series' stored grid ``(slices, rows, cols)``: any segment
    is tumour; each frame goes to the FLAIR instance it references.

    Raises:
        DataError: naming the SEG file when it cannot be read or does not fit the FLAIR series.
    """
    import pydicom

    k_of = {_text(i.header, "SOPInstanceUID"): k for k, i in enumerate(flair.instances)}
    rows, cols = int(flair.instances[0].header.Rows), int(flair.instances[0].header.Columns)
    stored = np.zeros((len(flair.instances), rows, cols), bool)
    for inst in seg.instances:
        try:
            ds = pydicom.dcmread(inst.path)
            frames = np.asarray(ds.pixel_array)
        except Exception as exc:  # pydicom raises many types for broken pixel data
            raise DataError(
                inst.path, f"cannot be read as a DICOM SEG ({type(exc).__name__}: {exc})"
            ) from exc
        frames = frames.reshape(-1, *frames.shape[-2:])
        if frames.shape[1:] != (rows, cols):
            raise DataError(
                inst.path, f"has {frames.shape[1:]} frames, the FLAIR series {(rows, cols)} images"
            )
        groups = ds.get("PerFrameFunctionalGroupsSequence", [])
        if len(groups) != len(frames):
            raise DataError(inst.path, "has no per-frame references to the FLAIR images")
        for frame, group in zip(frames, groups, strict=True):
            try:
                source = group.DerivationImageSequence[0].SourceImageSequence[0]
                k = k_of[str(source.ReferencedSOPInstanceUID)]
            except (AttributeError, IndexError, KeyError):
                raise DataError(
                    inst.path, "has a frame that references no image of the FLAIR series"
                ) from None
            stored[k] |= frame != 0
    return stored


def _display_slice_paths(flair: _Series, geometry: Geometry, study: Path, n: int) -> list[Path]:
    """The FLAIR file of every displayed slice when the display slices are the stored slices
    (axial acquisitions), else the study folder for every slice."""
    k = np.arange(len(flair.instances)).reshape(1, 1, -1)
    try:
        shown = geometry.to_display(np.broadcast_to(k, geometry.source_shape))
    except ValueError:
        return [study] * n
    per_slice = shown.reshape(n, -1)
    if np.all(per_slice == per_slice[:, :1]):
        return [flair.instances[int(i)].path for i in per_slice[:, 0]]
    return [study] * n


# ---------------------------------------------------------------------------- dataset roots


def _first_study_uid(folder: Path, filenames: list[str]) -> str | None:
    from brainseg_core.io.nifti import is_nifti_name
    from brainseg_core.io.tiff import is_tiff_name

    for name in sorted(filenames):
        path = folder / name
        if name.startswith(".") or name.upper() == _DICOMDIR or is_tiff_name(name) or is_nifti_name(name):
            continue  # the other formats' files are not opened to look for a DICOM preamble
        if not is_dicom_file(path):
            continue
        import pydicom  # loaded only once a DICOM file is found

        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPClassUID"]
            )
        except Exception:  # not DICOM after all, or a broken header: try the next file
            continue
        uid = _text(ds, "StudyInstanceUID")
        if uid and _text(ds, "SOPClassUID") != _MEDIA_STORAGE_DIRECTORY:
            return uid
    return None


def find_studies(root: Path) -> list[Path]:
    """Every study folder under a dataset root.

    One header is read per folder holding DICOM files; a study's folder is the deepest common
    ancestor of the folders holding its files.

    Args:
        root: the dataset root (a study folder itself is returned as the one study).

    Returns:
        The study folders, sorted; empty when there is no DICOM file under ``root``.
    """
    root = Path(root)
    folders: dict[str, list[str]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        uid = _first_study_uid(Path(dirpath), filenames)
        if uid is not None:
            folders[uid].append(dirpath)
    return sorted({Path(os.path.commonpath(paths)) for paths in folders.values()})

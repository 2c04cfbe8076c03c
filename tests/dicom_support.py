"""DICOM MR studies built at test time from the LGG fixture patients, on a known geometry.

The geometry is made first (:func:`make_geometry`: a source grid that shows the display-ordered
fixture with known axis permutations, flips, voxel size and obliquity); each channel is written
as ``geometry.to_source(channel)`` slices, so reading the study back must give exactly the
fixture's display arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from brainseg_core.geometry import Geometry

#: (description, ContrastBolusAgent) of the three channels in CHANNELS order.
CHANNEL_SERIES: tuple[tuple[str, str], ...] = (
    ("AX T1 PRE", ""),
    ("AX FLAIR", ""),
    ("AX T1 POST GAD", "GADOBUTROL"),
)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class Layout(NamedTuple):
    """How the stored grid lies relative to the display grid (see :func:`make_geometry`)."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    oblique_deg: float


#: Axial acquisition: columns to the patient's left, rows to posterior, slices up.
AXIAL = Layout((2, 1, 0), (False, False, False), 0.0)
#: Axial, 10 degrees oblique, stored mirrored (columns to the right) and from head to foot.
AXIAL_OBLIQUE_FLIPPED = Layout((2, 1, 0), (True, False, True), 10.0)
#: Sagittal, 10 degrees oblique: columns to posterior, rows down, slices to the left.
SAGITTAL_OBLIQUE = Layout((1, 0, 2), (False, True, False), 10.0)


def _rotation(degrees: float, axis: Sequence[float]) -> np.ndarray:
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def make_geometry(
    display_shape: tuple[int, int, int],
    layout: Layout = AXIAL,
    *,
    spacing_mm: tuple[float, float, float] = (3.3, 1.1, 0.9),
    origin: tuple[float, float, float] = (80.0, 100.0, -40.0),
) -> Geometry:
    """A geometry whose display grid is ``display_shape``.

    Args:
        display_shape: ``(slices, rows, cols)``.
        layout: ``perm[a]`` is the display axis that source axis ``a`` runs along, ``flips[a]``
            whether it runs against it; ``oblique_deg`` rotates the whole grid (about an oblique
            axis; under 45 degrees the display axes stay the same).
        spacing_mm: voxel size along the display axes (slice, row, column).
        origin: world position (RAS mm) of display voxel (0, 0, 0) before the rotation.
    """
    # display index -> RAS: slice superior, row posterior, column the patient's left
    d = np.array([[0, 0, -spacing_mm[2]], [0, -spacing_mm[1], 0], [spacing_mm[0], 0, 0]], np.float64)
    perm, flips, oblique_deg = layout
    m = np.zeros((3, 3))
    off = np.zeros(3)
    for a in range(3):
        axis = perm[a]
        m[axis, a] = -1.0 if flips[a] else 1.0
        off[axis] = display_shape[axis] - 1 if flips[a] else 0
    r = _rotation(oblique_deg, (1.0, 0.6, 0.3))
    affine = np.eye(4)
    affine[:3, :3] = r @ d @ m
    affine[:3, 3] = r @ (d @ off + np.asarray(origin))
    shape = tuple(display_shape[perm[a]] for a in range(3))
    g = Geometry(affine, (shape[0], shape[1], shape[2]), "test")
    assert g.display_shape == tuple(display_shape), (g.display_shape, display_shape)
    return g


@dataclass
class Study:
    """The identity shared by the series of one generated study."""

    patient_id: str = "TCGA_TEST_0001"
    study_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)


def _ds_text(v: float) -> str:
    text = f"{v:.10g}"
    return "0" if text == "-0" else text


def write_series(
    folder: Path,
    source: np.ndarray,
    affine: np.ndarray,
    *,
    study: Study,
    description: str,
    series_number: int,
    rng: np.random.Generator,
    contrast: str = "",
    transfer_syntax: str | None = None,
    rescale: tuple[float, float] | None = None,
    series_uid: str | None = None,
    names: str = "random",
) -> list[Path]:
    """Write a source-ordered ``(cols, rows, slices)`` array as single-frame MR instances.

    Returns:
        The files in stored slice order (k = 0, 1, ...), written in a shuffled order under random
        names (``names="random"``) in ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    lps = _LPS @ np.asarray(affine, np.float64)
    col_mm, row_mm, thick = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / col_mm, lps[:3, 1] / row_mm
    n = source.shape[2]
    paths = [
        folder / (f"{rng.integers(10**9):09d}" if names == "random" else f"{k:04d}.dcm") for k in range(n)
    ]
    for k in rng.permutation(n):
        k = int(k)
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = "Test^Patient"
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = study.study_uid
        ds.StudyID = "1"
        ds.StudyDate = "19970222"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MR BRAIN"
        ds.Modality = "MR"
        ds.Manufacturer = "Test"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.ProtocolName = description
        if contrast:
            ds.ContrastBolusAgent = contrast
        ds.FrameOfReferenceUID = study.frame_uid
        ds.InstanceNumber = int(rng.integers(1, 10_000))  # says nothing about the position
        ds.ImageOrientationPatient = [_ds_text(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [_ds_text(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        ds.PixelSpacing = [_ds_text(row_mm), _ds_text(col_mm)]
        ds.SliceThickness = _ds_text(thick)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        plane = np.ascontiguousarray(source[:, :, k].T)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = plane.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = (_ds_text(v) for v in rescale)
            ds.RescaleType = "US"
        ds.PixelData = plane.tobytes()
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        ds.save_as(paths[k], enforce_file_format=True)
    return paths


@dataclass
class BuiltStudy:
    """What :func:`write_study` wrote."""

    folder: Path
    geometry: Geometry
    study: Study
    files: dict[str, list[Path]]  # description -> files in stored order
    series_uids: dict[str, str]


def write_study(
    folder: Path,
    images: np.ndarray,
    geometry: Geometry,
    *,
    subfolders: bool = False,
    seed: int = 0,
    transfer_syntax: str | None = None,
    study: Study | None = None,
    channels: Sequence[int] = (0, 1, 2),
) -> BuiltStudy:
    """Write display-ordered ``(N, H, W, 3)`` images as one MR series per channel.

    Args:
        folder: the study folder.
        images: the fixture's images.
        geometry: the source grid to store them on (from :func:`make_geometry`).
        subfolders: one subfolder per series (else all files directly in ``folder``).
        seed: for the file names, the writing order and the instance numbers.
        transfer_syntax: compress every instance with it (e.g. RLE Lossless).
        study: the study identity (a new one by default).
        channels: which channels to write (indices into :data:`CHANNEL_SERIES`).
    """
    rng = np.random.default_rng(seed)
    study = study or Study()
    files: dict[str, list[Path]] = {}
    uids: dict[str, str] = {}
    for c in channels:
        description, contrast = CHANNEL_SERIES[c]
        uid = generate_uid()
        where = folder / f"S{c + 1:03d}" if subfolders else folder
        files[description] = write_series(
            where,
            geometry.to_source(images[..., c]),
            geometry.source_affine,
            study=study,
            description=description,
            series_number=c + 2,
            rng=rng,
            contrast=contrast,
            transfer_syntax=transfer_syntax,
            series_uid=uid,
        )
        uids[description] = uid
    return BuiltStudy(folder, geometry, study, files, uids)


def retag(path: Path, **values: object) -> None:
    """Set header values of a written file in place."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path)

"""Finding and opening patients in every format BrainSeg reads.

- **TIFF** (the LGG / ``kaggle_3m`` layout, multi-page stacks): :mod:`brainseg_core.io.lgg`.
- **NIfTI** (``.nii`` / ``.nii.gz``, BraTS-style names or one 4-D file): :mod:`brainseg_core.io.nifti`.
- **DICOM** (a study folder, series in subfolders or mixed, any file names):
  :mod:`brainseg_core.io.dicom`.

A patient is a path: a folder or a file. What it holds decides the reader; a dataset root may mix
formats. The NIfTI and DICOM readers (and their libraries) load only when such a patient is
opened, so the viewer starts as fast as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from brainseg_core.errors import DataError
from brainseg_core.io import lgg
from brainseg_core.io.volume import PatientFormat, Volume

__all__ = [
    "PatientFormat",
    "find_patients",
    "is_patient_dir",
    "open_volume",
    "patient_format",
    "patient_id_of",
]


def _nifti_files(folder: Path) -> list[Path]:
    from brainseg_core.io.nifti import nifti_files

    return nifti_files(folder)


def patient_format(path: str | os.PathLike[str]) -> PatientFormat:
    """The format of a patient folder or file, from names and at most a few file headers.

    Raises:
        DataError: ``path`` does not exist.
    """
    from brainseg_core.io.nifti import is_nifti_name
    from brainseg_core.io.tiff import is_tiff_name

    p = Path(path)
    if not p.exists():
        raise DataError(p, "does not exist")
    if p.is_file():
        if is_nifti_name(p.name):
            return PatientFormat.NIFTI
        if is_tiff_name(p.name):
            return PatientFormat.TIFF
        from brainseg_core.io.dicom import is_dicom_file

        if p.name.upper() == "DICOMDIR" or is_dicom_file(p):
            return PatientFormat.DICOM
        return PatientFormat.TIFF
    if lgg.is_patient_dir(p):
        return PatientFormat.TIFF
    if _nifti_files(p):
        return PatientFormat.NIFTI
    from brainseg_core.io.dicom import holds_dicom

    return PatientFormat.DICOM if holds_dicom(p) else PatientFormat.TIFF


def open_volume(path: str | os.PathLike[str], *, choose: Mapping[str, str] | None = None) -> Volume:
    """Read one patient in any supported format.

    Args:
        path: a patient folder (TIFF slices, NIfTI files or a DICOM study), a TIFF stack, or a NIfTI
            file. A single DICOM file or a DICOMDIR opens the study folder it is in.
        choose: for DICOM, which series to use for a sequence, by sequence name (``flair``,
            ``pre``, ``post``): a SeriesNumber, SeriesInstanceUID or part of the SeriesDescription,
            overriding the guess from the headers. Ignored for other formats.

    Returns:
        The patient's :class:`Volume`: axial slices, channels pre-contrast, FLAIR, post-contrast.

    Raises:
        DataError: naming the file and the problem (see each reader).
    """
    p = Path(path)
    fmt = patient_format(p)
    if fmt is PatientFormat.NIFTI:
        from brainseg_core.io.nifti import read_nifti_patient

        return read_nifti_patient(p)
    if fmt is PatientFormat.DICOM:
        from brainseg_core.io.dicom import read_dicom_study

        return read_dicom_study(p.parent if p.is_file() else p, choose=choose)
    return lgg.open_volume(p)


def is_patient_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one patient's folder: TIFF slices, NIfTI sequences or a DICOM study.

    Names, and for DICOM one header per folder: a folder that holds DICOM files is a patient's when
    they are one study (:func:`~brainseg_core.io.dicom.find_studies`), not a dataset root with a
    study right under it.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    if lgg.is_patient_dir(p) or _nifti_patient_dir(p):
        return True
    from brainseg_core.io.dicom import find_studies, holds_dicom

    if not holds_dicom(p):
        return False
    studies = find_studies(p)
    return not studies or studies == [p]  # none readable: a DICOMDIR alone is its own study


def _nifti_patient_dir(folder: Path) -> bool:
    """A folder of one patient's NIfTI files: sequence-named files of one id, or a single unnamed
    file in a folder without subfolders (a folder holding one 4-D file)."""
    from brainseg_core.io.nifti import nifti_stem
    from brainseg_core.io.sequences import sequence_from_filename

    files = _nifti_files(folder)
    if not files:
        return False
    named = [f for f in files if sequence_from_filename(nifti_stem(f)) is not None]
    if named:
        return len(named) == len(files) and len(_nifti_ids(named)) == 1
    if len(files) > 1:
        return False
    with os.scandir(folder) as entries:
        return not any(e.is_dir() and not e.name.startswith(".") for e in entries)


def _nifti_ids(files: list[Path]) -> set[str]:
    """The patient ids of sequence-named NIfTI files (the name before the sequence suffix)."""
    from brainseg_core.io.nifti import nifti_stem

    ids = set()
    for f in files:
        stem = nifti_stem(f)
        cut = max(stem.rfind("_"), stem.rfind("-"))
        ids.add(stem[:cut].lower() if cut > 0 else "")
    return ids


def patient_id_of(path: str | os.PathLike[str]) -> str:
    """The patient id :func:`open_volume` gives ``path`` (a folder's name, a file's stem).

    Only the path is looked at. A DICOM study's id is its folder's name here; the opened volume
    uses the PatientID in the headers when there is one.
    """
    p = Path(path)
    from brainseg_core.io.nifti import is_nifti_name, nifti_stem

    if p.is_file() and is_nifti_name(p.name):
        return nifti_stem(p)
    return lgg.patient_id_of(p)


def find_patients(path: str | os.PathLike[str]) -> list[Path]:
    """Every patient at or under ``path``, in any format (see :func:`lgg.find_patients` for TIFF).

    NIfTI patients are folders of one patient's sequence files (each 4-D or unnamed file of a
    folder of several is its own patient); DICOM patients are study folders
    (:func:`brainseg_core.io.dicom.find_studies`).

    Args:
        path: a dataset root, a patient folder or a patient file.

    Returns:
        The patients, sorted by path.

    Raises:
        DataError: ``path`` does not exist or holds no patient in any format.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, "does not exist")
    fmt = patient_format(root)
    if root.is_file():  # a NIfTI or DICOM file, a TIFF stack, or the reason it is none of them
        return [root] if fmt is not PatientFormat.TIFF else lgg.find_patients(root)
    if fmt is PatientFormat.NIFTI and _nifti_patient_dir(root):
        return [root]
    if not any(not n.startswith(".") for n in os.listdir(root)):
        raise DataError(root, "is an empty folder")
    found: list[Path] = []
    with contextlib.suppress(DataError):  # no TIFF patient: the other formats may have some
        found += lgg.find_patients(root)
    found += _find_nifti(root)
    from brainseg_core.io.dicom import find_studies

    # one study is [root]; a folder of studies (series in subfolders or not) is each of them
    found += find_studies(root)
    if not found:
        raise DataError(
            root,
            "holds no patient folders: no TIFF slice folders (<patient>/<patient>_<n>.tif) or "
            "stacks, no NIfTI patients (<id>_flair.nii.gz, ...) and no DICOM studies",
        )
    return sorted(set(found), key=str)


def _find_nifti(root: Path) -> list[Path]:
    from brainseg_core.io.nifti import nifti_stem
    from brainseg_core.io.sequences import sequence_from_filename

    found: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if (here / lgg.EXPORT_SIDECAR).exists():
            dirnames[:] = []
            continue
        files = _nifti_files(here)
        if not files:
            continue
        if _nifti_patient_dir(here):
            found.append(here)
            dirnames[:] = []
        else:
            # a flat folder of several patients: each 4-D (unnamed) file is a patient
            found += [f for f in files if sequence_from_filename(nifti_stem(f)) is None]
    return found

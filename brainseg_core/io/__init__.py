"""Reading MRI patients: TIFF slice folders and stacks (LGG layout), NIfTI and DICOM.

``open_volume(path)`` reads one patient into a :class:`Volume` (axial slices, channels
pre-contrast, FLAIR, post-contrast, with the scan's geometry where the files carry it);
``find_patients(path)`` lists every patient under a dataset root; ``is_patient_dir(path)`` tells a
patient folder from other folders cheaply. :mod:`brainseg_core.io.patients` dispatches to the
readers: :mod:`~brainseg_core.io.lgg` (+ :mod:`~brainseg_core.io.tiff`),
:mod:`~brainseg_core.io.nifti` and :mod:`~brainseg_core.io.dicom`. Every user-facing failure is a
:class:`brainseg_core.errors.DataError` naming the file.
"""

from brainseg_core.io.patients import (
    PatientFormat,
    find_patients,
    is_patient_dir,
    open_volume,
    patient_format,
    patient_id_of,
)
from brainseg_core.io.tiff import TIFF_SUFFIXES
from brainseg_core.io.volume import CHANNELS, SkippedSlice, Volume

__all__ = [
    "CHANNELS",
    "TIFF_SUFFIXES",
    "PatientFormat",
    "SkippedSlice",
    "Volume",
    "find_patients",
    "is_patient_dir",
    "open_volume",
    "patient_format",
    "patient_id_of",
]

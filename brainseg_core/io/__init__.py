"""Reading MRI slices: patient folders (LGG layout), dataset roots and multi-page TIFF stacks.

``open_volume(path)`` reads one patient into a :class:`Volume`; ``find_patients(path)`` lists every
patient under a dataset root (the published Kaggle archive's duplicate nested copy found once);
``is_patient_dir(path)`` tells a patient folder from other folders by file names alone. See
:mod:`brainseg_core.io.lgg` for the layouts and rules and :mod:`brainseg_core.io.tiff` for the TIFF
variants accepted. Every user-facing failure is a :class:`brainseg_core.errors.DataError`.
"""

from brainseg_core.io.lgg import find_patients, is_patient_dir, open_volume, patient_id_of
from brainseg_core.io.tiff import TIFF_SUFFIXES
from brainseg_core.io.volume import CHANNELS, SkippedSlice, Volume

__all__ = [
    "CHANNELS",
    "TIFF_SUFFIXES",
    "SkippedSlice",
    "Volume",
    "find_patients",
    "is_patient_dir",
    "open_volume",
    "patient_id_of",
]

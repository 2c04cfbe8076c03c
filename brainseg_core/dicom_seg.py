"""DICOM Segmentation export (placeholder: the writer lands in the next commit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainseg_core.io.volume import Volume


def write_dicom_seg(
    volume: Volume, mask: np.ndarray, path: Path, *, algorithm: str, algorithm_version: str
) -> None:
    """Write a DICOM SEG (not yet)."""
    raise ValueError(f"{volume.patient_id}: DICOM SEG export is not available yet")

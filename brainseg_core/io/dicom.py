"""DICOM studies (placeholder: the reader lands in the next commit)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from brainseg_core.errors import DataError

if TYPE_CHECKING:
    from brainseg_core.io.sequences import Sequence
    from brainseg_core.io.volume import Volume


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (not yet: always False)."""
    return False


def holds_dicom(folder: Path) -> bool:
    """Whether ``folder`` holds a DICOM study (not yet: always False)."""
    return False


def find_studies(root: Path) -> list[Path]:
    """Every DICOM study under ``root`` (not yet: none)."""
    return []


def read_dicom_study(study: Path, *, choose: Mapping[Sequence, str] | None = None) -> Volume:
    """Read a DICOM study (not yet)."""
    raise DataError(study, "DICOM is not supported yet")

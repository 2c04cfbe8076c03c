"""Physical voxel size of a patient volume: :class:`Spacing`.

TIFF slices usually carry no physical size; DICOM and NIfTI do. A volume holds its spacing as one
immutable value (:attr:`brainseg_core.io.volume.Volume.spacing`), and every area in mm² and volume
in mL in BrainSeg is computed from it here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Spacing"]


def _positive_mm(name: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise ValueError(f"{name} must be a finite number of millimetres > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Spacing:
    """Voxel size in millimetres.

    Args:
        row_mm: distance between pixel rows.
        col_mm: distance between pixel columns.
        thickness_mm: distance between slices, or None when unknown (areas are then known, volumes
            are not).

    Raises:
        ValueError: for a value that is not a finite number > 0.
    """

    row_mm: float
    col_mm: float
    thickness_mm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_mm", _positive_mm("row spacing", self.row_mm))
        object.__setattr__(self, "col_mm", _positive_mm("column spacing", self.col_mm))
        if self.thickness_mm is not None:
            object.__setattr__(self, "thickness_mm", _positive_mm("slice thickness", self.thickness_mm))

    @classmethod
    def from_sequence(cls, values: Sequence[float] | None) -> Spacing | None:
        """Read ``(row, col)`` or ``(row, col, thickness)`` (settings, JSON), or None.

        Raises:
            ValueError: for another length or invalid values.
        """
        if values is None:
            return None
        if len(values) not in (2, 3):
            raise ValueError(f"spacing needs (row, col) or (row, col, thickness) in mm, got {list(values)!r}")
        return cls(*values)

    def to_list(self) -> list[float | None]:
        """``[row, col, thickness]`` in mm (thickness None when unknown), for JSON and settings."""
        return [self.row_mm, self.col_mm, self.thickness_mm]

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """``(row, col)`` pixel spacing in mm."""
        return self.row_mm, self.col_mm

    @property
    def pixel_mm2(self) -> float:
        """Area of one pixel in mm²."""
        return self.row_mm * self.col_mm

    @property
    def voxel_ml(self) -> float | None:
        """Volume of one voxel in mL, or None without a slice thickness."""
        return None if self.thickness_mm is None else self.pixel_mm2 * self.thickness_mm / 1000.0

    def area_mm2(self, pixels: int) -> float:
        """Area of ``pixels`` pixels in mm²."""
        return float(pixels * self.pixel_mm2)

    def volume_ml(self, voxels: int) -> float | None:
        """Volume of ``voxels`` voxels in mL, or None without a slice thickness."""
        voxel = self.voxel_ml
        return None if voxel is None else voxels * voxel

"""The in-memory representation of one patient's MRI slices."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainseg_core.spacing import Spacing

if TYPE_CHECKING:  # nibabel (0.3 s to import) loads only when a scan with geometry is opened
    from brainseg_core.geometry import Geometry


class PatientFormat(enum.StrEnum):
    """How a patient is stored."""

    TIFF = "tiff"
    NIFTI = "nifti"
    DICOM = "dicom"


#: Channel order of every image array in BrainSeg, as in the LGG dataset's RGB TIFFs.
CHANNELS: tuple[str, str, str] = ("pre-contrast", "FLAIR", "post-contrast")


@dataclass(frozen=True)
class SkippedSlice:
    """A slice file that could not be used, and why (shown to the user, never silently dropped)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Volume:
    """One patient's stack of slices, in slice order.

    Attributes:
        patient_id: folder name (e.g. ``TCGA_CS_4942_19970222``) or file stem of a stack.
        source: the patient folder or multi-page TIFF this volume was read from.
        slice_paths: image file of every slice (for a multi-page stack, the stack path repeated).
        slice_numbers: the number of every slice as written in its file name (1-based), or its
            1-based page index for stacks.
        images: ``(N, H, W, 3)`` uint8, channels in :data:`CHANNELS` order, at the source size.
        masks: ``(N, H, W)`` bool ground truth where ``_mask`` files exist for every slice, else None.
        spacing: the voxel size when the files carry it (LGG TIFFs carry none); a volume is not
            changed after reading, :meth:`with_spacing` returns a copy with a spacing the user gave.
            Taken from ``geometry`` when that is given and ``spacing`` is not.
        geometry: where the voxels are in the scanner (NIfTI and DICOM input): the reference
            (FLAIR) sequence's stored grid and its map to these display-ordered arrays (axial,
            radiological). None for TIFF input, which carries no geometry.
        reference_files: the reference sequence's files: the FLAIR NIfTI file, or the FLAIR
            series' DICOM instances in stored slice order (what a DICOM SEG references). Empty
            for TIFF input.
        channel_sources: the file or series each channel was read from, in channel order (empty
            for TIFF input, whose three channels are one file).
        format: how the patient is stored (TIFF, NIfTI, DICOM).
        skipped: slices that could not be read, with the reason.
        warnings: other problems worth showing that did not stop any slice from opening, each
            ``"<file>: <problem>"`` (e.g. why ground-truth masks were ignored, an orphan mask).
    """

    patient_id: str
    source: Path
    slice_paths: list[Path]
    slice_numbers: list[int]
    images: np.ndarray
    masks: np.ndarray | None = None
    spacing: Spacing | None = None
    skipped: list[SkippedSlice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    geometry: Geometry | None = None
    reference_files: tuple[Path, ...] = ()
    channel_sources: tuple[str, ...] = ()
    format: PatientFormat = PatientFormat.TIFF

    def __post_init__(self) -> None:
        if self.geometry is not None:
            if self.geometry.display_shape != self.images.shape[:3]:
                raise ValueError(
                    f"Volume.geometry is for a {self.geometry.display_shape} grid, the images are "
                    f"{self.images.shape[:3]}"
                )
            if self.spacing is None:
                object.__setattr__(self, "spacing", self.geometry.spacing)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"Volume.images must be (N, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        n = self.images.shape[0]
        if len(self.slice_paths) != n or len(self.slice_numbers) != n:
            raise ValueError("Volume.slice_paths and slice_numbers must have one entry per slice")
        if self.masks is not None and (
            self.masks.shape != self.images.shape[:3] or self.masks.dtype != np.bool_
        ):
            raise ValueError(
                f"Volume.masks must be (N, H, W) bool matching images, got {self.masks.shape} "
                f"{self.masks.dtype}"
            )

    def problem_lines(self) -> list[str]:
        """Every warning and skipped slice as one ``warning: ...`` line naming the file (for CLIs)."""
        return [f"warning: {w}" for w in self.warnings] + [
            f"warning: skipped {s.path}: {s.reason}" for s in self.skipped
        ]

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of every slice at the source size."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def has_masks(self) -> bool:
        """True when ground-truth masks were found for every slice."""
        return self.masks is not None

    def with_spacing(self, spacing: Spacing | None) -> Volume:
        """This volume with another voxel size (the arrays are shared, not copied)."""
        return dataclasses.replace(self, spacing=spacing)

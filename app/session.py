"""What the viewer knows about each patient: analysis state and results under the current thresholds.

A :class:`PatientRecord` keeps the pipeline's raw output (``base``: tumour and mask probabilities,
streamed slice by slice) and the same result re-thresholded for the viewer's current settings
(``shown``), computed with :func:`brainseg_core.inference.rethreshold` so moving a threshold
slider never re-runs a network.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainseg_core.inference import PatientResult, SliceResult, missing_segmentations, rethreshold
from brainseg_core.io import Volume, open_volume


class PatientState(enum.Enum):
    """Analysis state of one patient, as shown in the patient browser."""

    NEW = "Not analysed"
    QUEUED = "Queued"
    RUNNING = "Analysing"
    DONE = "Analysed"
    CANCELLED = "Cancelled"
    FAILED = "Failed"


@dataclass(frozen=True)
class Thresholds:
    """The viewer's thresholds.

    Attributes:
        gate: classifier gate on the slice tumour probability.
        mask: threshold on the pixel mask probability.
        min_area_px: smallest connected component kept, in source pixels; None = the value the
            pipeline used for each patient (the card's, scaled to the patient's slice size).
        largest_component: show only the patient's largest 3-D region (applied once a patient's
            analysis is complete, since it needs the whole volume).
    """

    gate: float
    mask: float
    min_area_px: int | None = None
    largest_component: bool = False

    def __post_init__(self) -> None:
        for name in ("gate", "mask"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name} must be within [0, 1], got {value}")
        if self.min_area_px is not None and self.min_area_px < 0:
            raise ValueError(f"min_area_px must be >= 0, got {self.min_area_px}")


@dataclass(frozen=True)
class Spacing:
    """Physical voxel size, when known.

    Attributes:
        pixel_mm: ``(row, col)`` pixel spacing in mm.
        thickness_mm: slice thickness in mm, or None.
    """

    pixel_mm: tuple[float, float]
    thickness_mm: float | None = None

    @property
    def voxel_ml(self) -> float | None:
        """Volume of one voxel in mL (None without a thickness)."""
        if self.thickness_mm is None:
            return None
        return self.pixel_mm[0] * self.pixel_mm[1] * self.thickness_mm / 1000.0


def read_volume(path: Path, spacing: Spacing | None) -> Volume:
    """Read one patient; a volume without its own pixel spacing gets the dataset's ``spacing``.

    Raises:
        DataError: when the patient cannot be read.
    """
    volume = open_volume(path)
    if volume.pixel_spacing_mm is None and spacing is not None:
        volume.pixel_spacing_mm = spacing.pixel_mm
        volume.slice_thickness_mm = spacing.thickness_mm
    return volume


def _summary(result: PatientResult, spacing: Spacing | None) -> PatientResult:
    voxels = sum(s.area_px for s in result.slices)
    voxel_ml = spacing.voxel_ml if spacing is not None else None
    return dataclasses.replace(
        result,
        tumour_slices=sum(1 for s in result.slices if s.area_px > 0),
        volume_voxels=voxels,
        volume_ml=None if voxel_ml is None else voxels * voxel_ml,
        pixel_spacing_mm=spacing.pixel_mm if spacing is not None else None,
        voxel_volume_ml=voxel_ml,
    )


@dataclass(eq=False)
class PatientRecord:
    """One patient of the opened folder.

    Attributes:
        path: the patient folder or stack file.
        patient_id: its id.
        state: analysis state.
        n_slices: number of slices once known.
        error: the last failure message, if any.
        base: the pipeline's output (probabilities kept), possibly partial while running.
        shown: ``base`` re-thresholded for the viewer's thresholds and spacing.
    """

    path: Path
    patient_id: str
    state: PatientState = PatientState.NEW
    n_slices: int | None = None
    error: str | None = None
    base: PatientResult | None = None
    shown: PatientResult | None = None

    @property
    def raw(self) -> list[SliceResult]:
        """Slices analysed so far (pipeline output)."""
        return [] if self.base is None else self.base.slices

    @property
    def complete(self) -> bool:
        """True when every slice has a result."""
        return self.base is not None and self.n_slices is not None and len(self.base.slices) == self.n_slices

    def tumour_slices(self) -> int | None:
        """Slices with a non-empty mask under the current thresholds (None before analysis)."""
        if self.shown is None or not self.shown.slices:
            return None
        return self.shown.tumour_slices

    def reset(self) -> None:
        """Forget the results (e.g. after the models changed)."""
        self.state = PatientState.NEW
        self.base = self.shown = None
        self.error = None

    def start(
        self, n_slices: int, *, models: dict[str, Any], device: str, pipeline_thresholds: Thresholds
    ) -> None:
        """Begin a new analysis: empty results carrying the pipeline's settings."""
        self.n_slices = n_slices
        self.state = PatientState.RUNNING
        self.error = None
        self.base = PatientResult(
            patient_id=self.patient_id,
            slices=[],
            tumour_slices=0,
            volume_voxels=0,
            volume_ml=None,
            classifier_threshold=pipeline_thresholds.gate,
            mask_threshold=pipeline_thresholds.mask,
            min_area_px=pipeline_thresholds.min_area_px or 0,
            models=models,
            device=device,
        )
        self.shown = dataclasses.replace(self.base, slices=[])

    def add(self, s: SliceResult, thresholds: Thresholds, spacing: Spacing | None) -> SliceResult:
        """Store one streamed slice result.

        Returns:
            The slice re-thresholded for ``thresholds`` (what the viewer shows).
        """
        if self.base is None or self.shown is None:
            raise RuntimeError("call start() before add()")
        self.base.slices.append(s)
        min_area = self._min_area(thresholds)
        shown = rethreshold(
            [s],
            classifier_threshold=thresholds.gate,
            mask_threshold=thresholds.mask,
            min_area_px=min_area,
            pixel_spacing_mm=spacing.pixel_mm if spacing else None,
        )[0]
        self.shown.slices.append(shown)
        self.shown = _summary(
            dataclasses.replace(
                self.shown,
                classifier_threshold=thresholds.gate,
                mask_threshold=thresholds.mask,
                min_area_px=min_area,
            ),
            spacing,
        )
        return shown

    def _min_area(self, thresholds: Thresholds) -> int:
        assert self.base is not None
        return self.base.min_area_px if thresholds.min_area_px is None else thresholds.min_area_px

    def apply(self, thresholds: Thresholds, spacing: Spacing | None) -> None:
        """Recompute :attr:`shown` for new thresholds or spacing (no network runs)."""
        if self.base is None:
            return
        # The base result never carries a spacing, so None here means "no spacing".
        out = rethreshold(
            self.base,
            classifier_threshold=thresholds.gate,
            mask_threshold=thresholds.mask,
            min_area_px=self._min_area(thresholds),
            pixel_spacing_mm=spacing.pixel_mm if spacing is not None else None,
            largest_component=thresholds.largest_component and self.state is PatientState.DONE,
        )
        assert isinstance(out, PatientResult)
        self.shown = _summary(out, spacing)

    def missing(self, thresholds: Thresholds) -> list[int]:
        """Slices the gate now admits that were never segmented (they need the segmenter)."""
        if self.base is None or not self.complete:
            return []
        return missing_segmentations(self.base, classifier_threshold=thresholds.gate)

    def slice_shown(self, index: int) -> SliceResult | None:
        """The displayed result of slice ``index``, None when not analysed yet."""
        if self.shown is None:
            return None
        slices = self.shown.slices
        if index < len(slices) and slices[index].index == index:
            return slices[index]
        for s in slices:
            if s.index == index:
                return s
        return None

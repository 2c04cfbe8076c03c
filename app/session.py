"""What the viewer knows about each patient: analysis state and results under the current thresholds.

A :class:`PatientRecord` keeps the pipeline's raw output (``base``: tumour and mask probabilities,
streamed slice by slice) and the same result re-thresholded for the viewer's current settings
(``shown``), computed with :func:`brainseg_core.inference.rethreshold` so moving a threshold
slider never re-runs a network.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brainseg_core.io import Volume, open_volume
from brainseg_core.results import (
    PatientResult,
    SliceResult,
    missing_segmentations,
    rethreshold,
    threshold_slice,
)
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds


class PatientState(enum.Enum):
    """Analysis state of one patient, as shown in the patient browser."""

    NEW = "Not analysed"
    QUEUED = "Queued"
    RUNNING = "Analysing"
    DONE = "Analysed"
    CANCELLED = "Cancelled"
    FAILED = "Failed"


def read_volume(path: Path, spacing: Spacing | None, series: Mapping[str, str] | None = None) -> Volume:
    """Read one patient; a volume without its own voxel size gets the dataset's ``spacing``.

    Args:
        path: the patient.
        spacing: the voxel size entered for it or its dataset.
        series: for a DICOM study, the series the reader chose per sequence (sequence name, e.g.
            ``"flair"``, to SeriesInstanceUID); None uses the guesses from the headers.

    Raises:
        DataError: when the patient cannot be read.
    """
    from brainseg_core.io.sequences import Sequence as MRSequence

    choose = None if series is None else {MRSequence(k): v for k, v in series.items()}
    return with_entered_spacing(open_volume(path, choose=choose), spacing)


def with_entered_spacing(volume: Volume, spacing: Spacing | None) -> Volume:
    """``volume`` with a voxel size the user entered, unless its files give their own."""
    return volume if volume.spacing is not None or spacing is None else volume.with_spacing(spacing)


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
        series: for a DICOM study, the series the reader confirmed per sequence (sequence name to
            SeriesInstanceUID); None until confirmed (the guesses from the headers are used).
    """

    path: Path
    patient_id: str
    state: PatientState = PatientState.NEW
    n_slices: int | None = None
    error: str | None = None
    base: PatientResult | None = None
    shown: PatientResult | None = None
    series: dict[str, str] | None = None

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

    def start(self, empty: PatientResult, n_slices: int) -> None:
        """Begin a new analysis: ``empty`` is the pipeline's result with no slices yet."""
        self.n_slices = n_slices
        self.state = PatientState.RUNNING
        self.error = None
        self.base = empty
        self.shown = empty

    def add(self, s: SliceResult, thresholds: Thresholds, spacing: Spacing | None) -> SliceResult:
        """Store one streamed slice result.

        Returns:
            The slice re-thresholded for ``thresholds`` (what the viewer shows).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self.base is None or self.shown is None:
            raise RuntimeError("call start() before add()")
        self.base = dataclasses.replace(self.base, slices=[*self.base.slices, s])
        shown = threshold_slice(s, thresholds, spacing=spacing, classified=self.base.classifier is not None)
        self.shown = dataclasses.replace(
            self.shown, slices=[*self.shown.slices, shown], thresholds=thresholds, spacing=spacing
        )
        return shown

    def apply(self, thresholds: Thresholds, spacing: Spacing | None) -> None:
        """Recompute :attr:`shown` for new thresholds or spacing (no network runs)."""
        if self.base is not None:
            self.shown = rethreshold(self.base.with_spacing(spacing), thresholds)

    def missing(self, thresholds: Thresholds) -> list[int]:
        """Slices the gate now admits that were never segmented (they need the segmenter)."""
        if self.base is None or not self.complete:
            return []
        return missing_segmentations(self.base, gate=thresholds.gate)

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

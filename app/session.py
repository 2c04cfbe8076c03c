"""What the viewer knows about each patient: analysis state and results under the current thresholds.

A :class:`PatientRecord` keeps the pipeline's raw output (``base``: tumour and mask probabilities,
streamed slice by slice) and the same result re-thresholded for the viewer's current settings
(``shown``), computed with :func:`brainseg_core.inference.rethreshold` so moving a threshold
slider never re-runs a network. The reader's work on the patient - edited masks
(:class:`~brainseg_core.edits.MaskEdits`) and the slices marked reviewed - lives in the record
too, apart from the analysis: ``shown`` carries the reader's mask on every edited slice whatever
the thresholds, and a new analysis never replaces it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainseg_core.edits import MaskEdits, apply_edits
from brainseg_core.io import PatientFormat, Volume, open_volume
from brainseg_core.results import (
    PatientResult,
    SliceResult,
    missing_segmentations,
    rethreshold,
    threshold_slice,
)
from brainseg_core.review import ReviewReason, review_queue, review_reasons
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds


@dataclass(frozen=True, eq=False)
class Rethresholded:
    """A patient's whole result re-thresholded off the GUI thread, for the record to take as it is.

    Analysis and segmentation jobs end with it: labelling the volume's 3-D regions (largest region,
    faint edges) takes tens of milliseconds per patient, which on the GUI thread froze the window
    at the end of every analysis.

    Attributes:
        base: the job's whole result (the pipeline's output, probabilities kept).
        result: ``rethreshold(base.with_spacing(spacing), thresholds)``.
        thresholds: the thresholds it was computed for.
        spacing: the voxel size it was computed with.
    """

    base: PatientResult
    result: PatientResult
    thresholds: Thresholds
    spacing: Spacing | None

    @classmethod
    def compute(cls, base: PatientResult, thresholds: Thresholds, spacing: Spacing | None) -> Rethresholded:
        """Re-threshold ``base`` for ``thresholds`` at ``spacing``."""
        return cls(base, rethreshold(base.with_spacing(spacing), thresholds), thresholds, spacing)


def record_thresholds(
    thresholds: Thresholds, base: PatientResult | None, input_size: int | None, *, done: bool
) -> Thresholds:
    """The thresholds a patient's result is shown with.

    Args:
        thresholds: the viewer's thresholds.
        base: the patient's result so far (None before its analysis).
        input_size: the segmenter's input size (None: not known yet).
        done: the whole volume has been analysed; before, the whole-volume steps (largest region,
            faint edges) are off.

    Returns:
        ``thresholds`` with the model's minimum area in this volume's pixels, as the pipeline scales
        it (also for an analysis saved under an earlier card of the same weights).
    """
    t = thresholds
    if base is not None and base.slices and input_size:
        t = t.at_size(base.slices[0].mask.shape, input_size)
    elif base is not None:
        t = t.replace(min_area_px=base.thresholds.min_area_px)
    if not done:
        t = t.replace(largest_component=False, edge=0.0)
    return t


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
    return with_entered_spacing(open_volume(path, choose=series), spacing)


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
        shown: ``base`` re-thresholded for the viewer's thresholds and spacing, with the reader's
            mask on every edited slice.
        model_shown: ``shown`` without the reader's edits (the model's masks).
        edits: the reader's edited masks and their undo history (kept when the results are reset).
        reviewed: the slices the reader marked reviewed.
        truth: the ground-truth masks once the volume was read (None: none, or not read yet).
        work_loaded: whether the reader's saved work was looked up already.
        series: for a DICOM study, the series the reader confirmed per sequence (sequence name to
            SeriesInstanceUID); None until confirmed (the guesses from the headers are used).
        format: the patient's file format once its volume was read (None before).
        file_spacing: the voxel size its files give, once read (None: they give none, or not read).
    """

    path: Path
    patient_id: str
    state: PatientState = PatientState.NEW
    n_slices: int | None = None
    error: str | None = None
    base: PatientResult | None = None
    shown: PatientResult | None = None
    series: dict[str, str] | None = None
    model_shown: PatientResult | None = None
    edits: MaskEdits = field(default_factory=MaskEdits)
    reviewed: set[int] = field(default_factory=set)
    truth: np.ndarray | None = None
    work_loaded: bool = False
    format: PatientFormat | None = None
    file_spacing: Spacing | None = None
    # what model_shown was computed from: (base, thresholds, spacing)
    _applied: tuple[PatientResult, Thresholds, Spacing | None] | None = field(default=None, repr=False)
    # the review reasons of (shown, truth): cached while neither changes
    _reasons: tuple[PatientResult | None, np.ndarray | None, list[tuple[ReviewReason, ...]]] = (
        None,
        None,
        [],
    )

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
        """Forget the results (e.g. after the models changed); the reader's work stays."""
        self.state = PatientState.NEW
        self.base = self.shown = self.model_shown = None
        self.error = None

    def start(self, empty: PatientResult, n_slices: int, fmt: PatientFormat) -> None:
        """Begin a new analysis: ``empty`` is the pipeline's result with no slices yet, on a volume
        of ``n_slices`` slices read from files of format ``fmt``."""
        self.n_slices = n_slices
        self.format = fmt
        self.state = PatientState.RUNNING
        self.error = None
        self.base = empty
        self.model_shown = empty
        self.shown = empty

    def add(self, s: SliceResult, thresholds: Thresholds, spacing: Spacing | None) -> SliceResult:
        """Store one streamed slice result.

        Returns:
            The slice re-thresholded for ``thresholds`` (what the viewer shows).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self.base is None or self.shown is None or self.model_shown is None:
            raise RuntimeError("call start() before add()")
        self.base = dataclasses.replace(self.base, slices=[*self.base.slices, s])
        model = threshold_slice(s, thresholds, spacing=spacing, classified=self.base.classifier is not None)
        self.model_shown = dataclasses.replace(
            self.model_shown, slices=[*self.model_shown.slices, model], thresholds=thresholds, spacing=spacing
        )
        one = apply_edits(dataclasses.replace(self.model_shown, slices=[model]), self.edits).slices[0]
        self.shown = dataclasses.replace(
            self.shown, slices=[*self.shown.slices, one], thresholds=thresholds, spacing=spacing
        )
        return one

    def apply(
        self, thresholds: Thresholds, spacing: Spacing | None, *, ready: Rethresholded | None = None
    ) -> None:
        """Recompute :attr:`shown` for new thresholds or spacing (no network runs); nothing is
        re-thresholded when the model's masks were computed from this :attr:`base` for these
        thresholds and spacing already.

        Args:
            thresholds: the thresholds to show the result with.
            spacing: the voxel size.
            ready: the same computed in the background; taken when it was computed for these
                thresholds and spacing from the very slices of :attr:`base`.
        """
        base = self.base
        if base is None:
            return
        applied = self._applied
        if applied is None or applied[0] is not base or applied[1:] != (thresholds, spacing):
            if (
                ready is not None
                and ready.thresholds == thresholds
                and ready.spacing == spacing
                and len(ready.base.slices) == len(base.slices)
                and all(a is b for a, b in zip(ready.base.slices, base.slices, strict=True))
            ):
                self.model_shown = ready.result
            else:
                self.model_shown = rethreshold(base.with_spacing(spacing), thresholds)
            self._applied = (base, thresholds, spacing)
        self.edits_changed()

    def edits_changed(self) -> None:
        """Show the reader's edits as they are now (no re-thresholding)."""
        if self.model_shown is not None:
            self.shown = apply_edits(self.model_shown, self.edits)

    def forget_reader_work(self) -> None:
        """Let go of the reader's work (saved beforehand) because another volume will be shown,
        such as other series of a DICOM study: that volume's own saved work is looked up."""
        self.edits = MaskEdits()
        self.reviewed = set()
        self.work_loaded = False
        self.edits_changed()

    def use_reader_work(self, masks: dict[int, np.ndarray], reviewed: set[int] | frozenset[int]) -> None:
        """Take the reader's saved work (edited masks without history, reviewed slices)."""
        self.edits = MaskEdits(masks)
        self.reviewed = set(reviewed)
        self.work_loaded = True
        self.edits_changed()

    # -- review ----------------------------------------------------------------------------------
    def review_reasons(self) -> list[tuple[ReviewReason, ...]]:
        """Per analysed slice, why it deserves a second look (see :mod:`brainseg_core.review`)."""
        shown = self.shown
        if shown is None:
            return []
        if self._reasons[0] is not shown or self._reasons[1] is not self.truth:
            truth = self.truth if self.truth is not None and len(self.truth) >= len(shown.slices) else None
            self._reasons = (shown, self.truth, review_reasons(shown, truth=truth))
        return self._reasons[2]

    def reasons_for(self, index: int) -> tuple[ReviewReason, ...]:
        """Slice ``index``'s review reasons (empty when none or not analysed)."""
        reasons = self.review_reasons()
        return reasons[index] if index < len(reasons) else ()

    def review_queue(self) -> list[int]:
        """The slices still to review: a reason, and neither marked reviewed nor edited."""
        return review_queue(self.review_reasons(), done=self.reviewed | set(self.edits.edited))

    def missing(self, thresholds: Thresholds) -> list[int]:
        """Slices the gate now admits that were never segmented (they need the segmenter)."""
        if self.base is None or not self.complete:
            return []
        return missing_segmentations(self.base, thresholds)

    def slice_shown(self, index: int) -> SliceResult | None:
        """The displayed result of slice ``index``, None when not analysed yet."""
        return _slice_at(self.shown, index)

    def model_slice(self, index: int) -> SliceResult | None:
        """The model's result of slice ``index`` (without the reader's edit), None when not
        analysed yet."""
        return _slice_at(self.model_shown, index)


def _slice_at(result: PatientResult | None, index: int) -> SliceResult | None:
    """Slice ``index`` of ``result`` (its slices are in order, from the first, while it streams)."""
    if result is None:
        return None
    slices = result.slices
    if index < len(slices) and slices[index].index == index:
        return slices[index]
    for s in slices:
        if s.index == index:
            return s
    return None

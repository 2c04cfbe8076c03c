"""What an analysis produces, and how thresholds turn its probabilities into masks.

:class:`SliceResult` and :class:`PatientResult` hold the networks' probabilities and the masks
under a :class:`~brainseg_core.thresholds.Thresholds`; :func:`rethreshold` recomputes the masks,
areas and volume from the stored probabilities without any network (the viewer calls it for every
move of a threshold slider), and :func:`missing_segmentations` lists the slices a lower gate admits
that the segmenter never read. Free of torch: the viewer opens, and saved analyses load, without it.
Connected components use full connectivity (8 neighbours in 2-D, 26 in 3-D), by scipy.ndimage.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from brainseg_core.model_kind import ModelKind
from brainseg_core.review import ReviewReason
from brainseg_core.thresholds import RegionRule, Thresholds

if TYPE_CHECKING:
    from brainseg_core.model_ref import ModelRef
    from brainseg_core.spacing import Spacing

__all__ = [
    "CONFIDENCE_POWER",
    "ENSEMBLE_KEY",
    "REVIEW_CONFIDENCE",
    "MaskSource",
    "PatientResult",
    "ReviewReason",
    "SliceResult",
    "extend_faint_edges",
    "keep_largest",
    "keep_largest_component",
    "label_components",
    "missing_segmentations",
    "neighbour_probabilities",
    "remove_small_components",
    "rethreshold",
    "set_aside",
    "threshold_slice",
    "volume_steps",
    "with_neighbours",
]


#: A classifier probability at or above this, on a slice whose final mask is empty, flags the slice
#: for review (:attr:`ReviewReason.CLASSIFIER_ONLY`).
REVIEW_CONFIDENCE = 0.5


class MaskSource(enum.StrEnum):
    """Whose mask a slice carries.

    Attributes:
        MODEL: the networks' mask under the thresholds.
        READER: the reader's edited mask (see :mod:`brainseg_core.edits`); thresholds and new
            analyses never replace it.
    """

    MODEL = "model"
    READER = "reader"


@dataclass(frozen=True)
class SliceResult:
    """The pipeline's output for one slice.

    Attributes:
        index: 0-based position in the volume.
        tumour_probability: classifier output (1.0 without a classifier or with ``segment_all``).
        segmented: True when the slice passed the classifier gate and has a mask probability map.
        mask_probability: ``(H, W)`` float32 sigmoid output at the source size, None when the
            segmenter has not run on this slice.
        mask: ``(H, W)`` bool final mask at the source size (all False when not segmented).
        area_px: pixels in ``mask``.
        area_mm2: area in mm² when the pixel spacing is known, else None.
        review: why this slice deserves a second look, else None (:class:`ReviewReason`: set by
            the slice's own thresholds and the whole-volume steps;
            :func:`brainseg_core.review.review_reasons` adds the reasons that need the whole
            patient).
        source: whose mask it is: the model's, or the reader's edit (:class:`MaskSource`).
        neighbour_probability: the highest tumour probability of the slices within the gate's
            reach (``Thresholds.gate_reach`` slices on either side), 0.0 when the reach is 0.
            Tumours span neighbouring slices and their first and last slices are their faintest,
            so a slice also passes the gate when a neighbour does (:attr:`gate_score`).
    """

    index: int
    tumour_probability: float
    segmented: bool
    mask_probability: np.ndarray | None
    mask: np.ndarray
    area_px: int
    area_mm2: float | None
    review: ReviewReason | None = None
    source: MaskSource = MaskSource.MODEL
    neighbour_probability: float = 0.0

    @property
    def gate_score(self) -> float:
        """What the classifier gate compares with its threshold: the slice's own tumour
        probability or its neighbours' (:attr:`neighbour_probability`), whichever is higher."""
        return max(self.tumour_probability, self.neighbour_probability)

    def passed_by_neighbour(self, gate: float) -> bool:
        """Whether the slice passes ``gate`` only through a neighbouring slice's probability."""
        return self.tumour_probability < gate <= self.gate_score


@dataclass(frozen=True)
class PatientResult:
    """The pipeline's output for one patient volume.

    Attributes:
        patient_id: the volume's patient id.
        slices: one :class:`SliceResult` per slice, in slice order (while a viewer streams an
            analysis, the slices done so far).
        thresholds: every threshold that shaped the masks (``min_area_px`` in this volume's
            pixels).
        segmenter: the segmenter that produced the mask probabilities.
        classifier: the classifier that produced the tumour probabilities, None when it was not
            run (no classifier, or every slice segmented).
        device: the device the networks ran on (``"cpu"`` after an out-of-memory fallback).
        spacing: the volume's voxel size when known (areas in mm², volumes in mL).
        flip_tta: whether the mask probabilities average each slice and its mirror.
        ensemble: the other segmenters whose mask probabilities were averaged with
            ``segmenter``'s (the "thorough" mode of a segmenter whose card names them).
    """

    patient_id: str
    slices: list[SliceResult]
    thresholds: Thresholds
    segmenter: ModelRef
    classifier: ModelRef | None
    device: str
    spacing: Spacing | None = None
    flip_tta: bool = False
    ensemble: tuple[ModelRef, ...] = ()

    @property
    def thorough(self) -> bool:
        """Whether thorough mode made it (flip TTA or other segmenters averaged in)."""
        return bool(self.flip_tta or self.ensemble)

    @property
    def tumour_slices(self) -> int:
        """Slices with a non-empty final mask."""
        return sum(1 for s in self.slices if s.area_px > 0)

    @property
    def volume_voxels(self) -> int:
        """Tumour voxels over all slices."""
        return sum(s.area_px for s in self.slices)

    @property
    def volume_ml(self) -> float | None:
        """Tumour volume in millilitres when the voxel size is known, else None."""
        return None if self.spacing is None else self.spacing.volume_ml(self.volume_voxels)

    def with_spacing(self, spacing: Spacing | None) -> PatientResult:
        """This result with another voxel size: areas in mm² and the volume follow it."""
        slices = [dataclasses.replace(s, area_mm2=_area_mm2(s.area_px, spacing)) for s in self.slices]
        return dataclasses.replace(self, slices=slices, spacing=spacing)

    def models_json(self) -> dict[str, Any]:
        """``{"classifier": {"name", "sha256"} | None, "segmenter": {...}}`` for reports, and
        ``"segmenter_ensemble": [{...}, ...]`` when other segmenters were averaged in."""
        out: dict[str, Any] = {
            ModelKind.CLASSIFIER.value: None if self.classifier is None else self.classifier.to_json(),
            ModelKind.SEGMENTER.value: self.segmenter.to_json(),
        }
        if self.ensemble:
            out[ENSEMBLE_KEY] = [m.to_json() for m in self.ensemble]
        return out


#: :meth:`PatientResult.models_json`'s key for the segmenters averaged with the segmenter.
ENSEMBLE_KEY = "segmenter_ensemble"


# ----------------------------------------------------------------------------------------------
# Connected components (full connectivity: 8 neighbours in 2-D, 26 in 3-D), by scipy.ndimage.


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the fully connected components of a 2-D or 3-D boolean mask.

    Args:
        mask: ``(H, W)`` or ``(N, H, W)`` boolean (or 0/non-0) array.

    Returns:
        ``(labels, n)``: int32 labels of the same shape, 0 for background and 1..n numbered in
        raster order of each component's first pixel, and the number of components.

    Raises:
        ValueError: if ``mask`` is neither 2-D nor 3-D.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D or 3-D mask, got shape {m.shape}")
    from scipy import ndimage  # 0.2 s to import: on first use (the viewer: before its window)

    labels, n = ndimage.label(m, structure=np.ones((3,) * m.ndim, bool), output=np.int32)
    return labels, int(n)


#: :attr:`RegionRule.MOST_CONFIDENT` weighs each pixel by its probability to this power: a region's
#: confident core outweighs a wide faint one (chosen on folds 0-2 of the cross-validation and
#: checked on folds 3-4 before it was shipped; README).
CONFIDENCE_POWER = 4


def keep_largest_component(masks: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
    """Keep only one 26-connected component of a ``(N, H, W)`` volume mask: the largest, or with
    ``probabilities`` the most confident (:attr:`RegionRule.MOST_CONFIDENT`).

    Keeping the largest is the post-processing of Buda et al. (the LGG dataset's authors) before
    scoring. It hides every other region, so BrainSeg applies it only when asked
    (``largest_component``).

    Args:
        masks: ``(N, H, W)`` boolean masks of one patient.
        probabilities: ``(N, H, W)`` mask probabilities: keep the region with the largest sum of
            ``p ** CONFIDENCE_POWER`` instead of the most pixels (ties: the first region in raster
            order). Any common scale serves (``[0, 1]`` or the uint8 ``0..255`` of the stores):
            scaling every ``p`` by ``c`` scales every sum by ``c ** CONFIDENCE_POWER``.

    Returns:
        A new boolean array of the same shape.

    Raises:
        ValueError: if ``probabilities`` has another shape than ``masks``.
    """
    labels, n = label_components(masks)
    if n <= 1:
        return labels > 0
    if probabilities is None:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
    else:
        p = np.asarray(probabilities)
        if p.shape != labels.shape:
            raise ValueError(f"probabilities of shape {p.shape} do not match masks of shape {labels.shape}")
        inside = labels > 0  # only the regions' pixels are weighed: a few % of the volume
        weights = p[inside].astype(np.float64) ** CONFIDENCE_POWER
        sizes = np.bincount(labels[inside], weights=weights, minlength=n + 1)
    sizes[0] = -1
    return labels == int(sizes.argmax())


def _probabilities(slices: list[SliceResult]) -> np.ndarray:
    """``(N, H, W)`` the slices' mask probabilities, 0 where the segmenter did not read."""
    return np.stack(
        [
            s.mask_probability
            if s.segmented and s.mask_probability is not None
            else np.zeros(s.mask.shape, np.float32)
            for s in slices
        ]
    )


def remove_small_components(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """Drop the 8-connected components of a 2-D ``mask`` with fewer than ``min_area_px`` pixels.

    Args:
        mask: ``(H, W)`` boolean mask.
        min_area_px: smallest component kept; 0 or 1 keeps everything.

    Returns:
        A new ``(H, W)`` boolean mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_area_px <= 1 or not mask.any():
        return mask.copy()
    labels, n = label_components(mask)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_area_px
    keep[0] = False
    return keep[labels]


# ----------------------------------------------------------------------------------------------
# Thresholds -> masks and summaries (no networks).


def _area_mm2(area_px: int, spacing: Spacing | None) -> float | None:
    return None if spacing is None else spacing.area_mm2(area_px)


def neighbour_probabilities(probabilities: np.ndarray, reach: int) -> np.ndarray:
    """Each slice's highest neighbouring tumour probability within ``reach`` slices.

    Args:
        probabilities: ``(N,)`` tumour probabilities of consecutive slices, in slice order.
        reach: how many slices on either side count (0: none).

    Returns:
        ``(N,)`` float64: for slice ``i`` the largest of ``probabilities[i - reach : i + reach + 1]``
        without ``i`` itself (0.0 where there is none).

    Raises:
        ValueError: for a negative or fractional ``reach`` or probabilities that are not 1-D.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 1:
        raise ValueError(f"probabilities must be one value per slice, got shape {p.shape}")
    if isinstance(reach, bool) or not isinstance(reach, int | np.integer) or reach < 0:
        raise ValueError(f"reach must be a whole number of slices >= 0, got {reach!r}")
    out = np.zeros_like(p)
    for d in range(1, min(int(reach), len(p) - 1) + 1):
        out[d:] = np.maximum(out[d:], p[:-d])
        out[:-d] = np.maximum(out[:-d], p[d:])
    return out


def threshold_slice(
    result: SliceResult, thresholds: Thresholds, *, spacing: Spacing | None, classified: bool
) -> SliceResult:
    """One slice's mask, area and review flag for ``thresholds``, from its stored probabilities.

    ``thresholds.largest_component`` is a whole-volume choice and is not applied here (see
    :func:`rethreshold`).

    Args:
        result: the slice (its probabilities are kept).
        thresholds: the gate, mask threshold and minimum area to apply.
        spacing: the voxel size for the area in mm², or None.
        classified: whether the tumour probability came from a classifier (a confident classifier
            over an empty mask flags the slice for review).

    Returns:
        A new :class:`SliceResult`.
    """
    passes_gate = result.gate_score >= thresholds.gate
    probability = result.mask_probability
    if passes_gate and probability is not None:
        mask = remove_small_components(probability >= thresholds.mask, thresholds.min_area_px)
    else:
        mask = np.zeros(result.mask.shape, bool)
    area = int(mask.sum())
    segmented = passes_gate and probability is not None
    confident = classified and passes_gate and result.tumour_probability >= REVIEW_CONFIDENCE
    return SliceResult(
        index=result.index,
        tumour_probability=float(result.tumour_probability),
        segmented=segmented,
        mask_probability=probability,
        mask=mask,
        area_px=area,
        area_mm2=_area_mm2(area, spacing),
        review=ReviewReason.CLASSIFIER_ONLY if confident and segmented and area == 0 else None,
        neighbour_probability=result.neighbour_probability,
    )


def keep_largest(
    slices: list[SliceResult], spacing: Spacing | None, rule: RegionRule = RegionRule.LARGEST
) -> list[SliceResult]:
    """``slices`` with only one of the patient's 3-D regions kept, the one ``rule`` picks (the
    largest, or the most confident); every slice that lost outline to
    it (all of it, or a second region beside the kept one) is flagged
    :attr:`ReviewReason.OUTSIDE_LARGEST_REGION`, so the review queue leads the reader to what was
    set aside (:func:`set_aside`)."""
    if not any(s.area_px for s in slices):
        return slices
    masks = np.stack([s.mask for s in slices])
    confidence = _probabilities(slices) if rule is RegionRule.MOST_CONFIDENT else None
    kept = keep_largest_component(masks, confidence)
    return [
        dataclasses.replace(
            s,
            mask=m,
            area_px=int(m.sum()),
            area_mm2=_area_mm2(int(m.sum()), spacing),
            review=ReviewReason.OUTSIDE_LARGEST_REGION if int(m.sum()) < s.area_px else s.review,
        )
        for s, m in zip(slices, kept, strict=True)
    ]


def set_aside(shown: SliceResult, thresholds: Thresholds) -> np.ndarray | None:
    """The outline that only the largest-3-D-region step took from a displayed slice.

    With ``thresholds.largest_component`` the patient keeps one 3-D region; a second lesion goes,
    on its own slices (flagged :attr:`ReviewReason.OUTSIDE_LARGEST_REGION`) and beside the kept
    outline on shared ones; both kinds of slice are flagged
    :attr:`ReviewReason.OUTSIDE_LARGEST_REGION`. The reader still has to see it to judge it: the
    viewer draws it dotted and can keep it as the reader's mask.

    Args:
        shown: a slice after :func:`rethreshold` under ``thresholds`` (its probabilities kept).
        thresholds: the thresholds it was shown with.

    Returns:
        ``(H, W)`` bool, the pixels the slice's own thresholds outline and its shown mask does not
        hold; None when the step is off, the mask is the reader's, or nothing was set aside.
    """
    if not thresholds.largest_component or shown.source is MaskSource.READER:
        return None
    own = threshold_slice(shown, thresholds, spacing=None, classified=False).mask
    aside = own & ~shown.mask
    return aside if aside.any() else None


def extend_faint_edges(
    masks: np.ndarray, probabilities: np.ndarray, edge: float, *, labels: np.ndarray | None = None
) -> np.ndarray:
    """Outline a tumour's faint slices: on each slice without outline, the pixels whose probability
    reaches ``edge`` and that connect (26-connected, in 3-D, through such pixels) to an outline.

    A tumour's first and last slices are its faintest: their probabilities stay under the mask
    threshold, although they continue an outline next to them. Out-of-fold, on the 80 LGG patients,
    this lifts tumour-slice recall by about three points without changing Dice (README).

    Args:
        masks: ``(N, H, W)`` bool, one patient's outlines under the other thresholds.
        probabilities: ``(N, H, W)`` mask probabilities (0 where the segmenter did not read).
        edge: the probability a faint pixel needs (0: nothing changes).
        labels: :func:`label_components` of ``probabilities >= edge`` when already at hand (a
            cross-validation scores many choices on the same probabilities).

    Returns:
        The masks with the faint slices' pixels added (outlined slices unchanged; ``masks``
        itself when there is nothing to add).
    """
    empty: np.ndarray = ~np.asarray(masks.any(axis=(1, 2)))
    if edge <= 0 or not empty.any() or empty.all():
        return masks
    if labels is None:
        labels, _ = label_components(probabilities >= edge)
    touched = np.unique(labels[masks])
    return masks | (np.isin(labels, touched[touched > 0]) & empty[:, None, None])


def volume_steps(
    slices: list[SliceResult], thresholds: Thresholds, spacing: Spacing | None
) -> list[SliceResult]:
    """The whole-volume steps after each slice's threshold: only one 3-D region, the largest or the
    most confident (``largest_component``, ``region_rule``, :func:`keep_largest`), then the faint
    edges (``edge``,
    :func:`extend_faint_edges`; the slices they outline are flagged :attr:`ReviewReason.FAINT_EDGE`).

    Args:
        slices: every slice of one patient, in order, each thresholded (:func:`threshold_slice`).
        thresholds: the thresholds.
        spacing: the voxel size for areas in mm², or None.
    """
    if thresholds.largest_component:
        slices = keep_largest(slices, spacing, thresholds.region_rule)
    if thresholds.edge <= 0 or not slices:
        return slices
    masks = np.stack([s.mask for s in slices])
    probabilities = _probabilities(slices)
    grown = extend_faint_edges(masks, probabilities, thresholds.edge)
    return [
        dataclasses.replace(
            s,
            mask=m,
            area_px=int(m.sum()),
            area_mm2=_area_mm2(int(m.sum()), spacing),
            # a removed region stays named: the reader sees why the firm outline went
            review=s.review if s.review is ReviewReason.OUTSIDE_LARGEST_REGION else ReviewReason.FAINT_EDGE,
        )
        if m.any() and not s.area_px
        else s
        for s, m in zip(slices, grown, strict=True)
    ]


def rethreshold(result: PatientResult, thresholds: Thresholds | None = None) -> PatientResult:
    """Recompute masks, areas and the summary for new thresholds from stored probabilities.

    Pure and fast (no network runs): the viewer calls it for every move of a threshold slider.
    Mask probabilities are kept on every slice, also those the new gate excludes, so raising and
    lowering the gate again is lossless. A slice that the new gate admits but that was never
    segmented comes back with ``segmented=False`` and an empty mask; :func:`missing_segmentations`
    lists those and :meth:`Pipeline.segment_slices` fills them in. A new ``gate_reach``
    recomputes every slice's neighbour probability from the stored tumour probabilities (so
    ``result`` must then hold the whole volume).

    Args:
        result: the patient's result.
        thresholds: the new thresholds (default: the result's own, e.g. after new probabilities
            were filled in); ``min_area_px`` is in this volume's pixels.

    Returns:
        A new :class:`PatientResult` carrying ``thresholds``; ``result`` is not modified.
    """
    thresholds = result.thresholds if thresholds is None else thresholds
    classified = result.classifier is not None
    slices = result.slices
    if classified and thresholds.gate_reach != result.thresholds.gate_reach:
        slices = with_neighbours(slices, thresholds.gate_reach)
    slices = [threshold_slice(s, thresholds, spacing=result.spacing, classified=classified) for s in slices]
    return dataclasses.replace(
        result, slices=volume_steps(slices, thresholds, result.spacing), thresholds=thresholds
    )


def missing_segmentations(result: PatientResult, thresholds: Thresholds | None = None) -> list[int]:
    """Indices of slices that pass the classifier gate but have no mask probability yet.

    Args:
        result: the patient's result (the whole volume when ``thresholds`` has another gate reach).
        thresholds: the thresholds whose gate and gate reach count (default: the result's).

    Returns:
        Slice indices, ascending; empty when :func:`rethreshold` alone is enough.
    """
    thresholds = result.thresholds if thresholds is None else thresholds
    slices = result.slices
    if thresholds.gate_reach != result.thresholds.gate_reach:
        slices = with_neighbours(slices, thresholds.gate_reach)
    return [s.index for s in slices if s.gate_score >= thresholds.gate and s.mask_probability is None]


def with_neighbours(slices: list[SliceResult], reach: int) -> list[SliceResult]:
    """``slices`` (consecutive, in slice order) with :attr:`SliceResult.neighbour_probability`
    recomputed from their tumour probabilities for a gate reach of ``reach`` slices."""
    near = neighbour_probabilities(np.array([s.tumour_probability for s in slices]), reach)
    return [dataclasses.replace(s, neighbour_probability=float(v)) for s, v in zip(slices, near, strict=True)]

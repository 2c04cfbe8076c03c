"""Classifier-gated segmentation of one patient volume: :class:`Pipeline` and its results.

For each batch of slices, in slice order, the pipeline

1. normalises the slices exactly as in training (:func:`brainseg_core.preprocessing.preprocess_volume`
   with the statistics of the whole volume, computed once per volume),
2. runs the classifier and keeps the slices whose tumour probability is at least the classifier
   threshold (every slice with ``segment_all=True`` or without a classifier),
3. runs the segmenter on those slices, resizes the sigmoid probability map back to the source size
   (:func:`brainseg_core.preprocessing.resize_prob`), thresholds it, and removes connected
   components (8-connected) smaller than ``min_area_px``,
4. yields one :class:`SliceResult` per slice.

Thresholds can be changed afterwards without running the networks: :func:`rethreshold` recomputes
masks, areas and the patient summary from the stored probabilities. A slice that was below the
original classifier gate has no stored mask probability; when a lower gate admits it,
:func:`missing_segmentations` lists it and :meth:`Pipeline.segment_slices` fills it in::

    new = rethreshold(result, classifier_threshold=0.2)   # instant
    if missing_segmentations(new):                          # needs the segmenter
        new = pipeline.segment_slices(volume, new)
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import ndimage

from brainseg_core.errors import BundleError, Cancelled, DataError
from brainseg_core.inference.device import (
    ExecutionPlan,
    autocast,
    forward_batch_size,
    resolve_device,
    resolve_precision,
    run_batched,
)
from brainseg_core.preprocessing import channel_stats, preprocess_volume, resize_prob

if TYPE_CHECKING:
    from brainseg_core.bundle import ModelBundle
    from brainseg_core.io.volume import Volume

__all__ = [
    "PatientResult",
    "Pipeline",
    "ReviewReason",
    "SliceResult",
    "cancel_checker",
    "keep_largest_component",
    "label_components",
    "missing_segmentations",
    "remove_small_components",
    "rethreshold",
]

ProgressFn = Callable[[int, int], None]
CancelArg = threading.Event | Callable[[], bool] | None

DEFAULT_CLASSIFIER_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5
#: A classifier probability at or above this, on a slice whose final mask is empty, flags the slice
#: for review (:attr:`ReviewReason.CLASSIFIER_ONLY`).
REVIEW_CONFIDENCE = 0.5


class ReviewReason(enum.StrEnum):
    """Why a slice needs a reader's look although its final mask is empty.

    Attributes:
        CLASSIFIER_ONLY: the classifier calls the slice tumour with confidence
            (>= :data:`REVIEW_CONFIDENCE`) but the segmenter outlined nothing there (or only regions
            below the minimum area).
        OUTSIDE_LARGEST_REGION: the segmenter outlined tumour on this slice, but it was removed
            because it is not part of the patient's largest 3-D region.
    """

    CLASSIFIER_ONLY = "classifier_only"
    OUTSIDE_LARGEST_REGION = "outside_largest_region"

    def describe(self) -> str:
        """A sentence for a reader."""
        return {
            ReviewReason.CLASSIFIER_ONLY: "classifier says tumour but the segmenter outlined nothing",
            ReviewReason.OUTSIDE_LARGEST_REGION: "outline removed: not part of the largest 3-D region",
        }[self]


@dataclass
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
        review: why this slice should be looked at although its final mask is empty, else None
            (:class:`ReviewReason`).
    """

    index: int
    tumour_probability: float
    segmented: bool
    mask_probability: np.ndarray | None
    mask: np.ndarray
    area_px: int
    area_mm2: float | None
    review: ReviewReason | None = None


@dataclass
class PatientResult:
    """The pipeline's output for one patient volume.

    Attributes:
        patient_id: the volume's patient id.
        slices: one :class:`SliceResult` per slice, in slice order.
        tumour_slices: slices with a non-empty final mask.
        volume_voxels: tumour voxels over all slices.
        volume_ml: tumour volume in millilitres when the voxel size is known, else None.
        classifier_threshold: gate on the tumour probability.
        mask_threshold: threshold on the mask probability.
        min_area_px: smallest connected component kept.
        models: ``{"classifier": {"name", "sha256"} | None, "segmenter": {"name", "sha256"}}``,
            the models that produced the probabilities (classifier None when it was not run).
        device: the device the networks ran on (``"cpu"`` after an out-of-memory fallback).
        pixel_spacing_mm: the volume's ``(row, col)`` pixel spacing, kept for :func:`rethreshold`.
        voxel_volume_ml: the volume's voxel size in mL, kept for :func:`rethreshold`.
        largest_component: whether only the largest 3-D connected region was kept
            (:func:`keep_largest_component`).
    """

    patient_id: str
    slices: list[SliceResult]
    tumour_slices: int
    volume_voxels: int
    volume_ml: float | None
    classifier_threshold: float
    mask_threshold: float
    min_area_px: int
    models: dict[str, Any]
    device: str
    pixel_spacing_mm: tuple[float, float] | None = None
    voxel_volume_ml: float | None = field(default=None)
    largest_component: bool = False


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
    labels, n = ndimage.label(m, structure=np.ones((3,) * m.ndim, bool), output=np.int32)
    return labels, int(n)


def keep_largest_component(masks: np.ndarray) -> np.ndarray:
    """Keep only the largest 26-connected component of a ``(N, H, W)`` volume mask.

    This is the post-processing of Buda et al. (the LGG dataset's authors) before scoring. It
    hides every smaller region, so BrainSeg applies it only when asked (``largest_component``).

    Args:
        masks: ``(N, H, W)`` boolean masks of one patient.

    Returns:
        A new boolean array of the same shape.
    """
    labels, n = label_components(masks)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels == int(sizes.argmax())


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


def _check_probability(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
    return float(value)


def _check_min_area(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"min_area_px must be a whole number of pixels >= 0, got {value!r}")
    return value


def _area_mm2(area_px: int, spacing: tuple[float, float] | None) -> float | None:
    return None if spacing is None else float(area_px * spacing[0] * spacing[1])


def _finish_slice(
    index: int,
    tumour_probability: float,
    mask_probability: np.ndarray | None,
    shape: tuple[int, int],
    *,
    passes_gate: bool,
    mask_threshold: float,
    min_area_px: int,
    spacing: tuple[float, float] | None,
    classified: bool,
) -> SliceResult:
    segmented = passes_gate and mask_probability is not None
    if segmented:
        mask = remove_small_components(mask_probability >= mask_threshold, min_area_px)
    else:
        mask = np.zeros(shape, bool)
    area = int(mask.sum())
    confident = classified and passes_gate and tumour_probability >= REVIEW_CONFIDENCE
    return SliceResult(
        review=ReviewReason.CLASSIFIER_ONLY if confident and segmented and area == 0 else None,
        index=index,
        tumour_probability=float(tumour_probability),
        segmented=segmented,
        mask_probability=mask_probability,
        mask=mask,
        area_px=area,
        area_mm2=_area_mm2(area, spacing),
    )


def _summarise(
    patient_id: str,
    slices: list[SliceResult],
    *,
    classifier_threshold: float,
    mask_threshold: float,
    min_area_px: int,
    models: dict[str, Any],
    device: str,
    spacing: tuple[float, float] | None,
    voxel_volume_ml: float | None,
    largest_component: bool = False,
) -> PatientResult:
    if largest_component and any(s.area_px for s in slices):
        kept = keep_largest_component(np.stack([s.mask for s in slices]))
        slices = [
            dataclasses.replace(
                s,
                mask=m,
                area_px=int(m.sum()),
                area_mm2=_area_mm2(int(m.sum()), spacing),
                review=ReviewReason.OUTSIDE_LARGEST_REGION if s.area_px and not m.any() else s.review,
            )
            for s, m in zip(slices, kept, strict=True)
        ]
    voxels = sum(s.area_px for s in slices)
    return PatientResult(
        patient_id=patient_id,
        slices=slices,
        tumour_slices=sum(1 for s in slices if s.area_px > 0),
        volume_voxels=voxels,
        volume_ml=None if voxel_volume_ml is None else voxels * voxel_volume_ml,
        classifier_threshold=classifier_threshold,
        mask_threshold=mask_threshold,
        min_area_px=min_area_px,
        models=models,
        device=device,
        pixel_spacing_mm=spacing,
        voxel_volume_ml=voxel_volume_ml,
        largest_component=largest_component,
    )


def rethreshold(
    result: PatientResult | Sequence[SliceResult],
    *,
    classifier_threshold: float | None = None,
    mask_threshold: float | None = None,
    min_area_px: int | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    voxel_volume_ml: float | None = None,
    largest_component: bool | None = None,
) -> PatientResult | list[SliceResult]:
    """Recompute masks, areas and the summary for new thresholds from stored probabilities.

    Pure and fast (no network runs): the viewer calls it for every move of a threshold slider.
    Mask probabilities are kept on every slice, also those the new gate excludes, so raising and
    lowering the gate again is lossless. A slice that the new gate admits but that was never
    segmented comes back with ``segmented=False`` and an empty mask; :func:`missing_segmentations`
    lists those and :meth:`Pipeline.segment_slices` fills them in.

    Args:
        result: a :class:`PatientResult`, or a sequence of :class:`SliceResult` (then thresholds
            not given default to 0.5 / 0.5 / 0).
        classifier_threshold: new gate on the tumour probability (default: the result's).
        mask_threshold: new threshold on the mask probability (default: the result's).
        min_area_px: new smallest component (default: the result's).
        pixel_spacing_mm: spacing for areas in mm² (default: the result's).
        voxel_volume_ml: voxel size for the volume in mL (default: the result's).
        largest_component: keep only the largest 3-D connected region (default: the result's;
            needs a :class:`PatientResult`, a list of slices is not a volume).

    Returns:
        A new :class:`PatientResult` for a result, a new list of :class:`SliceResult` for slices;
        the input is not modified.

    Raises:
        ValueError: for a threshold outside [0, 1] or a negative ``min_area_px``.
    """
    if isinstance(result, PatientResult):
        slices = result.slices
        ct = result.classifier_threshold if classifier_threshold is None else classifier_threshold
        mt = result.mask_threshold if mask_threshold is None else mask_threshold
        ma = result.min_area_px if min_area_px is None else min_area_px
        spacing = result.pixel_spacing_mm if pixel_spacing_mm is None else pixel_spacing_mm
        vml = result.voxel_volume_ml if voxel_volume_ml is None else voxel_volume_ml
        largest = result.largest_component if largest_component is None else largest_component
    else:
        if largest_component:
            raise ValueError("largest_component needs a PatientResult (the whole volume)")
        slices = list(result)
        ct = DEFAULT_CLASSIFIER_THRESHOLD if classifier_threshold is None else classifier_threshold
        mt = DEFAULT_MASK_THRESHOLD if mask_threshold is None else mask_threshold
        ma = 0 if min_area_px is None else min_area_px
        spacing, vml = pixel_spacing_mm, voxel_volume_ml
    ct = _check_probability("classifier_threshold", ct)
    mt = _check_probability("mask_threshold", mt)
    ma = _check_min_area(ma)
    classified = isinstance(result, PatientResult) and result.models.get("classifier") is not None
    new = [
        _finish_slice(
            s.index,
            s.tumour_probability,
            s.mask_probability,
            s.mask.shape,
            passes_gate=s.tumour_probability >= ct,
            mask_threshold=mt,
            min_area_px=ma,
            spacing=spacing,
            classified=classified,
        )
        for s in slices
    ]
    if not isinstance(result, PatientResult):
        return new
    return _summarise(
        result.patient_id,
        new,
        classifier_threshold=ct,
        mask_threshold=mt,
        min_area_px=ma,
        models=result.models,
        device=result.device,
        spacing=spacing,
        voxel_volume_ml=vml,
        largest_component=largest,
    )


def missing_segmentations(
    result: PatientResult | Sequence[SliceResult], classifier_threshold: float | None = None
) -> list[int]:
    """Indices of slices that pass the classifier gate but have no mask probability yet.

    Args:
        result: a :class:`PatientResult` or its slices.
        classifier_threshold: the gate (default: the result's; required for a list of slices).

    Returns:
        Slice indices, ascending; empty when :func:`rethreshold` alone is enough.

    Raises:
        ValueError: if no gate is given for a list of slices, or it is not a probability.
    """
    if isinstance(result, PatientResult):
        slices = result.slices
        gate = result.classifier_threshold if classifier_threshold is None else classifier_threshold
    else:
        slices = list(result)
        if classifier_threshold is None:
            raise ValueError("pass classifier_threshold when giving a list of slices")
        gate = classifier_threshold
    gate = _check_probability("classifier_threshold", gate)
    return [s.index for s in slices if s.tumour_probability >= gate and s.mask_probability is None]


# ----------------------------------------------------------------------------------------------
# The pipeline.


def cancel_checker(cancel: CancelArg) -> Callable[[], bool]:
    """Turn a ``cancel`` argument (Event, zero-arg callable or None) into a zero-arg predicate.

    Raises:
        TypeError: for anything else.
    """
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable returning bool, got {type(cancel)}")


def _model_info(bundle: ModelBundle) -> dict[str, str]:
    return {"name": bundle.card.name, "sha256": bundle.card.weights_sha256}


def _card_threshold(bundle: ModelBundle, key: str, default: float) -> float:
    thresholds = bundle.card.thresholds or {}
    return thresholds.get(key, default)


class Pipeline:
    """Classifier-gated segmentation of patient volumes (see the module docstring).

    The models are moved to the chosen device in place (the bundles' modules are shared, not
    copied). One pipeline runs one volume at a time; use it from one thread.

    Args:
        classifier: the slice classifier bundle, or None to segment every slice.
        segmenter: the segmenter bundle.
        device: ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
        batch_size: slices per streamed batch (progress and cancel granularity) and per forward
            pass on a GPU, where it is halved automatically on out-of-memory (the pipeline moves
            to the CPU if one slice does not fit). On the CPU forward passes take at most
            :data:`~brainseg_core.inference.device.CPU_FORWARD_BATCH` slices, which is faster.
        classifier_threshold: gate on the tumour probability (default: the classifier card's
            ``thresholds.tumour_probability``, else 0.5).
        mask_threshold: threshold on the mask probability (default: the segmenter card's
            ``thresholds.mask_probability``, else 0.5).
        min_area_px: smallest connected component kept, in source pixels (default: the segmenter
            card's ``thresholds.min_area_px``, which is measured at the model's input size and is
            scaled to each volume's slice size, see :meth:`min_area_for`; else 0).
        segment_all: segment every slice without running the classifier.
        largest_component: keep only the largest 3-D connected region of the patient's mask
            (default: the segmenter card's ``thresholds.largest_component``, else False). It
            applies to the :class:`PatientResult` (:meth:`analyse`), not to streamed slices.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast (see
            :func:`brainseg_core.inference.device.resolve_precision`).
        flip_tta: "thorough" mode: average each slice's mask probabilities with those of its
            left-right mirror (test-time augmentation). Doubles the segmenter's cost; its
            cross-validated gain is in the README.

    Raises:
        ValueError: for an invalid argument or an unavailable device.
        BundleError: when a bundle of the wrong kind is passed (e.g. classifier and segmenter
            swapped).
    """

    def __init__(
        self,
        classifier: ModelBundle | None,
        segmenter: ModelBundle,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        classifier_threshold: float | None = None,
        mask_threshold: float | None = None,
        min_area_px: int | None = None,
        segment_all: bool = False,
        largest_component: bool | None = None,
        precision: str = "auto",
        flip_tta: bool = False,
    ) -> None:
        if segmenter is None:
            raise ValueError("a segmenter bundle is required")
        for bundle, kind in ((classifier, "classifier"), (segmenter, "segmenter")):
            if bundle is not None and bundle.card.kind != kind:
                raise BundleError(bundle.path, f"is a {bundle.card.kind} bundle but was given as the {kind}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.classifier = classifier
        self.segmenter = segmenter
        self.segment_all = bool(segment_all)
        self.flip_tta = bool(flip_tta)
        self.batch_size = batch_size
        if classifier_threshold is None:
            classifier_threshold = (
                DEFAULT_CLASSIFIER_THRESHOLD
                if classifier is None
                else _card_threshold(classifier, "tumour_probability", DEFAULT_CLASSIFIER_THRESHOLD)
            )
        if mask_threshold is None:
            mask_threshold = _card_threshold(segmenter, "mask_probability", DEFAULT_MASK_THRESHOLD)
        self._min_area_from_card = min_area_px is None
        if min_area_px is None:
            min_area_px = int(_card_threshold(segmenter, "min_area_px", 0))
        self.classifier_threshold = _check_probability("classifier_threshold", classifier_threshold)
        self.mask_threshold = _check_probability("mask_threshold", mask_threshold)
        self.min_area_px = _check_min_area(min_area_px)
        if largest_component is None:
            largest_component = bool(segmenter.card.thresholds.get("largest_component", False))
        self.largest_component = bool(largest_component)
        dev = resolve_device(device)
        self._plan = ExecutionPlan(
            dev,
            forward_batch_size(dev, batch_size),
            resolve_precision(precision, dev),
            precision,
            requested_batch_size=batch_size,
        )
        self._stats_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._place(dev)

    # -- device handling -------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the networks run on now (the CPU after an out-of-memory fallback)."""
        return self._plan.device

    @property
    def uses_classifier(self) -> bool:
        """Whether the classifier runs (there is one and ``segment_all`` is off)."""
        return self.classifier is not None and not self.segment_all

    def _modules(self) -> list[torch.nn.Module]:
        return [b.model for b in (self.classifier, self.segmenter) if b is not None]

    def _place(self, device: torch.device) -> None:
        for m in self._modules():
            m.eval()
            m.to(device)
            if device.type != "mps":
                m.to(memory_format=torch.channels_last)

    def _forward(
        self, model: torch.nn.Module, post: Callable[[torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor, ExecutionPlan], torch.Tensor]:
        def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
            x = chunk.to(plan.device, non_blocking=True)
            if plan.device.type != "mps":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                with autocast(plan.device, plan.autocast_dtype):
                    y = model(x)
                return post(y.float()).cpu()

        return forward

    def _classify(self, x: torch.Tensor) -> np.ndarray:
        assert self.classifier is not None
        fwd = self._forward(self.classifier.model, lambda y: torch.sigmoid(y).reshape(len(y), -1)[:, 0])
        return run_batched(fwd, x, self._plan, on_fallback=self._place).numpy().astype(np.float64)

    def _segment(self, x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
        fwd = self._forward(self.segmenter.model, lambda y: resize_prob(torch.sigmoid(y[:, 0]), shape))
        prob = run_batched(fwd, x, self._plan, on_fallback=self._place)
        if self.flip_tta:
            mirrored = run_batched(fwd, x.flip(-1), self._plan, on_fallback=self._place).flip(-1)
            prob = (prob + mirrored) / 2
        return prob.numpy().astype(np.float32)

    # -- helpers -----------------------------------------------------------------------------

    def _volume_stats(self, volume: Volume) -> np.ndarray:
        # Normalisation statistics are computed once per volume (reused by segment_slices).
        images = volume.images
        if self._stats_cache is not None and self._stats_cache[0] is images:
            return self._stats_cache[1]
        stats = channel_stats(images)
        self._stats_cache = (images, stats)
        return stats

    @staticmethod
    def _check_volume(volume: Volume) -> None:
        if volume.n_slices == 0:
            raise DataError(volume.source, "has no readable slices to analyse")

    def _models_info(self) -> dict[str, Any]:
        return {
            "classifier": _model_info(self.classifier) if self.uses_classifier else None,
            "segmenter": _model_info(self.segmenter),
        }

    # -- public API --------------------------------------------------------------------------

    def run(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> Iterator[SliceResult]:
        """Analyse ``volume``, yielding one :class:`SliceResult` per slice in slice order.

        Results come batch by batch (``batch_size`` slices); ``progress`` is called with
        ``(0, n)`` first and ``(done, n)`` after each batch, before its results are yielded.

        Args:
            volume: the patient volume.
            progress: ``progress(done, total)`` callback.
            cancel: a ``threading.Event`` or a callable returning True to stop; checked before
                every batch.

        Returns:
            An iterator of :class:`SliceResult`.

        Raises:
            Cancelled: (while iterating) when ``cancel`` is set; nothing is left half-done, the
                results already yielded stay valid.
            DataError: if the volume has no slices.
        """
        self._check_volume(volume)
        is_cancelled = cancel_checker(cancel)
        return self._run(volume, progress, is_cancelled)

    def _run(
        self, volume: Volume, progress: ProgressFn | None, is_cancelled: Callable[[], bool]
    ) -> Iterator[SliceResult]:
        n, shape, spacing = volume.n_slices, volume.shape, volume.pixel_spacing_mm
        seg_size = int(self.segmenter.card.input_size)
        cls_size = int(self.classifier.card.input_size) if self.uses_classifier else seg_size
        min_area = self.min_area_for(shape)
        if progress is not None:
            progress(0, n)
        stats = None
        for start in range(0, n, self.batch_size):
            if is_cancelled():
                raise Cancelled(f"{volume.patient_id}: analysis cancelled")
            if stats is None:
                stats = self._volume_stats(volume)
            stop = min(n, start + self.batch_size)
            images = volume.images[start:stop]
            x = preprocess_volume(images, size=cls_size, stats=stats)
            if self.uses_classifier:
                tumour = self._classify(x)
                gate = tumour >= self.classifier_threshold
            else:
                tumour = np.ones(stop - start)
                gate = np.ones(stop - start, bool)
            chosen = np.flatnonzero(gate)
            probs: dict[int, np.ndarray] = {}
            if chosen.size:
                xs = (
                    x[torch.from_numpy(chosen)]
                    if seg_size == cls_size
                    else preprocess_volume(images[chosen], size=seg_size, stats=stats)
                )
                probs = dict(zip(chosen.tolist(), self._segment(xs, shape), strict=True))
            batch = [
                _finish_slice(
                    start + k,
                    tumour[k],
                    probs.get(k),
                    shape,
                    passes_gate=bool(gate[k]),
                    mask_threshold=self.mask_threshold,
                    min_area_px=min_area,
                    spacing=spacing,
                    classified=self.uses_classifier,
                )
                for k in range(stop - start)
            ]
            if progress is not None:
                progress(stop, n)
            yield from batch

    def min_area_for(self, shape: tuple[int, int]) -> int:
        """The smallest component kept, in source pixels, for slices of ``shape``.

        An explicit ``min_area_px`` is used as given. The card's value was chosen on masks at the
        model's input size, so it is scaled by the ratio of pixel areas (exact for LGG's 256 x 256
        slices and 256 x 256 models).
        """
        if not self._min_area_from_card:
            return self.min_area_px
        size = int(self.segmenter.card.input_size)
        return round(self.min_area_px * shape[0] * shape[1] / (size * size))

    def analyse(
        self, volume: Volume, *, progress: ProgressFn | None = None, cancel: CancelArg = None
    ) -> PatientResult:
        """Analyse ``volume`` and return the whole :class:`PatientResult`.

        Args:
            volume: the patient volume.
            progress: ``progress(done, total)`` callback.
            cancel: a ``threading.Event`` or a callable returning True to stop.

        Returns:
            The patient result.

        Raises:
            Cancelled: when ``cancel`` is set (no partial result is returned).
            DataError: if the volume has no slices.
        """
        slices = list(self.run(volume, progress=progress, cancel=cancel))
        return self._result(volume, slices)

    def _result(self, volume: Volume, slices: list[SliceResult]) -> PatientResult:
        return _summarise(
            volume.patient_id,
            slices,
            classifier_threshold=self.classifier_threshold,
            mask_threshold=self.mask_threshold,
            min_area_px=self.min_area_for(volume.shape),
            models=self._models_info(),
            device=str(self.device),
            spacing=volume.pixel_spacing_mm,
            voxel_volume_ml=volume.voxel_volume_ml,
            largest_component=self.largest_component,
        )

    def segment_slices(
        self,
        volume: Volume,
        result: PatientResult,
        indices: Sequence[int] | None = None,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelArg = None,
    ) -> PatientResult:
        """Run the segmenter on chosen slices of an existing result (no classifier).

        Used after :func:`rethreshold` lowered the classifier gate below the probability of
        slices that were never segmented. Tumour probabilities are kept; masks are recomputed
        with ``result``'s thresholds.

        Args:
            volume: the volume ``result`` was computed from.
            result: the result to complete.
            indices: slices to segment (default: :func:`missing_segmentations` of ``result``).
            progress: ``progress(done, total)`` callback over the chosen slices.
            cancel: a ``threading.Event`` or a callable returning True to stop.

        Returns:
            A new :class:`PatientResult`; ``result`` is not modified.

        Raises:
            ValueError: if ``result`` does not belong to ``volume``, was made by another
                segmenter, or an index is out of range.
            Cancelled: when ``cancel`` is set.
        """
        if result.patient_id != volume.patient_id or len(result.slices) != volume.n_slices:
            raise ValueError(
                f"result of {result.patient_id} ({len(result.slices)} slices) does not belong to volume "
                f"{volume.patient_id} ({volume.n_slices} slices)"
            )
        used = (result.models or {}).get("segmenter") or {}
        if used.get("sha256") not in (None, self.segmenter.card.weights_sha256):
            raise ValueError(
                f"result of {result.patient_id} was segmented by {used.get('name')!r}, not by this "
                f"pipeline's {self.segmenter.card.name!r}; analyse the volume again instead"
            )
        todo = missing_segmentations(result) if indices is None else sorted(set(indices))
        if any(not 0 <= i < volume.n_slices for i in todo):
            raise ValueError(f"slice indices must be in [0, {volume.n_slices}), got {todo}")
        is_cancelled = cancel_checker(cancel)
        slices = list(result.slices)
        size = int(self.segmenter.card.input_size)
        stats = self._volume_stats(volume) if todo else None
        if progress is not None:
            progress(0, len(todo))
        for start in range(0, len(todo), self.batch_size):
            if is_cancelled():
                raise Cancelled(f"{volume.patient_id}: segmentation cancelled")
            chunk = todo[start : start + self.batch_size]
            x = preprocess_volume(volume.images[chunk], size=size, stats=stats)
            for i, prob in zip(chunk, self._segment(x, volume.shape), strict=True):
                slices[i] = dataclasses.replace(slices[i], mask_probability=prob)
            if progress is not None:
                progress(min(len(todo), start + self.batch_size), len(todo))
        base = dataclasses.replace(result, slices=slices)
        out = rethreshold(base)
        assert isinstance(out, PatientResult)
        return out

    rethreshold = staticmethod(rethreshold)

"""Which slices are worth a reader's second look, and why: :class:`ReviewReason` and :func:`review_reasons`.

A second reader earns its keep by saying where it is unsure. Each slice of an analysis can carry
any of these reasons (:class:`ReviewReason`, each with a plain-words :meth:`~ReviewReason.describe`
and a few-word :meth:`~ReviewReason.label`):

- the classifier calls the slice tumour with confidence but the final mask is empty (or only
  regions below the minimum area were found) - :attr:`~ReviewReason.CLASSIFIER_ONLY`, set by
  :func:`~brainseg_core.results.threshold_slice`;
- outline was set aside (all of the slice's, or a region beside the kept one) because it is not
  part of the 3-D region the patient keeps -
  :attr:`~ReviewReason.OUTSIDE_LARGEST_REGION`, set by :func:`~brainseg_core.results.keep_largest`;
- the outline is a faint edge of the tumour, drawn below the mask threshold because it connects to
  an outline next to it - :attr:`~ReviewReason.FAINT_EDGE`, set by
  :func:`~brainseg_core.results.volume_steps`;
- the tumour probability lies close to the slice gate where the gate decided what is shown: a
  slice the gate nearly let through, or an outline that exists only because it did -
  :attr:`~ReviewReason.NEAR_GATE` ("close" is measured in log-odds, so a gate of 0.013 and one of
  0.5 get comparable margins);
- much of the outline's probability mass sits near the mask threshold (a small change of the
  threshold would change the outline a lot) - :attr:`~ReviewReason.LOW_CONFIDENCE`;
- the outline is out of line with the outlines on both slices next to it: much larger than the
  larger of them, or much smaller than the smaller (a tumour's cross-section changes gradually
  from slice to slice) - :attr:`~ReviewReason.SIZE_JUMP`;
- an empty slice lies between outlined slices (a tumour rarely skips a slice) -
  :attr:`~ReviewReason.GAP`;
- an empty slice lies just past an outlined tumour's first or last slice, where its faint end is
  easily missed (of the tumour slices the shipped segmenter leaves empty in cross-validation, two in
  three lie there, and about one such slice in five holds tumour) - :attr:`~ReviewReason.TUMOUR_END`
  (:func:`past_tumour_ends`);
- when the folder has ground truth, the final mask disagrees with it: tumour in one and not the
  other, or a slice Dice below a limit - :attr:`~ReviewReason.DISAGREES_WITH_TRUTH`.

The limits are a :class:`ReviewCriteria`. The module is numpy only (no torch, no Qt); the viewer
turns the reasons into its review queue (:func:`review_queue`: the slices with a reason that the
reader has neither marked reviewed nor edited).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from brainseg_core.results import PatientResult, SliceResult

__all__ = [
    "DEFAULT_CRITERIA",
    "ReviewCriteria",
    "ReviewReason",
    "describe_reasons",
    "disagrees",
    "past_tumour_ends",
    "review_queue",
    "review_reasons",
]


class ReviewReason(enum.StrEnum):
    """Why a slice deserves a reader's look (see the module docstring).

    Attributes:
        CLASSIFIER_ONLY: the classifier calls the slice tumour with confidence but the final mask
            is empty.
        OUTSIDE_LARGEST_REGION: outline was set aside (all of the slice's, or a region beside the
            kept one): not part of the 3-D region kept (the largest or the most confident).
        FAINT_EDGE: the outline is a faint continuation of the tumour, drawn below the mask
            threshold (``Thresholds.edge``).
        NEAR_GATE: the tumour probability is close to the slice gate where the gate decided.
        LOW_CONFIDENCE: much of the outline's probability lies near the mask threshold.
        SIZE_JUMP: the outline is much larger or smaller than those on the slices either side.
        GAP: an empty slice between outlined slices.
        TUMOUR_END: an empty slice just past an outlined tumour's first or last slice.
        DISAGREES_WITH_TRUTH: the mask disagrees with the folder's ground truth.
    """

    CLASSIFIER_ONLY = "classifier_only"
    OUTSIDE_LARGEST_REGION = "outside_largest_region"
    FAINT_EDGE = "faint_edge"
    NEAR_GATE = "near_gate"
    LOW_CONFIDENCE = "low_confidence"
    SIZE_JUMP = "size_jump"
    GAP = "gap"
    TUMOUR_END = "tumour_end"
    DISAGREES_WITH_TRUTH = "disagrees_with_truth"

    def describe(self) -> str:
        """A sentence for a reader."""
        return _DESCRIPTIONS[self]

    def label(self) -> str:
        """A few words for a reader, where a sentence does not fit (a key image's caption)."""
        return _LABELS[self]


_DESCRIPTIONS = {
    ReviewReason.CLASSIFIER_ONLY: "classifier says tumour but the segmenter outlined nothing",
    ReviewReason.OUTSIDE_LARGEST_REGION: "outline set aside: not part of the 3-D region kept",
    ReviewReason.FAINT_EDGE: "faint edge of the tumour: outlined below the mask threshold",
    ReviewReason.NEAR_GATE: "tumour probability close to the slice gate",
    ReviewReason.LOW_CONFIDENCE: "uncertain outline: much of it lies near the mask threshold",
    ReviewReason.SIZE_JUMP: "outline much larger or smaller than on the slices either side",
    ReviewReason.GAP: "empty slice between outlined slices",
    ReviewReason.TUMOUR_END: "empty slice just past the outlined tumour: its faint end is easily missed",
    ReviewReason.DISAGREES_WITH_TRUTH: "mask disagrees with the ground truth",
}


_LABELS = {
    ReviewReason.CLASSIFIER_ONLY: "classifier only",
    ReviewReason.OUTSIDE_LARGEST_REGION: "outside the kept region",
    ReviewReason.FAINT_EDGE: "faint edge",
    ReviewReason.NEAR_GATE: "near the gate",
    ReviewReason.LOW_CONFIDENCE: "uncertain outline",
    ReviewReason.SIZE_JUMP: "size out of line",
    ReviewReason.GAP: "gap",
    ReviewReason.TUMOUR_END: "past the tumour's end",
    ReviewReason.DISAGREES_WITH_TRUTH: "disagrees with truth",
}


@dataclass(frozen=True, slots=True)
class ReviewCriteria:
    """The limits behind the review reasons.

    Args:
        near_gate_logit: a tumour probability within this many log-odds of the gate is "close"
            (0.5: within a factor of 1.65 of the gate's odds; for the shipped gate 0.132, about
            0.085-0.20). Cross-validated over 80 patients (each fold's gate), a band twice as
            wide flagged 60 slices, 2 of them with tumour and none wrong that no other reason
            flags; this one flags 20 with the same 2 (chosen on those patients).
        uncertain_band: pixels whose mask probability lies within this of the mask threshold are
            uncertain.
        uncertain_fraction: a slice is :attr:`~ReviewReason.LOW_CONFIDENCE` when at least this
            share of its candidate pixels (uncertain ones plus those above the band) is uncertain...
        min_uncertain_px: ...and at least this many pixels are (single noisy pixels are not worth
            a look).
        size_jump: an outline more than this many times the larger of the outlines on the two
            slices next to it (both outlined), or less than the smaller divided by it, is
            :attr:`~ReviewReason.SIZE_JUMP` (``math.inf``: never; an outline the reader drew is
            compared with, never flagged). Cross-validated over the 80
            patients (the shipped models, no gate), 1.5 flags 13 of the 1,000 outlined slices, 8
            of them wrong (the outline misses most of the tumour, or there is none); 2.0 flags 8
            (5 wrong). Chosen on those patients.
        max_gap: the longest run of empty slices between outlined ones that is flagged as a gap.
        min_dice: a slice whose Dice against the ground truth is below this disagrees with it.

    Raises:
        ValueError: for a negative or out-of-range limit.
    """

    near_gate_logit: float = 0.5
    uncertain_band: float = 0.2
    uncertain_fraction: float = 0.5
    min_uncertain_px: int = 20
    size_jump: float = 1.5
    max_gap: int = 2
    min_dice: float = 0.5

    def __post_init__(self) -> None:
        if self.near_gate_logit < 0:
            raise ValueError(f"near_gate_logit must be >= 0, got {self.near_gate_logit}")
        for name in ("uncertain_band", "uncertain_fraction", "min_dice"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.min_uncertain_px < 0 or self.max_gap < 0:
            raise ValueError("min_uncertain_px and max_gap must be >= 0")
        if not self.size_jump >= 1.0:  # also refuses NaN
            raise ValueError(f"size_jump must be >= 1 (math.inf: never), got {self.size_jump}")


#: The limits the viewer and the exports use.
DEFAULT_CRITERIA = ReviewCriteria()


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _near_gate(s: SliceResult, gate: float, criteria: ReviewCriteria) -> bool:
    if s.neighbour_probability > s.tumour_probability:
        return False  # a neighbour's probability decided (that slice is flagged when it is close)
    if abs(_logit(s.tumour_probability) - _logit(gate)) > criteria.near_gate_logit:
        return False
    # Where the gate decided: below it the segmenter never read the slice; above it, an outline
    # exists only because the gate let the slice through.
    return s.tumour_probability < gate or s.area_px > 0


def _low_confidence(s: SliceResult, threshold: float, criteria: ReviewCriteria) -> bool:
    p = s.mask_probability
    if not s.segmented or p is None:
        return False
    lo = max(threshold - criteria.uncertain_band, 0.0)
    hi = min(threshold + criteria.uncertain_band, 1.0)
    uncertain = int(np.count_nonzero((p >= lo) & (p < hi)))
    if uncertain < max(criteria.min_uncertain_px, 1):
        return False
    firm = int(np.count_nonzero(p >= hi))
    return uncertain / (uncertain + firm) >= criteria.uncertain_fraction


def _size_jumps(areas: Sequence[int], factor: float) -> set[int]:
    """Positions of outlines out of line with both outlined neighbours (see ``ReviewCriteria``)."""
    found: set[int] = set()
    for i in range(1, len(areas) - 1):
        a, lo, hi = areas[i], min(areas[i - 1], areas[i + 1]), max(areas[i - 1], areas[i + 1])
        if a > 0 and lo > 0 and (a > factor * hi or a * factor < lo):
            found.add(i)
    return found


def _gaps(outlined: Sequence[bool], max_gap: int) -> set[int]:
    """Positions of empty runs of at most ``max_gap`` slices with an outlined slice on both sides."""
    found: set[int] = set()
    last = None  # position of the last outlined slice seen
    for i, on in enumerate(outlined):
        if not on:
            continue
        if last is not None and 0 < i - last - 1 <= max_gap:
            found.update(range(last + 1, i))
        last = i
    return found


def past_tumour_ends(outlined: Sequence[bool] | np.ndarray) -> set[int]:
    """Positions of the empty slices right before and after each run of outlined slices.

    :func:`review_reasons` flags them :attr:`ReviewReason.TUMOUR_END`, except those it flags as a
    :attr:`~ReviewReason.GAP` (an empty slice between two outlined ones is a gap, not an end), so
    with the default ``ReviewCriteria.max_gap`` (2) the two reasons together flag exactly these
    slices (a longer limit also flags gap slices further from an outline).

    Args:
        outlined: per slice of a volume, in order, whether its final mask is not empty.

    Returns:
        The positions (none when nothing is outlined).
    """
    on = np.asarray(outlined, dtype=bool)
    beside = np.zeros_like(on)
    beside[:-1] |= on[1:]
    beside[1:] |= on[:-1]
    return {int(i) for i in np.flatnonzero(beside & ~on)}


def disagrees(mask: np.ndarray, truth: np.ndarray, min_dice: float) -> bool:
    """Whether a slice's final ``mask`` disagrees with its ground ``truth``: tumour in one and not
    the other, or a slice Dice below ``min_dice`` (:attr:`ReviewReason.DISAGREES_WITH_TRUTH`).

    Args:
        mask: ``(H, W)`` bool final mask.
        truth: ``(H, W)`` bool ground truth.
        min_dice: the slice Dice below which two non-empty masks disagree.
    """
    pred_any, true_any = bool(mask.any()), bool(truth.any())
    if pred_any != true_any:
        return True
    if not pred_any:
        return False
    overlap = int(np.count_nonzero(mask & truth))
    dice = 2.0 * overlap / (int(np.count_nonzero(mask)) + int(np.count_nonzero(truth)))
    return dice < min_dice


def review_reasons(
    result: PatientResult,
    *,
    truth: np.ndarray | None = None,
    criteria: ReviewCriteria = DEFAULT_CRITERIA,
) -> list[tuple[ReviewReason, ...]]:
    """Every slice's review reasons, from its final masks (edited where edited) and probabilities.

    Args:
        result: the patient's result as shown (masks under its thresholds, the reader's where
            edited); a partial result while an analysis streams gives the reasons so far.
        truth: ``(N, H, W)`` ground-truth masks of the whole volume, or None.
        criteria: the limits.

    Returns:
        One tuple per slice of ``result.slices`` (same order), reasons in :class:`ReviewReason`
        order, empty when the slice needs no second look.

    Raises:
        ValueError: when ``truth`` does not cover the result's slices at their shape.
    """
    from brainseg_core.results import MaskSource  # not at the top: results imports this module

    slices = result.slices
    if truth is not None:
        bad = [s.index for s in slices if s.index >= len(truth) or truth[s.index].shape != s.mask.shape]
        if bad:
            raise ValueError(f"the ground truth does not match slices {bad[:5]} of {result.patient_id}")
    thresholds = result.thresholds
    classified = result.classifier is not None
    outlined = [s.area_px > 0 for s in slices]
    jumps = _size_jumps([s.area_px for s in slices], criteria.size_jump)
    gaps = _gaps(outlined, criteria.max_gap)
    ends = past_tumour_ends(outlined) - gaps
    out: list[tuple[ReviewReason, ...]] = []
    for pos, s in enumerate(slices):
        found: set[ReviewReason] = set()
        if s.review is not None:
            found.add(s.review)
        if classified and _near_gate(s, thresholds.gate, criteria):
            found.add(ReviewReason.NEAR_GATE)
        if _low_confidence(s, thresholds.mask, criteria):
            found.add(ReviewReason.LOW_CONFIDENCE)
        if pos in jumps and s.source is not MaskSource.READER:  # the reader drew it so
            found.add(ReviewReason.SIZE_JUMP)
        if pos in gaps:
            found.add(ReviewReason.GAP)
        if pos in ends:
            found.add(ReviewReason.TUMOUR_END)
        if truth is not None and disagrees(s.mask, np.asarray(truth[s.index], bool), criteria.min_dice):
            found.add(ReviewReason.DISAGREES_WITH_TRUTH)
        out.append(tuple(r for r in ReviewReason if r in found))
    return out


def describe_reasons(reasons: Sequence[ReviewReason]) -> str:
    """The reasons in plain words, ``"; "``-separated (empty when there is none)."""
    return "; ".join(r.describe() for r in reasons)


def review_queue(reasons: Sequence[tuple[ReviewReason, ...]], *, done: Collection[int] = ()) -> list[int]:
    """The slices still to review: those with a reason that are not in ``done``.

    Args:
        reasons: per slice, from :func:`review_reasons` (position = slice index).
        done: slices the reader has dealt with (marked reviewed, or edited).

    Returns:
        Slice indices, ascending.
    """
    return [i for i, r in enumerate(reasons) if r and i not in done]

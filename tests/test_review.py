"""review_reasons: each reason fires where it should and nowhere else; review_queue leaves out done slices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from brainseg_core.model_ref import ModelRef
from brainseg_core.results import MaskSource, PatientResult, SliceResult, rethreshold
from brainseg_core.review import ReviewCriteria, ReviewReason, past_tumour_ends, review_queue, review_reasons
from brainseg_core.thresholds import Thresholds

R = ReviewReason
SIZE = 32


def _prob(value: float, size: int = 10) -> np.ndarray:
    p = np.zeros((SIZE, SIZE), np.float32)
    p[8 : 8 + size, 8 : 8 + size] = value
    return p


def _result(tumour: list[float], probs: list[np.ndarray | None], gate: float = 0.5) -> PatientResult:
    slices = [
        SliceResult(i, t, p is not None, p, np.zeros((SIZE, SIZE), bool), 0, None)
        for i, (t, p) in enumerate(zip(tumour, probs, strict=True))
    ]
    cls = ModelRef("c", "b" * 64)
    raw = PatientResult("P", slices, Thresholds(gate=gate), ModelRef("s", "a" * 64), cls, "cpu")
    return rethreshold(raw)


def test_each_reason_in_plain_words() -> None:
    assert {r.describe() for r in R} and all(len(r.describe()) > 15 for r in R)
    assert R.GAP.describe() == "empty slice between outlined slices"
    assert all(0 < len(r.label()) < len(r.describe()) for r in R)  # a few words each, for a caption


def test_confident_classifier_over_an_empty_mask_and_a_gap() -> None:
    firm = _prob(0.95)
    r = _result([0.95, 0.95, 0.95, 0.95, 0.1], [firm, _prob(0.0), firm, _prob(0.0), None])
    reasons = review_reasons(r)
    assert reasons[1] == (R.CLASSIFIER_ONLY, R.GAP)  # between two outlined slices
    assert reasons[3] == (R.CLASSIFIER_ONLY, R.TUMOUR_END)  # nothing outlined after it: an end
    assert reasons[0] == reasons[2] == reasons[4] == ()


def test_the_empty_slices_just_past_each_outlined_run_are_tumour_ends() -> None:
    firm, none = _prob(0.95), _prob(0.0)
    probs = [none, none, firm, firm, none, none, none, none, firm, none]
    reasons = review_reasons(_result([0.95 if p is firm else 0.1 for p in probs], probs))
    ends = [i for i, r in enumerate(reasons) if R.TUMOUR_END in r]
    assert ends == [1, 4, 7, 9]  # before and after both runs; the slices further out are not
    assert past_tumour_ends([False, True, False, True]) == {0, 2}  # 2: a gap, where review_reasons says GAP
    middle = review_reasons(_result([0.95, 0.1, 0.95], [firm, none, firm]))[1]
    assert R.GAP in middle and R.TUMOUR_END not in middle
    assert past_tumour_ends([False] * 4) == set() and past_tumour_ends([True] * 3) == set()


def test_gaps_longer_than_the_limit_are_separate_lesions() -> None:
    firm, none = _prob(0.95), _prob(0.0)
    r = _result([0.9] * 5, [firm, none, none, none, firm])
    assert all(R.GAP not in x for x in review_reasons(r))
    assert [R.GAP in x for x in review_reasons(r, criteria=ReviewCriteria(max_gap=3))] == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_an_outline_out_of_line_with_both_neighbours_is_a_size_jump() -> None:
    # areas 36, 100, 36, 36, 49, 64, 16, 64, 81: a bulge (1), a dip (6), the rest in line
    sizes = [6, 10, 6, 6, 7, 8, 4, 8, 9]
    r = _result([0.95] * len(sizes), [_prob(0.95, n) for n in sizes])
    jumps = [i for i, x in enumerate(review_reasons(r)) if R.SIZE_JUMP in x]
    assert jumps == [1, 6]  # 100 > 1.5 * 36; 16 * 1.5 < 64 (2, 36 beside 100 and 36, is in line)
    strict = review_reasons(r, criteria=ReviewCriteria(size_jump=3.0))
    assert [i for i, x in enumerate(strict) if R.SIZE_JUMP in x] == [6]  # 100 < 3 * 36; 16 * 3 < 64
    # an outline the reader drew is not flagged (its neighbours are compared with it)
    drawn = dataclasses.replace(r.slices[1], source=MaskSource.READER)
    edited = dataclasses.replace(r, slices=[*r.slices[:1], drawn, *r.slices[2:]])
    assert [i for i, x in enumerate(review_reasons(edited)) if R.SIZE_JUMP in x] == [6]
    # the outlines at the ends of a run are not compared with an empty slice (tumour ends flag those)
    end = _result([0.95] * 3, [_prob(0.0), _prob(0.95, 10), _prob(0.95, 4)])
    assert all(R.SIZE_JUMP not in x for x in review_reasons(end))


def test_near_the_gate_where_the_gate_decided() -> None:
    # gate 0.013 like the shipped classifier: 0.02 is close in log-odds, 0.3 is not.
    r = _result(
        [0.008, 0.02, 0.02, 0.3, 0.0001], [None, _prob(0.95), _prob(0.0), _prob(0.95), None], gate=0.013
    )
    reasons = review_reasons(r)
    assert R.NEAR_GATE in reasons[0]  # just below: the segmenter never read it
    assert R.NEAR_GATE in reasons[1]  # just above, outlined only because the gate let it through
    assert R.NEAR_GATE not in reasons[2]  # above but empty: the gate changed nothing
    assert R.NEAR_GATE not in reasons[3] and R.NEAR_GATE not in reasons[4]


def test_near_the_gate_is_half_a_log_odds_unless_asked_for_more() -> None:
    # the shipped gate 0.132: 0.1 is within 0.5 log-odds of it, 0.06 (0.87 away) only within 1
    r = _result([0.1, 0.06, 0.0001], [None, None, None], gate=0.132)
    assert [R.NEAR_GATE in x for x in review_reasons(r)] == [True, False, False]
    wide = review_reasons(r, criteria=ReviewCriteria(near_gate_logit=1.0))
    assert [R.NEAR_GATE in x for x in wide] == [True, True, False]


def test_near_the_gate_flags_the_slice_whose_own_probability_decided() -> None:
    """With a gate reach, one borderline probability decides its neighbours too: only its own
    slice is flagged, not the neighbours it let through or kept out."""
    slices = [
        SliceResult(i, t, False, None, np.zeros((SIZE, SIZE), bool), 0, None)
        for i, t in enumerate([0.0002, 0.45, 0.0003, 0.001, 0.0001])
    ]
    cls = ModelRef("c", "b" * 64)
    raw = PatientResult("P", slices, Thresholds(gate=0.5), ModelRef("s", "a" * 64), cls, "cpu")
    r = rethreshold(raw, Thresholds(gate=0.5, gate_reach=1))
    assert [s.neighbour_probability for s in r.slices] == [0.45, 0.0003, 0.45, 0.0003, 0.001]
    assert [R.NEAR_GATE in x for x in review_reasons(r)] == [False, True, False, False, False]


def test_low_confidence_when_the_probability_sits_near_the_mask_threshold() -> None:
    sure = _prob(0.97)
    unsure = _prob(0.55)  # 100 px in [0.3, 0.7): uncertain
    missed = _prob(0.42)  # below the threshold: empty mask, but something is there
    mixed = _prob(0.97)
    mixed[8:10, 8:18] = 0.6  # 20 uncertain of 100: mostly sure
    r = _result([0.9] * 4, [sure, unsure, missed, mixed])
    reasons = review_reasons(r)
    assert [R.LOW_CONFIDENCE in x for x in reasons] == [False, True, True, False]


def test_disagreement_with_the_ground_truth() -> None:
    r = _result([0.9] * 4, [_prob(0.95), _prob(0.95), _prob(0.0), _prob(0.0)])
    truth = np.zeros((4, SIZE, SIZE), bool)
    truth[0, 8:18, 8:18] = True  # agrees
    truth[1, 20:30, 20:30] = True  # elsewhere: Dice 0
    truth[2, 0:5, 0:5] = True  # missed
    reasons = review_reasons(r, truth=truth)
    assert [R.DISAGREES_WITH_TRUTH in x for x in reasons] == [False, True, True, False]
    with pytest.raises(ValueError, match="ground truth"):
        review_reasons(r, truth=truth[:2])


def test_the_queue_leaves_out_what_the_reader_dealt_with() -> None:
    reasons = [(), (R.GAP,), (R.NEAR_GATE, R.LOW_CONFIDENCE), ()]
    assert review_queue(reasons) == [1, 2]
    assert review_queue(reasons, done={2}) == [1]


def test_criteria_are_validated() -> None:
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="size_jump"):
            ReviewCriteria(size_jump=bad)
    with pytest.raises(ValueError, match="uncertain_band"):
        ReviewCriteria(uncertain_band=1.5)

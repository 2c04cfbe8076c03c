"""The outline the largest-3-D-region option sets aside: what it is, and when there is none."""

from __future__ import annotations

import dataclasses

import numpy as np

from brainseg_core.inference import PatientResult, SliceResult, rethreshold
from brainseg_core.model_ref import ModelRef
from brainseg_core.results import MaskSource, set_aside
from brainseg_core.review import ReviewReason
from brainseg_core.thresholds import Thresholds

SIZE = 16


def _raw() -> PatientResult:
    """Five slices: a large tumour on slices 1-3; a second, small lesion beside it on slice 1
    (not touching it) and another alone on slice 4."""
    p = np.zeros((5, SIZE, SIZE), np.float32)
    p[1:4, 2:9, 2:9] = 0.9
    p[1, 12:15, 12:15] = 0.8
    p[4, 12:14, 2:4] = 0.7
    slices = [SliceResult(i, 0.9, True, p[i], np.zeros((SIZE, SIZE), bool), 0, None) for i in range(5)]
    return PatientResult("P", slices, Thresholds(), ModelRef("s", "a" * 64), ModelRef("c", "b" * 64), "cpu")


def test_the_regions_outside_the_largest_are_set_aside_slice_by_slice() -> None:
    t = Thresholds(gate=0.5, mask=0.5, largest_component=True)
    shown = rethreshold(_raw(), t)
    asides = [set_aside(s, t) for s in shown.slices]
    assert asides[0] is None and asides[2] is None and asides[3] is None
    assert asides[1] is not None and asides[4] is not None
    assert int(asides[1].sum()) == 9 and asides[1][12:15, 12:15].all()  # beside the kept outline
    assert not (asides[1] & shown.slices[1].mask).any()
    assert int(asides[4].sum()) == 4  # a slice whose whole outline went, flagged for review
    assert shown.slices[4].review is ReviewReason.OUTSIDE_LARGEST_REGION and shown.slices[4].area_px == 0
    # a slice that kept part of its outline is flagged too: the queue leads the reader to it
    assert shown.slices[1].review is ReviewReason.OUTSIDE_LARGEST_REGION and shown.slices[1].area_px == 49
    assert [s.review for s in shown.slices[2:4]] == [None, None]  # nothing set aside there


def test_nothing_is_set_aside_without_the_option_under_a_higher_threshold_or_on_the_readers_mask() -> None:
    plain = Thresholds(gate=0.5, mask=0.5)
    assert all(set_aside(s, plain) is None for s in rethreshold(_raw(), plain).slices)
    high = Thresholds(gate=0.5, mask=0.85, largest_component=True)  # the lesions fall under it
    assert all(set_aside(s, high) is None for s in rethreshold(_raw(), high).slices)
    t = Thresholds(gate=0.5, mask=0.5, largest_component=True)
    shown = rethreshold(_raw(), t).slices[1]
    assert set_aside(dataclasses.replace(shown, source=MaskSource.READER), t) is None
    # a minimum area larger than the small lesions leaves nothing to set aside either
    big = t.replace(min_area_px=10)
    assert all(set_aside(s, big) is None for s in rethreshold(_raw(), big).slices)

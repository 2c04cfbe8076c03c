"""rethreshold / missing_segmentations / segment_slices agree exactly with fresh pipeline runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from brainseg_core.inference import (
    PatientResult,
    Pipeline,
    label_components,
    missing_segmentations,
    rethreshold,
    threshold_slice,
)
from brainseg_core.model_ref import ModelRef
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds
from tests.support import FakeClassifier, make_volume

PROBS = [0.1, 0.5, 0.49, 0.9, 0.0, 0.7]


@pytest.fixture
def volume():
    return make_volume(n=6, size=32, spacing=(0.7, 0.7), thickness=3.0)


@pytest.fixture
def pipeline_factory(volume, cls_bundle, seg_bundle):
    cls_bundle.model = FakeClassifier(volume, PROBS, 32)

    def make(**changes) -> Pipeline:
        # batch_size=1: every slice goes through the segmenter alone in every run, so the
        # probabilities are bit-identical whichever slices the gate lets through.
        thresholds = Thresholds.from_cards(cls_bundle.card, seg_bundle.card).replace(**changes)
        return Pipeline(cls_bundle, seg_bundle, thresholds=thresholds, device="cpu", batch_size=1)

    return make


def _assert_same(a: PatientResult, b: PatientResult) -> None:
    assert a.thresholds == b.thresholds and a.spacing == b.spacing
    assert (a.tumour_slices, a.volume_voxels) == (b.tumour_slices, b.volume_voxels)
    assert a.volume_ml == pytest.approx(b.volume_ml)
    for sa, sb in zip(a.slices, b.slices, strict=True):
        assert (sa.index, sa.segmented, sa.area_px, sa.review) == (
            sb.index,
            sb.segmented,
            sb.area_px,
            sb.review,
        )
        assert sa.tumour_probability == sb.tumour_probability
        assert sa.area_mm2 == pytest.approx(sb.area_mm2)
        np.testing.assert_array_equal(sa.mask, sb.mask)
        if sb.segmented:
            np.testing.assert_array_equal(sa.mask_probability, sb.mask_probability)


def test_rethreshold_equals_a_fresh_run(volume, pipeline_factory) -> None:
    first = pipeline_factory(gate=0.0).analyse(volume)
    probs = np.concatenate([s.mask_probability.ravel() for s in first.slices])
    mt = float(np.quantile(probs, 0.7))  # a threshold that gives non-trivial masks
    new = rethreshold(first, Thresholds(gate=0.6, mask=mt, min_area_px=5))
    fresh = pipeline_factory(gate=0.6, mask=mt, min_area_px=5).analyse(volume)
    assert fresh.volume_voxels > 0 and [s.index for s in fresh.slices if s.segmented] == [3, 5]
    _assert_same(new, fresh)
    # the input is untouched and the excluded slices keep their probabilities for later
    assert first.thresholds.gate == 0.0 and all(s.segmented for s in first.slices)
    assert new.slices[0].mask_probability is not None and not new.slices[0].segmented
    # going back is lossless
    _assert_same(rethreshold(new, first.thresholds), first)


def test_lower_gate_lists_missing_slices_and_segment_slices_fills_them(volume, pipeline_factory) -> None:
    pipe = pipeline_factory(gate=0.6)
    first = pipe.analyse(volume)
    assert missing_segmentations(first) == []
    assert missing_segmentations(first, first.thresholds.replace(gate=0.45)) == [1, 2]
    lowered = rethreshold(first, first.thresholds.replace(gate=0.45))
    assert missing_segmentations(lowered) == [1, 2]
    assert not lowered.slices[1].segmented and lowered.slices[1].area_px == 0
    calls = []
    filled = pipe.segment_slices(volume, lowered, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert missing_segmentations(filled) == []
    _assert_same(filled, pipeline_factory(gate=0.45).analyse(volume))
    with pytest.raises(ValueError, match="does not belong"):
        pipe.segment_slices(make_volume(n=3, size=32), lowered)
    other = dataclasses.replace(lowered, segmenter=ModelRef("x", "0"))
    with pytest.raises(ValueError, match="segmented by 'x'"):
        pipe.segment_slices(volume, other)
    with pytest.raises(ValueError, match="slice indices"):
        pipe.segment_slices(volume, lowered, [6])


def test_threshold_slice_and_spacing(volume, pipeline_factory) -> None:
    first = pipeline_factory(gate=0.0).analyse(volume)
    t = Thresholds(gate=0.6)
    slices = [threshold_slice(s, t, spacing=Spacing(2.0, 1.0), classified=True) for s in first.slices]
    assert [s.segmented for s in slices] == [p >= 0.6 for p in PROBS]
    assert all(s.area_mm2 == 2.0 * s.area_px for s in slices)
    assert [s.area_px for s in slices] == [s.area_px for s in rethreshold(first, t).slices]
    # a new voxel size changes areas and the volume, not the masks
    wider = first.with_spacing(Spacing(1.0, 1.0, 2.0))
    assert wider.volume_voxels == first.volume_voxels
    assert wider.volume_ml == pytest.approx(first.volume_voxels * 2.0 / 1000)
    assert all(s.area_mm2 == s.area_px for s in wider.slices)
    assert first.with_spacing(None).volume_ml is None


def test_largest_component_option_equals_a_fresh_run_and_keeps_one_region(volume, pipeline_factory) -> None:
    first = pipeline_factory(gate=0.0).analyse(volume)
    probs = np.concatenate([s.mask_probability.ravel() for s in first.slices])
    mt = float(np.quantile(probs, 0.6))
    plain = rethreshold(first, first.thresholds.replace(mask=mt))
    largest = rethreshold(first, first.thresholds.replace(mask=mt, largest_component=True))
    fresh = pipeline_factory(gate=0.0, mask=mt, largest_component=True).analyse(volume)
    _assert_same(largest, fresh)
    assert fresh.thresholds.largest_component and not plain.thresholds.largest_component
    labels, n = label_components(np.stack([s.mask for s in plain.slices]))
    assert n > 1  # the random segmenter gives several regions, so the option has work to do
    assert label_components(np.stack([s.mask for s in largest.slices]))[1] == 1
    assert largest.volume_voxels == np.bincount(labels.ravel())[1:].max()
    # switching it off again restores every region
    _assert_same(rethreshold(largest, largest.thresholds.replace(largest_component=False)), plain)


def test_the_most_confident_region_rule_keeps_the_confident_region_and_flags_the_other() -> None:
    from brainseg_core.inference import SliceResult
    from brainseg_core.results import MaskSource
    from brainseg_core.review import ReviewReason
    from brainseg_core.thresholds import RegionRule

    prob = np.zeros((3, 16, 16), np.float32)
    prob[0, :8, :8] = 0.55  # large and faint
    prob[2, 10:14, 10:14] = 0.97  # small and confident
    slices = [SliceResult(i, 0.9, True, p, np.zeros((16, 16), bool), 0, None) for i, p in enumerate(prob)]
    seg, cls = ModelRef("s", "a" * 64), ModelRef("c", "b" * 64)
    result = PatientResult("P", slices, Thresholds(gate=0.0), seg, cls, "cpu")
    largest = rethreshold(result, Thresholds(gate=0.0, largest_component=True))
    confident = rethreshold(result, largest.thresholds.replace(region_rule=RegionRule.MOST_CONFIDENT))
    assert [s.area_px for s in largest.slices] == [64, 0, 0]
    assert [s.area_px for s in confident.slices] == [0, 0, 16]
    assert confident.slices[0].review is ReviewReason.OUTSIDE_LARGEST_REGION
    assert largest.slices[2].review is ReviewReason.OUTSIDE_LARGEST_REGION
    assert confident.slices[2].source is MaskSource.MODEL


def test_largest_component_default_comes_from_the_segmenter_card(volume, cls_bundle, seg_bundle) -> None:
    assert Pipeline(cls_bundle, seg_bundle, device="cpu").thresholds.largest_component is False
    seg_bundle.card.thresholds["largest_component"] = True
    try:
        assert Pipeline(cls_bundle, seg_bundle, device="cpu").thresholds.largest_component is True
    finally:
        del seg_bundle.card.thresholds["largest_component"]


def test_min_area_is_scaled_from_model_input_to_source_pixels(cls_bundle, seg_bundle) -> None:
    assert seg_bundle.card.input_size == 32
    seg_bundle.card.thresholds["min_area_px"] = 10
    try:
        from_card = Pipeline(cls_bundle, seg_bundle, device="cpu")
        explicit = Pipeline(cls_bundle, seg_bundle, device="cpu", thresholds=Thresholds(min_area_px=5))
        assert from_card.thresholds_for((64, 64)).min_area_px == 40
        assert from_card.thresholds_for((32, 32)).min_area_px == 10
        assert explicit.thresholds_for((64, 64)).min_area_px == 20
        assert from_card.analyse(make_volume(n=2, size=64)).thresholds.min_area_px == 40
    finally:
        seg_bundle.card.thresholds["min_area_px"] = 0

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
)
from tests.support import FakeClassifier, make_volume

PROBS = [0.1, 0.5, 0.49, 0.9, 0.0, 0.7]


@pytest.fixture
def volume():
    return make_volume(n=6, size=32, spacing=(0.7, 0.7), thickness=3.0)


@pytest.fixture
def pipeline_factory(volume, cls_bundle, seg_bundle):
    cls_bundle.model = FakeClassifier(volume, PROBS, 32)

    def make(**kwargs) -> Pipeline:
        # batch_size=1: every slice goes through the segmenter alone in every run, so the
        # probabilities are bit-identical whichever slices the gate lets through.
        return Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=1, **kwargs)

    return make


def _assert_same(a: PatientResult, b: PatientResult) -> None:
    for field in ("tumour_slices", "volume_voxels", "classifier_threshold", "mask_threshold", "min_area_px"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.volume_ml == pytest.approx(b.volume_ml)
    for sa, sb in zip(a.slices, b.slices, strict=True):
        assert (sa.index, sa.segmented, sa.area_px) == (sb.index, sb.segmented, sb.area_px)
        assert sa.tumour_probability == sb.tumour_probability
        assert sa.area_mm2 == pytest.approx(sb.area_mm2)
        np.testing.assert_array_equal(sa.mask, sb.mask)
        if sb.segmented:
            np.testing.assert_array_equal(sa.mask_probability, sb.mask_probability)


def test_rethreshold_equals_a_fresh_run(volume, pipeline_factory) -> None:
    first = pipeline_factory(classifier_threshold=0.0).analyse(volume)
    probs = np.concatenate([s.mask_probability.ravel() for s in first.slices])
    mt = float(np.quantile(probs, 0.7))  # a threshold that gives non-trivial masks
    new = rethreshold(first, classifier_threshold=0.6, mask_threshold=mt, min_area_px=5)
    fresh = pipeline_factory(classifier_threshold=0.6, mask_threshold=mt, min_area_px=5).analyse(volume)
    assert fresh.volume_voxels > 0 and [s.index for s in fresh.slices if s.segmented] == [3, 5]
    _assert_same(new, fresh)
    # the input is untouched and the excluded slices keep their probabilities for later
    assert first.classifier_threshold == 0.0 and all(s.segmented for s in first.slices)
    assert new.slices[0].mask_probability is not None and not new.slices[0].segmented
    # going back is lossless
    _assert_same(rethreshold(new, classifier_threshold=0.0, mask_threshold=0.5, min_area_px=0), first)


def test_lower_gate_lists_missing_slices_and_segment_slices_fills_them(volume, pipeline_factory) -> None:
    pipe = pipeline_factory(classifier_threshold=0.6)
    first = pipe.analyse(volume)
    assert missing_segmentations(first) == []
    lowered = rethreshold(first, classifier_threshold=0.45)
    assert missing_segmentations(lowered) == [1, 2]
    assert not lowered.slices[1].segmented and lowered.slices[1].area_px == 0
    calls = []
    filled = pipe.segment_slices(volume, lowered, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert missing_segmentations(filled) == []
    _assert_same(filled, pipeline_factory(classifier_threshold=0.45).analyse(volume))
    with pytest.raises(ValueError, match="does not belong"):
        pipe.segment_slices(make_volume(n=3, size=32), lowered)
    other = dataclasses.replace(lowered, models={**lowered.models, "segmenter": {"name": "x", "sha256": "0"}})
    with pytest.raises(ValueError, match="segmented by 'x'"):
        pipe.segment_slices(volume, other)
    with pytest.raises(ValueError, match="slice indices"):
        pipe.segment_slices(volume, lowered, [6])


def test_rethreshold_a_list_of_slices(volume, pipeline_factory) -> None:
    first = pipeline_factory(classifier_threshold=0.0).analyse(volume)
    slices = rethreshold(
        first.slices, classifier_threshold=0.6, mask_threshold=0.5, pixel_spacing_mm=(2.0, 1.0)
    )
    assert isinstance(slices, list) and [s.segmented for s in slices] == [p >= 0.6 for p in PROBS]
    assert all(s.area_mm2 == 2.0 * s.area_px for s in slices)
    with pytest.raises(ValueError, match="classifier_threshold"):
        missing_segmentations(first.slices)
    with pytest.raises(ValueError, match="between 0 and 1"):
        rethreshold(first, mask_threshold=2.0)
    with pytest.raises(ValueError, match="min_area_px"):
        rethreshold(first, min_area_px=-3)


def test_static_method_alias(volume, pipeline_factory) -> None:
    first = pipeline_factory().analyse(volume)
    _assert_same(Pipeline.rethreshold(first, mask_threshold=0.6), rethreshold(first, mask_threshold=0.6))


def test_largest_component_option_equals_a_fresh_run_and_keeps_one_region(volume, pipeline_factory) -> None:
    first = pipeline_factory(classifier_threshold=0.0).analyse(volume)
    probs = np.concatenate([s.mask_probability.ravel() for s in first.slices])
    mt = float(np.quantile(probs, 0.6))
    plain = rethreshold(first, mask_threshold=mt)
    largest = rethreshold(first, mask_threshold=mt, largest_component=True)
    fresh = pipeline_factory(classifier_threshold=0.0, mask_threshold=mt, largest_component=True).analyse(
        volume
    )
    _assert_same(largest, fresh)
    assert fresh.largest_component and not plain.largest_component
    labels, n = label_components(np.stack([s.mask for s in plain.slices]))
    assert n > 1  # the random segmenter gives several regions, so the option has work to do
    assert label_components(np.stack([s.mask for s in largest.slices]))[1] == 1
    assert largest.volume_voxels == np.bincount(labels.ravel())[1:].max()
    # switching it off again restores every region
    _assert_same(rethreshold(largest, largest_component=False), plain)


def test_largest_component_default_comes_from_the_segmenter_card(volume, cls_bundle, seg_bundle) -> None:
    assert Pipeline(cls_bundle, seg_bundle, device="cpu").largest_component is False
    seg_bundle.card.thresholds["largest_component"] = True
    try:
        assert Pipeline(cls_bundle, seg_bundle, device="cpu").largest_component is True
        assert (
            Pipeline(cls_bundle, seg_bundle, device="cpu", largest_component=False).largest_component is False
        )
    finally:
        del seg_bundle.card.thresholds["largest_component"]


def test_card_min_area_is_scaled_from_model_input_to_source_pixels(cls_bundle, seg_bundle) -> None:
    assert seg_bundle.card.input_size == 32
    seg_bundle.card.thresholds["min_area_px"] = 10
    try:
        from_card = Pipeline(cls_bundle, seg_bundle, device="cpu")
        explicit = Pipeline(cls_bundle, seg_bundle, device="cpu", min_area_px=10)
        assert from_card.min_area_for((64, 64)) == 40 and from_card.min_area_for((32, 32)) == 10
        assert explicit.min_area_for((64, 64)) == 10
        assert from_card.analyse(make_volume(n=2, size=64)).min_area_px == 40
    finally:
        seg_bundle.card.thresholds["min_area_px"] = 0

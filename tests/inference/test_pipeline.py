"""Pipeline: gating, segment-all, streaming, progress, cancellation, areas and volumes."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from brainseg_core.errors import BundleError, Cancelled
from brainseg_core.inference import PatientResult, Pipeline
from brainseg_core.inference.device import CPU_FORWARD_BATCH
from brainseg_core.model_ref import ModelRef
from brainseg_core.preprocessing import preprocess_volume, resize_prob
from brainseg_core.thresholds import Thresholds
from tests.support import FakeClassifier, FakeSegmenter, make_volume

PROBS = [0.1, 0.5, 0.49, 0.9, 0.0, 0.7]


def _blob_masks(n: int, size: int) -> np.ndarray:
    """Slice i: a (i+2)x(i+2) square in the top-left corner (area (i+2)^2)."""
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        masks[i, 2 : 4 + i, 2 : 4 + i] = True
    return masks


def _two_regions(n: int, size: int) -> np.ndarray:
    """A small region alone on slice 0, and a large one through slices 2-5 far away from it."""
    masks = np.zeros((n, size, size), bool)
    masks[0, 1:3, 1:3] = True
    masks[2:, 20:28, 20:28] = True
    return masks


@pytest.fixture
def volume():
    return make_volume(n=6, size=32)


@pytest.fixture
def fakes(volume, cls_bundle, seg_bundle):
    cls_bundle.model = FakeClassifier(volume, PROBS, 32)
    seg_bundle.model = FakeSegmenter(volume, _blob_masks(6, 32), 32)
    return cls_bundle, seg_bundle


def _segmented(result: PatientResult) -> list[int]:
    return [s.index for s in result.slices if s.segmented]


def test_gate_defaults_to_the_classifier_card_threshold(volume, fakes) -> None:
    cls, seg = fakes
    result = Pipeline(cls, seg, device="cpu").analyse(volume)
    assert result.thresholds.gate == 0.6  # from the card
    assert _segmented(result) == [3, 5]
    assert sorted(seg.model.seen) == [3, 5]  # the segmenter never saw the other slices
    assert [s.tumour_probability for s in result.slices] == pytest.approx(PROBS, abs=1e-6)
    for s in result.slices:
        if s.segmented:
            assert s.mask_probability is not None and s.mask_probability.shape == (32, 32)
            assert s.area_px == (s.index + 2) ** 2 == int(s.mask.sum())
        else:
            assert s.mask_probability is None and not s.mask.any() and s.area_px == 0


def test_explicit_gate_is_inclusive(volume, fakes) -> None:
    cls, seg = fakes
    result = Pipeline(cls, seg, device="cpu", thresholds=Thresholds(gate=0.5)).analyse(volume)
    assert _segmented(result) == [1, 3, 5]
    assert result.tumour_slices == 3
    assert result.volume_voxels == 9 + 25 + 49
    assert result.classifier is not None and result.classifier.name == "tiny-cls"
    assert len(result.classifier.sha256) == 64


def test_segment_all_skips_the_classifier(volume, fakes) -> None:
    cls, seg = fakes
    result = Pipeline(cls, seg, device="cpu", segment_all=True).analyse(volume)
    assert _segmented(result) == list(range(6))
    assert cls.model.seen == []
    assert all(s.tumour_probability == 1.0 for s in result.slices)
    assert result.classifier is None
    assert result.volume_voxels == sum((i + 2) ** 2 for i in range(6))


def test_without_classifier_every_slice_is_segmented(volume, fakes) -> None:
    _, seg = fakes
    result = Pipeline(None, seg, device="cpu").analyse(volume)
    assert _segmented(result) == list(range(6))
    assert result.classifier is None


def test_swapped_bundles_are_refused(cls_bundle, seg_bundle) -> None:
    with pytest.raises(BundleError, match="segmenter bundle but was given as the classifier"):
        Pipeline(seg_bundle, cls_bundle, device="cpu")


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"device": "tpu"}, {"precision": "fp8"}],
)
def test_invalid_arguments_fail_early(cls_bundle, seg_bundle, kwargs) -> None:
    with pytest.raises(ValueError):
        Pipeline(cls_bundle, seg_bundle, **{"device": "cpu", **kwargs})


@pytest.mark.parametrize("kwargs", [{"gate": 1.5}, {"mask": -0.1}, {"min_area_px": -1}, {"min_area_px": 2.5}])
def test_invalid_thresholds_fail_early(kwargs) -> None:
    with pytest.raises(ValueError, match=r"gate|mask|min_area_px"):
        Thresholds(**kwargs)


def test_a_pipeline_does_not_change_after_construction(cls_bundle, seg_bundle) -> None:
    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu")
    for name in ("thresholds", "segment_all", "flip_tta", "classifier", "segmenter", "batch_size"):
        with pytest.raises(AttributeError):
            setattr(pipe, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pipe.thresholds.gate = 0.1  # type: ignore[misc]
    every = pipe.replace(segment_all=True, thresholds=Thresholds(gate=0.9))
    assert every.segment_all and not pipe.segment_all and every.device == pipe.device
    assert every.thresholds.gate == 0.9 and pipe.thresholds.gate == 0.6
    assert every._plan is pipe._plan  # one device state: a CPU fallback moves both


def test_preprocessing_is_the_training_one(cls_bundle, seg_bundle) -> None:
    """Per-batch inputs equal preprocess_volume of the whole volume (statistics per volume)."""
    volume = make_volume(n=7, size=48)
    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.full((len(x), 1), 5.0)

    cls_bundle.model = Recorder()
    Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=3).analyse(volume)
    assert sum(len(x) for x in seen) == 7 and max(len(x) for x in seen) <= min(3, CPU_FORWARD_BATCH)
    torch.testing.assert_close(torch.cat(seen), preprocess_volume(volume.images, size=32))


def test_mask_probability_is_resized_to_the_source(seg_bundle) -> None:
    volume = make_volume(n=3, size=48)  # model input is 32
    result = Pipeline(None, seg_bundle, device="cpu", precision="fp32").analyse(volume)
    x = preprocess_volume(volume.images, size=32)
    with torch.inference_mode():
        expected = resize_prob(torch.sigmoid(seg_bundle.model(x)[:, 0]), (48, 48)).numpy()
    for s in result.slices:
        assert s.mask_probability.shape == (48, 48) and s.mask.shape == (48, 48)
        assert s.mask_probability.dtype == np.float32
        np.testing.assert_allclose(s.mask_probability, expected[s.index], atol=1e-5)
        np.testing.assert_array_equal(s.mask, s.mask_probability >= 0.5)


def test_streams_in_slice_order_batch_by_batch_with_progress(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=10, size=32)
    events: list[object] = []
    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=4)
    for s in pipe.run(volume, progress=lambda done, total: events.append((done, total))):
        events.append(s.index)
    assert events == [(0, 10), (4, 10), 0, 1, 2, 3, (8, 10), 4, 5, 6, 7, (10, 10), 8, 9]


def test_cancel_event_stops_between_batches(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=10, size=32)
    stop = threading.Event()
    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=4)
    got = []
    with pytest.raises(Cancelled, match="cancelled"):
        for s in pipe.run(volume, cancel=stop):
            got.append(s.index)
            if s.index == 5:
                stop.set()
    assert got == list(range(8))  # the batch in flight finishes, the next never starts


def test_cancel_callable_and_analyse_returns_nothing(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=10, size=32)
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)

    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=4)
    with pytest.raises(Cancelled):
        pipe.analyse(volume, progress=progress, cancel=lambda: len(calls) >= 2)
    assert calls == [0, 4]
    with pytest.raises(Cancelled):  # set before the start: nothing runs
        next(iter(pipe.run(volume, cancel=lambda: True)))
    with pytest.raises(TypeError, match="cancel"):
        pipe.run(volume, cancel=42)


def test_min_area_removes_small_components(volume, seg_bundle) -> None:
    masks = np.zeros((6, 32, 32), bool)
    masks[0, 1:3, 1:4] = True  # 6 px
    masks[0, 10:16, 10:16] = True  # 36 px
    masks[0, 16, 16] = True  # touches the 36 px square diagonally: same component (37 px)
    seg_bundle.model = FakeSegmenter(volume, masks, 32)
    keep_all = Pipeline(None, seg_bundle, device="cpu").analyse(volume)
    assert keep_all.slices[0].area_px == 43
    result = Pipeline(None, seg_bundle, device="cpu", thresholds=Thresholds(min_area_px=7)).analyse(volume)
    assert result.thresholds.min_area_px == 7
    assert result.slices[0].area_px == 37
    assert not result.slices[0].mask[1:3, 1:4].any() and result.slices[0].mask[16, 16]
    assert result.volume_voxels == 37 and result.tumour_slices == 1
    assert (
        Pipeline(None, seg_bundle, device="cpu", thresholds=Thresholds(min_area_px=38))
        .analyse(volume)
        .tumour_slices
        == 0
    )


def test_spacing_gives_mm2_and_ml(seg_bundle) -> None:
    volume = make_volume(n=6, size=32, spacing=(0.5, 0.8), thickness=2.0)
    seg_bundle.model = FakeSegmenter(volume, _blob_masks(6, 32), 32)
    result = Pipeline(None, seg_bundle, device="cpu").analyse(volume)
    for s in result.slices:
        assert s.area_mm2 == pytest.approx(s.area_px * 0.4)
    voxels = sum((i + 2) ** 2 for i in range(6))
    assert result.volume_voxels == voxels
    assert result.volume_ml == pytest.approx(voxels * 0.5 * 0.8 * 2.0 / 1000)

    plain = make_volume(n=6, size=32)
    seg_bundle.model = FakeSegmenter(plain, _blob_masks(6, 32), 32)
    result = Pipeline(None, seg_bundle, device="cpu").analyse(plain)
    assert result.volume_ml is None and all(s.area_mm2 is None for s in result.slices)
    assert result.volume_voxels == voxels


def test_result_reports_device_and_thresholds(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=3, size=32)
    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu", thresholds=Thresholds(gate=0.6, mask=0.3))
    result = pipe.analyse(volume)
    assert result.device == "cpu" and result.thresholds == Thresholds(gate=0.6, mask=0.3, min_area_px=0)
    assert result.segmenter == ModelRef("tiny-seg", seg_bundle.card.weights_sha256)
    assert len(result.slices) == 3 and [s.index for s in result.slices] == [0, 1, 2]
    # slices are plain dataclasses the caller can copy
    assert dataclasses.replace(result.slices[0]).index == 0


def test_flip_tta_averages_the_slice_and_its_mirror(seg_bundle) -> None:
    vol = make_volume(n=3, size=32)
    torch.manual_seed(0)
    for p in seg_bundle.model.parameters():  # an asymmetric random net: its mirror differs
        p.data.normal_(0, 0.3)
    plain = Pipeline(None, seg_bundle, device="cpu", precision="fp32").analyse(vol)
    tta = Pipeline(None, seg_bundle, device="cpu", precision="fp32", flip_tta=True).analyse(vol)
    assert tta.flip_tta and not plain.flip_tta  # results say how they were made
    x = preprocess_volume(vol.images, size=32)
    with torch.no_grad():
        mirrored = torch.sigmoid(seg_bundle.model(x.flip(-1))).flip(-1)[:, 0].numpy()
    for s_plain, s_tta, m in zip(plain.slices, tta.slices, mirrored, strict=True):
        assert s_plain.mask_probability is not None and s_tta.mask_probability is not None
        assert not np.allclose(s_plain.mask_probability, m, atol=1e-3)
        np.testing.assert_allclose(s_tta.mask_probability, (s_plain.mask_probability + m) / 2, atol=1e-4)


def test_confident_classifier_with_an_empty_mask_is_flagged_for_review(volume, fakes, tmp_path) -> None:
    from brainseg_core.export import export_results
    from brainseg_core.inference import ReviewReason, rethreshold

    cls, seg = fakes
    # slices 3 and 5 pass the gate (0.9, 0.7); a minimum area above their 25- and 49-pixel blobs
    # empties their masks
    result = Pipeline(cls, seg, device="cpu", thresholds=Thresholds(gate=0.6, min_area_px=50)).analyse(volume)
    flagged = {s.index: s.review for s in result.slices if s.review is not None}
    assert flagged == {3: ReviewReason.CLASSIFIER_ONLY, 5: ReviewReason.CLASSIFIER_ONLY}
    # lower the minimum area: both masks come back and the flags go
    assert all(s.review is None for s in rethreshold(result, result.thresholds.replace(min_area_px=0)).slices)
    # without a classifier there is no confidence to contradict the segmenter
    alone = Pipeline(None, seg, device="cpu", thresholds=Thresholds(min_area_px=50)).analyse(volume)
    assert all(s.review is None for s in alone.slices)
    # and the report says so
    import csv

    out = export_results(volume, result, tmp_path / "exp", formats=("csv",))
    with open(next(p for p in out if p.name.endswith("_report.csv")), newline="") as f:
        reviews = [r["review"] for r in csv.DictReader(f)]
    from brainseg_core.review import review_reasons

    assert "classifier_only" in reviews[3].split(";") and "classifier_only" in reviews[5].split(";")
    assert reviews == [";".join(r.value for r in why) for why in review_reasons(result, truth=volume.masks)]


def test_regions_outside_the_largest_are_flagged(volume, fakes) -> None:
    from brainseg_core.inference import ReviewReason

    _cls, seg = fakes
    seg.model = FakeSegmenter(volume, _two_regions(6, 32), 32)
    result = Pipeline(None, seg, device="cpu", thresholds=Thresholds(largest_component=True)).analyse(volume)
    assert [s.review for s in result.slices] == [ReviewReason.OUTSIDE_LARGEST_REGION] + [None] * 5


def test_warm_up_runs_every_network_once_and_leaves_the_pipeline_as_it_was(
    volume, cls_bundle, seg_bundle
) -> None:
    calls = {"classifier": 0, "segmenter": 0}
    for name, bundle in (("classifier", cls_bundle), ("segmenter", seg_bundle)):
        bundle.model.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    pipeline = Pipeline(cls_bundle, seg_bundle, device="cpu", thresholds=Thresholds(gate=0.99))
    before = pipeline.analyse(volume)
    calls.update(classifier=0, segmenter=0)
    pipeline.warm_up()
    assert calls["classifier"] >= 1 and calls["segmenter"] >= 1  # the decoder too, whatever the gate
    after = pipeline.analyse(volume)
    assert pipeline.thresholds.gate == 0.99
    assert [s.segmented for s in after.slices] == [s.segmented for s in before.slices]
    for a, b in zip(after.slices, before.slices, strict=True):
        assert a.tumour_probability == pytest.approx(b.tumour_probability)

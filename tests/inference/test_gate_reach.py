"""The gate's reach: a slice is also segmented when a slice within ``gate_reach`` of it passes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.bundle import ModelBundle, load_bundle
from brainseg_core.inference import Pipeline, missing_segmentations, rethreshold
from brainseg_core.result_store import ResultStore
from brainseg_core.results import SliceResult, neighbour_probabilities
from brainseg_core.thresholds import Thresholds
from tests.support import FakeClassifier, make_volume

#: Own probabilities; at gate 0.6 slices 3 and 5 pass on their own, 2 and 4 through a neighbour
#: with reach 1, and 1 too with reach 2.
PROBS = [0.1, 0.5, 0.49, 0.9, 0.0, 0.7]


def test_neighbour_probabilities_take_the_highest_neighbour_without_the_slice_itself() -> None:
    p = np.array([0.1, 0.9, 0.2, 0.0, 0.3])
    np.testing.assert_array_equal(neighbour_probabilities(p, 0), np.zeros(5))
    np.testing.assert_array_equal(neighbour_probabilities(p, 1), [0.9, 0.2, 0.9, 0.3, 0.0])
    np.testing.assert_array_equal(neighbour_probabilities(p, 2), [0.9, 0.2, 0.9, 0.9, 0.2])
    np.testing.assert_array_equal(neighbour_probabilities(np.array([0.8]), 2), [0.0])
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="reach"):
            neighbour_probabilities(p, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one value per slice"):
        neighbour_probabilities(p.reshape(1, 5), 1)


def test_a_slice_passed_by_a_neighbour_is_told_apart() -> None:
    empty = np.zeros((4, 4), bool)
    s = SliceResult(0, 0.2, True, None, empty, 0, None, neighbour_probability=0.7)
    assert s.gate_score == 0.7
    assert s.passed_by_neighbour(0.5)  # below the gate on its own, above it through a neighbour
    assert not s.passed_by_neighbour(0.1)  # passes on its own
    assert not s.passed_by_neighbour(0.8)  # does not pass at all


@pytest.fixture
def volume():
    return make_volume(n=len(PROBS), size=32)


def _pipeline(cls: ModelBundle, seg: ModelBundle, volume, *, reach: int, batch_size: int) -> Pipeline:
    cls.model = FakeClassifier(volume, PROBS, 32)
    t = Thresholds.from_cards(cls.card, seg.card).replace(gate=0.6, gate_reach=reach)
    return Pipeline(cls, seg, thresholds=t, device="cpu", batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 16])
@pytest.mark.parametrize(("reach", "passed"), [(0, {3, 5}), (1, {2, 3, 4, 5}), (2, {1, 2, 3, 4, 5})])
def test_the_pipeline_segments_the_neighbours_of_passing_slices_whatever_the_batch(
    cls_bundle, seg_bundle, volume, reach: int, passed: set[int], batch_size: int
) -> None:
    seen: list[tuple[int, int]] = []
    pipe = _pipeline(cls_bundle, seg_bundle, volume, reach=reach, batch_size=batch_size)
    result = pipe.analyse(volume, progress=lambda done, total: seen.append((done, total)))
    assert [s.index for s in result.slices] == list(range(len(PROBS)))
    assert {s.index for s in result.slices if s.segmented} == passed
    assert {s.index for s in result.slices if s.mask_probability is not None} == passed
    expected = neighbour_probabilities(np.array(PROBS), reach)
    assert [s.neighbour_probability for s in result.slices] == pytest.approx(list(expected), abs=1e-6)
    assert [s.tumour_probability for s in result.slices] == pytest.approx(PROBS, abs=1e-6)
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_new_reach_in_rethreshold_equals_a_fresh_run(cls_bundle, seg_bundle, volume) -> None:
    narrow = _pipeline(cls_bundle, seg_bundle, volume, reach=0, batch_size=1).analyse(volume)
    wide = _pipeline(cls_bundle, seg_bundle, volume, reach=1, batch_size=1)
    fresh = wide.analyse(volume)
    assert missing_segmentations(narrow, fresh.thresholds) == [2, 4]
    again = rethreshold(narrow, fresh.thresholds)
    assert missing_segmentations(again) == [2, 4]
    filled = wide.segment_slices(volume, again)
    assert missing_segmentations(filled) == []
    for a, b in zip(filled.slices, fresh.slices, strict=True):
        assert (a.segmented, a.area_px) == (b.segmented, b.area_px)
        assert a.neighbour_probability == b.neighbour_probability
        np.testing.assert_array_equal(a.mask, b.mask)
    # and back: the neighbours stop counting, their probabilities are kept
    back = rethreshold(filled, narrow.thresholds)
    assert {s.index for s in back.slices if s.segmented} == {3, 5}
    assert all(s.neighbour_probability == 0.0 for s in back.slices)
    assert back.slices[2].mask_probability is not None


def test_a_saved_analysis_comes_back_with_its_neighbours(cls_bundle, seg_bundle, volume, tmp_path) -> None:
    result = _pipeline(cls_bundle, seg_bundle, volume, reach=1, batch_size=2).analyse(volume)
    store = ResultStore(tmp_path / "results")
    store.save(volume, result)
    stored = store.load(volume, segmenter=result.segmenter, classifier=result.classifier)
    assert stored is not None
    back = stored.result
    assert back.thresholds.gate_reach == 1
    assert [s.segmented for s in back.slices] == [s.segmented for s in result.slices]
    assert [s.neighbour_probability for s in back.slices] == pytest.approx(
        [s.neighbour_probability for s in result.slices], abs=1e-6
    )


def test_the_card_ships_the_reach_and_refuses_a_bad_one(tmp_path: Path, tiny_bundle, seg_bundle) -> None:
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card

    card_path = tiny_bundle(tmp_path / "cls.json", "classifier", threshold=0.4)
    update_card(card_path, thresholds={"tumour_probability": 0.4, "gate_reach_slices": 2})
    cls = load_bundle(card_path)
    assert Thresholds.from_cards(cls.card, seg_bundle.card).gate_reach == 2
    assert Thresholds.from_cards(None, seg_bundle.card).gate_reach == 0
    card = read_card(card_path)
    for bad in (-1, 4, 1.5, True):
        with pytest.raises(ValueError, match="gate_reach_slices"):
            thresholds = {"tumour_probability": 0.4, "gate_reach_slices": bad}
            dataclasses.replace(card, thresholds=thresholds).validate()

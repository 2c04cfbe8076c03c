"""MaskEdits: brush, eraser, fill holes, delete region, clear, revert, many-step undo/redo, apply_edits."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_core.edits import EditKind, MaskEdits, apply_edits
from brainseg_core.model_ref import ModelRef
from brainseg_core.results import MaskSource, PatientResult, ReviewReason, SliceResult, rethreshold
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds

EMPTY = np.zeros((32, 32), bool)


def _ring() -> np.ndarray:
    m = np.zeros((32, 32), bool)
    m[8:20, 8:20] = True
    m[11:17, 11:17] = False  # a hole
    m[25:28, 25:28] = True  # a separate small region
    return m


def test_a_brush_stroke_is_one_step_and_leaves_no_gaps() -> None:
    e = MaskEdits()
    assert e.brush(3, EMPTY, (5, 5), 2)
    assert e.brush(3, EMPTY, (5, 25), 2, continues=True, previous=(5, 5))
    m = e.mask(3)
    assert m is not None and m[5, 5:26].all() and not m[10].any()  # a solid line, nothing else
    assert e.mask(3)[3, 5] and not e.mask(3)[2, 5]  # radius 2 around row 5
    e.end_stroke()
    assert e.brush(3, EMPTY, (20, 20), 0)  # a new step: one pixel
    assert e.mask(3).sum() > 1 and e.mask(3)[20, 20]
    assert e.undo() == 3 and not e.mask(3)[20, 20] and e.mask(3)[5, 15]
    assert e.undo() == 3 and e.mask(3) is None and not e.is_edited(3)  # back to the model's mask
    assert e.undo() is None and e.can_redo
    assert e.redo() == 3 and e.mask(3)[5, 15] and not e.mask(3)[20, 20]
    assert e.redo() == 3 and e.mask(3)[20, 20] and not e.can_redo


def test_the_eraser_starts_from_the_models_mask_and_a_noop_is_no_step() -> None:
    base = np.ones((32, 32), bool)
    e = MaskEdits()
    assert not e.brush(0, EMPTY, (5, 5), 3, erase=True) and not e.is_edited(0)  # nothing to erase
    assert e.brush(0, base, (16, 16), 3, erase=True)
    m = e.mask(0)
    assert not m[16, 16] and m[0, 0] and int((~m).sum()) == int(np.count_nonzero(~m[13:20, 13:20]))
    assert e.next_undo() is EditKind.ERASE


def test_fill_holes_delete_region_clear_and_revert() -> None:
    base = _ring()
    e = MaskEdits()
    assert e.fill_holes(1, base) and e.mask(1)[14, 14] and e.mask(1).sum() == 144 + 9
    assert not e.fill_holes(1, base)  # already filled: nothing to do
    assert not e.delete_region(1, base, (0, 0))  # background: nothing deleted
    assert e.delete_region(1, base, (26, 26)) and e.mask(1).sum() == 144
    assert e.clear(1, base) and not e.mask(1).any() and e.is_edited(1)
    assert e.revert(1) and not e.is_edited(1)
    assert [e.undo() for _ in range(4)] == [1, 1, 1, 1]
    assert e.mask(1) is None
    assert e.redo() == 1 and e.mask(1).sum() == 153


def test_adding_a_region_is_one_step_that_undo_takes_back() -> None:
    base = _ring()
    region = np.zeros_like(base)
    region[0:3, 0:3] = True
    e = MaskEdits()
    assert e.add_region(1, base, region) and e.mask(1).sum() == base.sum() + 9
    assert e.next_undo() is EditKind.ADD_REGION
    assert not e.add_region(1, base, region)  # already in the mask: no step
    assert not e.add_region(2, base, base)  # nothing new on another slice either
    assert e.undo() == 1 and e.mask(1) is None
    with pytest.raises(ValueError, match="region"):
        e.add_region(1, base, region[:5])


def test_regions_added_to_several_slices_are_one_step_back_to_the_slice_acted_from() -> None:
    base = np.zeros((8, 8), bool)
    region = np.zeros_like(base)
    region[0:2, 0:2] = True
    e = MaskEdits()
    e.brush(3, base, (6, 6), 0)  # slice 3 was the reader's already
    before3 = e.mask(3)
    assert e.add_regions({1: (base, region), 3: (base, region), 4: (region, region)}, focus=2)
    assert e.edited == [1, 3] and e.next_undo() is EditKind.ADD_REGION_3D  # slice 4 held it already
    assert e.mask(3)[6, 6] and e.mask(3)[0:2, 0:2].all()
    assert not e.add_regions({1: (base, region)}, focus=1)  # nothing new: no step
    assert e.undo() == 2  # the slice it was done from, though unchanged
    assert e.edited == [3] and np.array_equal(e.mask(3), before3)
    assert e.redo() == 2 and e.edited == [1, 3] and e.mask(1)[0:2, 0:2].all()
    assert e.undo() == 2 and e.undo() == 3 and not e  # then the brush stroke
    assert e.add_regions({1: (base, region)}, focus=1) and e.undo() == 1 and e.mask(1) is None
    with pytest.raises(ValueError, match="region"):
        e.add_regions({1: (base, region[:5])}, focus=1)


def test_clearing_an_empty_model_slice_makes_it_the_readers() -> None:
    e = MaskEdits()
    assert e.clear(2, EMPTY) and e.is_edited(2) and not e.mask(2).any()


def test_history_keeps_many_steps_and_forgets_the_oldest() -> None:
    e = MaskEdits(max_steps=50)
    for k in range(60):
        e.brush(0, EMPTY, (k % 32, k // 32), 0)
    undone = 0
    while e.undo() is not None:
        undone += 1
    assert undone == 50 and e.mask(0) is not None and e.mask(0).sum() == 10 and e.mask(0)[:10, 0].all()


def test_a_new_edit_after_undo_drops_the_redo_history() -> None:
    e = MaskEdits()
    e.brush(0, EMPTY, (1, 1), 0)
    e.undo()
    e.brush(0, EMPTY, (2, 2), 0)
    assert not e.can_redo and e.mask(0)[2, 2] and not e.mask(0)[1, 1]


@pytest.mark.parametrize("radius", [-1, 65])
def test_bad_arguments_are_refused(radius: int) -> None:
    with pytest.raises(ValueError, match="radius"):
        MaskEdits().brush(0, EMPTY, (1, 1), radius)
    with pytest.raises(ValueError, match="index"):
        MaskEdits({-1: EMPTY})


def _result() -> PatientResult:
    slices = []
    for i in range(4):
        prob = np.zeros((32, 32), np.float32)
        prob[10:20, 10:20] = 0.9 if i else 0.0
        slices.append(SliceResult(i, 0.9, True, prob, np.zeros((32, 32), bool), 0, None))
    raw = PatientResult("P", slices, Thresholds(), ModelRef("s", "a" * 64), ModelRef("c", "b" * 64), "cpu")
    return rethreshold(raw.with_spacing(Spacing(0.5, 0.5, 2.0)))


def test_apply_edits_puts_the_readers_mask_over_any_thresholds() -> None:
    result = _result()
    assert result.slices[0].review is ReviewReason.CLASSIFIER_ONLY
    e = MaskEdits()
    e.brush(0, result.slices[0].mask, (5, 5), 2)
    e.clear(2, result.slices[2].mask)
    for t in (Thresholds(), Thresholds(mask=0.95), Thresholds(gate=0.99)):
        shown = apply_edits(rethreshold(result, t), e)
        s0, s2 = shown.slices[0], shown.slices[2]
        assert s0.source is MaskSource.READER and s0.area_px == 21 and s0.review is None  # a round disc
        assert s0.area_mm2 == pytest.approx(21 * 0.25)
        assert s2.source is MaskSource.READER and s2.area_px == 0
        assert shown.slices[1].source is MaskSource.MODEL
    assert apply_edits(result, MaskEdits()) is result

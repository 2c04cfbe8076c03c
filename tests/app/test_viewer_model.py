"""ViewerModel: the viewer's Qt-free state, its rules and its events (no display needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from brainseg_app.session import PatientRecord, PatientState
from brainseg_app.viewer_model import OverlayStyle, ViewerModel
from brainseg_core.inference import PatientResult, SliceResult
from brainseg_core.io import PatientFormat, Volume
from brainseg_core.model_ref import ModelRef
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds


def _volume(n: int = 4, spacing: Spacing | None = None) -> Volume:
    masks = np.zeros((n, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    return Volume(
        patient_id="P1",
        source=Path("/x/P1"),
        slice_paths=[Path(f"/x/P1/P1_{i + 1}.tif") for i in range(n)],
        slice_numbers=list(range(1, n + 1)),
        images=np.zeros((n, 8, 8, 3), np.uint8),
        masks=masks,
        spacing=spacing,
    )


def _slice(i: int, p: float, blob: bool) -> SliceResult:
    prob = np.zeros((8, 8), np.float32)
    if blob:
        prob[2:6, 2:6] = 0.7
        prob[5, 5] = 0.95
    return SliceResult(i, p, True, prob, prob >= 0.5, int((prob >= 0.5).sum()), None)


@pytest.fixture
def model() -> ViewerModel:
    m = ViewerModel()
    m.set_patients(Path("/x"), [Path("/x/P1"), Path("/x/P2")], spacing=Spacing(0.5, 0.5, 2.0))
    return m


def _record_events(m: ViewerModel) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []
    for name in ("patient", "volume", "slice", "thresholds", "spacing", "overlay", "results"):
        getattr(m.events, name).connect(lambda v, name=name: seen.append((name, v)))
    return seen


def _analysed(m: ViewerModel) -> None:
    rec = m.current
    assert rec is not None
    t = Thresholds(min_area_px=0)
    rec.start(
        PatientResult("P1", [], t, ModelRef("seg", "0"), ModelRef("cls", "1"), "cpu"), 4, PatientFormat.TIFF
    )
    for i, (p, blob) in enumerate([(0.1, False), (0.9, True), (0.6, True), (0.2, False)]):
        rec.add(_slice(i, p, blob), m.shown_thresholds(rec), m.spacing_for(rec))
    rec.state = PatientState.DONE
    m.apply(rec)


def test_showing_a_patient_reads_its_volume_with_the_dataset_spacing(model) -> None:
    seen = _record_events(model)
    rec = model.records[Path("/x/P1")]
    model.show_patient(rec)
    read = _volume()
    model.set_volume(read)
    assert read.spacing is None  # the volume as read is never changed
    assert model.volume is not None and model.volume.spacing == Spacing(0.5, 0.5, 2.0)
    assert model.index == 2 and rec.n_slices == 4
    assert [name for name, _ in seen] == ["patient", "results", "volume", "slice"]
    # a volume with its own spacing keeps it
    model.show_patient(model.records[Path("/x/P2")])
    own = _volume(spacing=Spacing(1.0, 1.0, 3.0))
    model.set_volume(own)
    assert model.volume.spacing == Spacing(1.0, 1.0, 3.0)


def test_navigation_clamps_and_announces_only_changes(model) -> None:
    model.show_patient(model.records[Path("/x/P1")])
    model.set_volume(_volume())
    seen = _record_events(model)
    assert model.set_slice(99) and model.index == 3
    assert not model.set_slice(3)  # no change, no event
    assert model.step(-5) and model.index == 0
    assert seen == [("slice", 3), ("slice", 0)]
    assert model.truth_flags() == [False, True, False, False]


def test_thresholds_follow_on_the_displayed_patient_and_everywhere_on_apply_all(model) -> None:
    model.show_patient(model.records[Path("/x/P1")])
    model.set_volume(_volume())
    _analysed(model)
    rec = model.current
    assert model.tumour_flags() == [False, True, True, False]
    assert model.index == 2 and model.next_tumour(-1) == 1 and model.next_tumour(1) is None
    seen = _record_events(model)
    model.update_thresholds(gate=0.7)
    assert model.tumour_flags() == [False, True, False, False]  # slice 2 (p=0.6) is below the gate
    assert rec.shown.thresholds.gate == 0.7
    assert ("thresholds", model.thresholds) in seen
    model.update_thresholds(mask=0.9)
    assert rec.shown.slices[1].area_px == 1
    # the largest-region choice waits for a complete analysis, and the minimum area is the patient's
    rec.state = PatientState.RUNNING
    model.update_thresholds(largest_component=True)
    assert not model.shown_thresholds(rec).largest_component
    assert model.shown_thresholds(rec).min_area_px == rec.base.thresholds.min_area_px


def test_dataset_spacing_changes_areas_and_volumes(model) -> None:
    model.show_patient(model.records[Path("/x/P1")])
    model.set_volume(_volume())
    _analysed(model)
    rec = model.current
    assert rec.shown.volume_ml == pytest.approx(rec.shown.volume_voxels * 0.5 * 0.5 * 2.0 / 1000)
    model.set_dataset_spacing(Spacing(1.0, 1.0, 1.0))
    assert model.volume.spacing == Spacing(1.0, 1.0, 1.0)
    assert rec.shown.volume_ml == pytest.approx(rec.shown.volume_voxels / 1000)
    assert rec.shown.slices[1].area_mm2 == rec.shown.slices[1].area_px
    model.set_dataset_spacing(None)
    assert model.volume.spacing is None and rec.shown.volume_ml is None


def test_overlay_style_is_validated_and_announced_once(model) -> None:
    seen = _record_events(model)
    model.set_overlay(opacity=0.8, fill=False)
    model.set_overlay(opacity=0.8)  # unchanged: no event
    assert seen == [("overlay", OverlayStyle(opacity=0.8, fill=False))]
    with pytest.raises(ValueError, match="opacity"):
        model.set_overlay(opacity=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.overlay.fill = True  # type: ignore[misc]


def test_card_thresholds_put_the_users_choices_on_top() -> None:
    t = ViewerModel.card_thresholds(None, None, gate=0.3)
    assert t == Thresholds(gate=0.3)


def test_the_minimum_area_is_the_models_in_each_volumes_pixels(model) -> None:
    """An analysis saved under an earlier card of the same weights (min area 0) is shown with the
    model's minimum area, scaled from its input size to the volume's pixels as the pipeline does."""
    model.show_patient(model.records[Path("/x/P1")])
    model.set_volume(_volume())
    _analysed(model)  # its result says min area 0
    rec = model.current
    model.update_thresholds(min_area_px=12)
    assert model.shown_thresholds(rec).min_area_px == 0  # no model: the result's own
    model.model_input_size = 8  # the 8 x 8 slices at the model's size
    assert model.shown_thresholds(rec).min_area_px == 12
    model.model_input_size = 16  # a quarter of the model's pixels
    assert model.shown_thresholds(rec).min_area_px == 3
    model.apply(rec)
    assert rec.shown.thresholds.min_area_px == 3


def _streaming_with_lesions(
    model: ViewerModel, thresholds: Thresholds, n_slices: int, lesions: list[tuple[int, slice]]
) -> PatientRecord:
    """P1 shown and its analysis started: slices 0-2 streamed in, the tumour on 1-2 and, on slice 2,
    lesions of their own (``(row, columns)`` at probability 0.8) apart from it."""
    model.show_patient(model.records[Path("/x/P1")])
    model.set_volume(_volume(max(n_slices, 4)))
    model.set_thresholds(thresholds)
    rec = model.current
    assert rec is not None
    prob = _slice(2, 0.6, True).mask_probability.copy()
    for row, cols in lesions:
        prob[row, cols] = 0.8
    second = dataclasses.replace(_slice(2, 0.6, True), mask_probability=prob)
    rec.start(
        PatientResult("P1", [], model.thresholds, ModelRef("seg", "0"), ModelRef("cls", "1"), "cpu"),
        n_slices,
        PatientFormat.TIFF,
    )
    for s in (_slice(0, 0.1, False), _slice(1, 0.9, True), second):
        rec.add(s, model.shown_thresholds(rec), model.spacing_for(rec))
    return rec


def _add_lesion_slices(model: ViewerModel, rec: PatientRecord, indices: tuple[int, ...]) -> None:
    """Stream in slices ``indices`` without tumour but with a lesion at row 7, columns 1-2 (p 0.8)."""
    for i in indices:
        s = _slice(i, 0.6, False)
        prob = s.mask_probability.copy()
        prob[7, 1:3] = 0.8
        rec.add(
            dataclasses.replace(s, mask_probability=prob), model.shown_thresholds(rec), model.spacing_for(rec)
        )


def test_an_outline_the_largest_region_sets_aside_is_shown_and_can_be_kept(model) -> None:
    from brainseg_core.edits import EditKind
    from brainseg_core.results import MaskSource

    model.model_input_size = 4  # the card's minimum area, 1 px at 4 x 4, is 4 px of these 8 x 8 slices
    # a lesion of 2 px, under the minimum area, and another of 4 px
    rec = _streaming_with_lesions(
        model, Thresholds(min_area_px=1, largest_component=True), 4, [(0, slice(6, 8)), (7, slice(0, 4))]
    )
    model.set_slice(2)
    assert model.set_aside_outline() is None  # the analysis is still running: no whole-volume step yet
    rec.add(_slice(3, 0.2, False), model.shown_thresholds(rec), model.spacing_for(rec))
    rec.state = PatientState.DONE
    model.apply(rec)
    aside = model.set_aside_outline()
    assert aside is not None and np.argwhere(aside).tolist() == [[7, 0], [7, 1], [7, 2], [7, 3]]
    assert model.set_aside_outline() is aside  # asked again for the same slice: not recomputed
    shown = rec.slice_shown(2)
    assert shown is not None and not (shown.mask & aside).any()  # not counted
    assert rec.shown is not None and rec.shown.volume_voxels == 2 * 16
    # queued for another run, the patient still shows what it showed: so does the outline
    rec.state = PatientState.QUEUED
    assert model.set_aside_outline() is aside
    model.set_slice(1)
    assert model.set_aside_outline() is None and not model.edit(EditKind.ADD_REGION)
    model.set_slice(2)
    assert model.edit(EditKind.ADD_REGION)
    kept = rec.slice_shown(2)
    assert kept is not None and kept.source is MaskSource.READER and kept.mask[aside].all()
    assert model.set_aside_outline() is None  # the reader's mask now holds it
    model.undo()
    after_undo = model.set_aside_outline()
    assert after_undo is not None and np.array_equal(after_undo, aside)  # shown again


def test_the_set_aside_outline_stays_beside_the_readers_own_edit(model) -> None:
    from brainseg_app.viewer_model import EditTool
    from brainseg_core.edits import EditKind

    rec = _streaming_with_lesions(
        model,
        Thresholds(min_area_px=0, largest_component=True),
        3,
        [(7, slice(0, 4))],  # a second lesion
    )
    rec.state = PatientState.DONE
    model.apply(rec)
    model.set_slice(2)
    aside = model.set_aside_outline()
    assert aside is not None and int(aside.sum()) == 4
    model.set_tool(EditTool.ERASER)
    model.set_brush_radius(0)
    assert model.paint(3, 3)  # the reader touches up the kept tumour
    model.end_stroke()
    still = model.set_aside_outline()
    assert still is not None and np.array_equal(still, aside)
    assert model.edit(EditKind.ADD_REGION)
    kept = rec.slice_shown(2)
    assert kept is not None and kept.mask[aside].all() and not kept.mask[3, 3]  # the erase stays
    assert model.set_aside_outline() is None


def test_a_set_aside_region_is_kept_on_all_its_slices_in_one_step(model) -> None:
    from brainseg_core.edits import EditKind
    from brainseg_core.results import MaskSource

    # on slice 2, a second lesion (row 7) and a third (top right); the second goes on to slice 3
    rec = _streaming_with_lesions(
        model, Thresholds(min_area_px=0, largest_component=True), 4, [(7, slice(0, 4)), (0, slice(6, 8))]
    )
    _add_lesion_slices(model, rec, (3,))
    rec.state = PatientState.DONE
    model.apply(rec)
    model.set_slice(3)
    region = model.set_aside_region()
    assert sorted(region) == [2, 3]
    assert np.argwhere(region[2]).tolist() == [[7, 0], [7, 1], [7, 2], [7, 3]]  # not the third lesion
    assert np.argwhere(region[3]).tolist() == [[7, 1], [7, 2]]
    assert model.edit(EditKind.ADD_REGION_3D)
    for j in (2, 3):
        kept = rec.slice_shown(j)
        assert kept is not None and kept.source is MaskSource.READER and kept.mask[region[j]].all()
    assert not rec.slice_shown(2).mask[0, 6:8].any()  # the third lesion stays set aside
    assert model.set_aside_region() == {} and not model.edit(EditKind.ADD_REGION_3D)
    model.set_slice(1)
    assert model.undo() == 3 and model.index == 3  # one step, back to the slice it was done from
    assert all(rec.slice_shown(j).source is MaskSource.MODEL for j in (2, 3))
    model.set_slice(1)
    assert model.set_aside_region() == {}  # slice 1 has no dotted outline


def test_a_set_aside_region_is_found_through_a_slice_the_reader_kept_and_spares_edited_slices(model) -> None:
    from brainseg_core.edits import EditKind
    from brainseg_core.results import MaskSource

    # a second lesion (row 7) on slices 2-4, apart from the tumour on slices 1-2
    rec = _streaming_with_lesions(
        model, Thresholds(min_area_px=0, largest_component=True), 5, [(7, slice(0, 4))]
    )
    _add_lesion_slices(model, rec, (3, 4))
    rec.state = PatientState.DONE
    model.apply(rec)
    model.set_slice(3)
    assert model.edit(EditKind.ADD_REGION)  # K on the middle slice first
    model.set_slice(2)
    assert sorted(model.set_aside_region()) == [2, 4]  # the kept slice 3 does not cut the region
    assert model.edit(EditKind.ADD_REGION_3D)
    assert all(rec.slice_shown(j).source is MaskSource.READER for j in (2, 3, 4))
    assert model.undo() == 2
    model.set_slice(4)
    assert model.edit(EditKind.CLEAR)  # the reader says: nothing on slice 4
    model.set_slice(2)
    assert sorted(model.set_aside_region()) == [2]  # slice 4 keeps the reader's (empty) mask
    assert model.edit(EditKind.ADD_REGION_3D) and not rec.slice_shown(4).mask.any()
    # on slice 3, which the reader kept, nothing is dotted: nothing to keep
    model.undo()
    model.set_slice(3)
    assert model.set_aside_outline() is None and model.set_aside_region() == {}  # slice 3 holds it

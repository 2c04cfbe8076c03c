"""Review and correct in the window: the review queue, painting with the mouse, undo/redo, and edits
that survive re-thresholding, re-runs and a restart and flow out as the reader's."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox

from brainseg_app.session import PatientState
from brainseg_app.viewer_model import EditTool
from brainseg_core.edits import EditKind
from brainseg_core.results import MaskSource

pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")


def _analysed(w) -> bool:
    return w.current is not None and w.current.state is PatientState.DONE and not w.is_busy()


def _open(qtbot, w, path: Path) -> None:
    assert w.open_path(path)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)


def _key(w, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    w.view.setFocus()
    QTest.keyClick(w.view, key, modifier)
    QApplication.processEvents()


def _at(w, row: int, col: int) -> QPoint:
    return w.view.viewport_pos(row, col).toPoint()


def _drag(qtbot, w, points: list[tuple[int, int]]) -> None:
    """Press the left button on the first image pixel, move through the others, release."""
    vp = w.view.graphics.viewport()
    left = Qt.MouseButton.LeftButton
    qtbot.mousePress(vp, left, pos=_at(w, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(vp, pos=_at(w, *p))
    qtbot.mouseRelease(vp, left, pos=_at(w, *points[-1]))
    QApplication.processEvents()


def _outlined_slice(w) -> int:
    return next(s.index for s in w.current.shown.slices if s.area_px > 0)


def test_painting_with_the_mouse_undo_redo_and_what_survives(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    w = make_window(scripted_models)
    _open(qtbot, w, fixture_patient)
    rec = w.current
    i = _outlined_slice(w)
    w.set_slice(i)
    w.view.fit()
    model_mask = rec.slice_shown(i).mask.copy()
    assert not model_mask[20:30, 20:120].any()  # the disc sits in the middle

    _key(w, Qt.Key.Key_B)  # brush
    assert w.model.tool is EditTool.BRUSH and w.actions_by_name["tool_brush"].isChecked()
    w.brush_spin.setValue(3)
    assert w.model.brush_radius == 3
    before_range = w.view.vb.viewRange()
    _drag(qtbot, w, [(25, 30), (25, 60), (25, 100)])
    s = rec.slice_shown(i)
    assert s.source is MaskSource.READER and s.mask[25, 30:101].all() and s.mask[22, 50]
    assert not s.mask[18, 50] and (s.mask & ~model_mask).sum() > 3 * 70  # one stroke, no gaps
    assert w.view.vb.viewRange() == before_range  # painting did not pan
    assert w.view.pred.outline.pen().style() == Qt.PenStyle.CustomDashLine  # the reader's outline
    assert "Reader's mask" in w.view.corner_text("tl")
    assert w.thumbnails.marks()[1][i] and rec.edits.edited == [i]

    _key(w, Qt.Key.Key_E)  # eraser: erase a hole in the middle of the disc
    assert w.model.tool is EditTool.ERASER and not w.actions_by_name["tool_brush"].isChecked()
    _drag(qtbot, w, [(128, 128)])
    assert not rec.slice_shown(i).mask[128, 128]

    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the eraser
    assert rec.slice_shown(i).mask[128, 128]
    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the stroke: the model's again
    assert rec.slice_shown(i).source is MaskSource.MODEL
    assert np.array_equal(rec.slice_shown(i).mask, model_mask)
    assert w.view.pred.outline.pen().style() == Qt.PenStyle.SolidLine
    mods = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    _key(w, Qt.Key.Key_Z, mods)  # redo both
    _key(w, Qt.Key.Key_Z, mods)
    assert rec.slice_shown(i).mask[25, 60] and not rec.slice_shown(i).mask[128, 128]

    # The edit survives a re-threshold...
    w.controls.mask_threshold.setValue(990)
    w._thresholds_settled()
    assert rec.slice_shown(i).source is MaskSource.READER and rec.slice_shown(i).mask[25, 60]
    w.use_model_thresholds()
    # ...and a re-run of the analysis, which never replaces it.
    w.run_current()
    qtbot.waitUntil(lambda: rec.state is PatientState.RUNNING or _analysed(w), timeout=5_000)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    assert rec.slice_shown(i).source is MaskSource.READER and rec.slice_shown(i).mask[25, 60]
    assert "kept on 1 edited slice" in w.statusBar().currentMessage()

    # Delete a region with a click, and leave edit mode by pressing the tool's key again.
    _key(w, Qt.Key.Key_D)
    _drag(qtbot, w, [(100, 128)])  # the disc goes, the separate stroke stays
    assert not rec.slice_shown(i).mask[100, 128] and rec.slice_shown(i).mask[25, 60]
    assert rec.slice_shown(i).area_px == int((rec.slice_shown(i).mask[:40]).sum())
    _key(w, Qt.Key.Key_D)
    assert w.model.tool is None and w.view.edit_tool is None


def test_edits_are_exported_as_the_readers_and_survive_a_restart(
    make_window, fixture_patient, scripted_models, qtbot, tmp_path
) -> None:
    w = make_window(scripted_models)
    _open(qtbot, w, fixture_patient)
    rec, pid = w.current, w.current.patient_id
    i = _outlined_slice(w)
    w.set_slice(i)
    w.model.set_tool(EditTool.BRUSH)
    w.view.fit()
    _drag(qtbot, w, [(30, 30)])
    w.set_slice(i + 1)
    w.edit(EditKind.CLEAR)
    w.toggle_reviewed()  # M: a reviewed slice is kept too
    reviewed = w.index

    from brainseg_core.export import export_results

    out = export_results(w.volume, rec.shown, tmp_path / "out", formats=["tif", "csv"])
    folder = out[0].parent
    rows = list(csv.DictReader((folder / f"{pid}_report.csv").read_text().splitlines()))
    assert [r["mask_source"] for r in rows].count("reader") == 2 and rows[i]["mask_source"] == "reader"
    sidecar = json.loads((folder / "brainseg_export.json").read_text())
    assert sidecar["mask_sources"][i]["source"] == "reader"

    written = w.save_corrections(tmp_path / "training")
    assert (tmp_path / "training" / pid / "brainseg_corrections.json") in written
    w.close()  # saves the reader's work

    w2 = make_window(scripted_models)
    _open(qtbot, w2, fixture_patient)
    rec2 = w2.current
    assert rec2.edits.edited == [i, i + 1] and rec2.reviewed == {reviewed}
    assert rec2.slice_shown(i).source is MaskSource.READER and rec2.slice_shown(i).mask[30, 30]
    assert rec2.slice_shown(i + 1).area_px == 0


def test_the_review_queue_keys_marks_and_count(make_window, fixture_patient, scripted_models, qtbot) -> None:
    w = make_window(scripted_models)
    _open(qtbot, w, fixture_patient)
    rec = w.current
    queue = rec.review_queue()
    assert queue, "the fixture patient has slices to review (ground truth disagrees with the disc)"
    assert w.browser.rows()[0][3] == str(len(queue))
    assert w.thumbnails.marks()[0] == [k in queue for k in range(rec.n_slices)]
    w.set_slice(0)
    _key(w, Qt.Key.Key_R)
    first = w.index
    assert first == next(k for k in queue if k > 0) or first == queue[0]
    if first > 0:  # an ordinary step says nothing of going round
        assert "from the" not in w.statusBar().currentMessage()
    assert "Review" in w.results.slice_label.text()
    assert w.results.review_marks.data["x"].tolist() == [k + 1 for k in queue]
    _key(w, Qt.Key.Key_M)  # reviewed: it leaves the queue
    assert first in rec.reviewed and first not in rec.review_queue()
    assert w.results.reviewed.isChecked() and w.browser.rows()[0][3] == str(len(queue) - 1)
    w.results.reviewed.click()  # the button puts it back
    assert first not in rec.reviewed
    # R goes round: from the last slice to review to the first one, and Shift+R back
    assert len(queue) >= 2
    w.set_slice(queue[-1])
    _key(w, Qt.Key.Key_R)
    assert w.index == queue[0] and "from the first" in w.statusBar().currentMessage()
    _key(w, Qt.Key.Key_R, Qt.KeyboardModifier.ShiftModifier)
    assert w.index == queue[-1] and "from the last" in w.statusBar().currentMessage()
    # the only slice left to review is the one on screen: it says so, and stays
    for k in queue[:-1]:
        rec.reviewed.add(k)
    _key(w, Qt.Key.Key_R)
    assert w.index == queue[-1] and "the only slice left" in w.statusBar().currentMessage()
    rec.reviewed.difference_update(queue)

    # while a patient's slices stream in, its queue is not counted (it needs every slice); a run
    # stopped half-way shows the count of what it analysed
    base, n = rec.base, rec.n_slices
    rec.start(dataclasses.replace(base, slices=[]), n, rec.format)
    for k in range(queue[0] + 1):
        rec.add(base.slices[k], w.model.shown_thresholds(rec), None)
    rec.state = PatientState.RUNNING
    w.browser.update_record(rec)
    assert not rec.complete and w.browser.rows()[0][3] == ""
    rec.state = PatientState.CANCELLED
    w.browser.update_record(rec)
    assert w.browser.rows()[0][3] == str(len(rec.review_queue())) != "0"
    _key(w, Qt.Key.Key_R, Qt.KeyboardModifier.ShiftModifier)  # from queue[-1]: the partial queue's last
    message = w.statusBar().currentMessage()
    assert w.index == rec.review_queue()[-1] and "from the" not in message
    assert "the analysis was stopped: only its analysed slices" in message


def test_a_patient_analysed_unopened_brings_its_saved_edits(
    make_window, lgg_fixture_root, scripted_models, qtbot
) -> None:
    from brainseg_core.io import open_volume
    from brainseg_core.result_store import ReaderWork

    w = make_window(scripted_models)
    second = sorted(p for p in lgg_fixture_root.iterdir() if p.is_dir())[1]
    volume = open_volume(second)
    mine = np.zeros(volume.shape, bool)
    mine[5:9, 5:9] = True
    w.analyser.store.save_reader_work(volume, ReaderWork({2: mine}, frozenset({4})))
    assert w.open_path(lgg_fixture_root)
    w.analyse_all()
    rec = next(r for r in w.records.values() if r.path.name == second.name)
    qtbot.waitUntil(lambda: rec.state is PatientState.DONE and not w.is_busy(), timeout=30_000)
    assert rec is not w.current and rec.edits.edited == [2] and rec.reviewed == {4}
    assert rec.slice_shown(2).source is MaskSource.READER and rec.slice_shown(2).area_px == 16


def _open_with_a_spot(make_window, scripted_models, qtbot, patient: Path):
    """A window whose segmenter outlines a disc and, apart from it, a small spot on the same slices
    (the spot is what the largest-region option sets aside), with ``patient`` open and analysed."""
    from tests.support import DiscAndSpotSegmenter

    cls, seg = scripted_models
    w = make_window((cls, dataclasses.replace(seg, model=DiscAndSpotSegmenter())))
    _open(qtbot, w, patient)
    return w


def test_an_outline_set_aside_by_the_largest_region_is_drawn_dotted_and_kept_with_k(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    w = _open_with_a_spot(make_window, scripted_models, qtbot, fixture_patient)
    keep = w.actions_by_name["keep_set_aside"]
    i = _outlined_slice(w)
    w.set_slice(i)
    assert not w.view.aside.outline.isVisible() and not keep.isEnabled()  # the option is off
    w.controls.largest_component.setChecked(True)
    w.set_slice(i)
    spot = w.view.aside.mask
    assert spot is not None and spot.any() and not (spot & w.current.slice_shown(i).mask).any()
    assert w.view.aside.outline.isVisible() and not w.view.aside.fill.isVisible()
    assert w.view.aside.outline.pen().dashPattern() == [1.0, 2.0]  # dotted, unlike the reader's dashes
    assert keep.isEnabled() and f"Dotted: {int(spot.sum())} px" in w.results.slice_label.text()
    _key(w, Qt.Key.Key_K)
    kept = w.current.slice_shown(i)
    assert kept.source is MaskSource.READER and (kept.mask & spot).sum() == spot.sum()
    assert not w.view.aside.outline.isVisible() and not keep.isEnabled()
    qtbot.waitUntil(lambda: "Dotted" not in w.results.slice_label.text())  # the numbers follow
    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.current.slice_shown(i).source is MaskSource.MODEL and w.view.aside.outline.isVisible()
    assert keep.isEnabled()
    # another patient: nothing of this one is kept while it is read, or after
    other = sorted(p for p in fixture_patient.parent.iterdir() if p.is_dir())[1]
    assert w.open_path(other)
    assert not keep.isEnabled()
    qtbot.waitUntil(lambda: _analysed(w) and w.current.path == other, timeout=20_000)
    w.controls.largest_component.setChecked(False)
    assert not keep.isEnabled() and not w.view.aside.outline.isVisible()


def test_shift_k_keeps_the_set_aside_region_on_all_its_slices_and_ctrl_z_takes_it_back(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    from brainseg_core.results import set_aside

    w = _open_with_a_spot(make_window, scripted_models, qtbot, fixture_patient)
    w.controls.largest_component.setChecked(True)
    rec = w.current
    t = rec.model_shown.thresholds
    spotted = [s.index for s in rec.model_shown.slices if set_aside(s, t) is not None]
    assert len(spotted) >= 2  # the spot runs through the outlined slices
    keep_all = w.actions_by_name["keep_set_aside_all"]
    w.set_slice(spotted[-1])
    assert keep_all.isEnabled()
    _key(w, Qt.Key.Key_K, Qt.KeyboardModifier.ShiftModifier)
    for j in spotted:
        shown, spot = rec.slice_shown(j), set_aside(rec.model_slice(j), t)
        assert shown.source is MaskSource.READER and shown.mask[spot].all()
    assert not keep_all.isEnabled() and not w.view.aside.outline.isVisible()
    untouched = [s for s in rec.shown.slices if s.index not in spotted]
    assert all(s.source is MaskSource.MODEL for s in untouched)
    w.set_slice(spotted[0])
    _key(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step takes it all back
    assert all(rec.slice_shown(j).source is MaskSource.MODEL for j in spotted)
    assert w.index == spotted[-1] and keep_all.isEnabled() and w.view.aside.outline.isVisible()


def test_edits_whose_save_failed_are_saved_later_even_after_other_patients_changed(
    make_window, lgg_fixture_root, scripted_models, qtbot, messages, monkeypatch
) -> None:
    from brainseg_core.io import open_volume
    from brainseg_core.result_store import ResultStore

    w = make_window(scripted_models)
    _open(qtbot, w, lgg_fixture_root)
    first = w.current
    save = ResultStore.save_reader_work

    def full_disc(self, volume, work):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultStore, "save_reader_work", full_disc)
    w.set_slice(3)
    w.toggle_reviewed()
    w.save_reader_work()  # fails: kept in memory
    assert "could not be saved" in w.statusBar().currentMessage()
    second = next(p for p in w.records if p != first.path)
    w.open_patient(second)
    qtbot.waitUntil(lambda: _analysed(w) and w.current.path == second, timeout=20_000)
    w.set_slice(5)
    w.toggle_reviewed()
    w.save_reader_work()  # fails again, for both
    messages.answer = QMessageBox.StandardButton.No
    assert not w.confirm_quit()  # quitting now would lose both
    assert first.patient_id in messages.questions[-1] and w.current.patient_id in messages.questions[-1]

    monkeypatch.setattr(ResultStore, "save_reader_work", save)  # the disc has room again
    w.set_slice(6)
    w.toggle_reviewed()  # the next change saves both patients' work
    qtbot.waitUntil(lambda: not w.reader_work.unsaved, timeout=5_000)
    assert w.analyser.store.load_reader_work(open_volume(first.path)).reviewed == {3}
    assert w.analyser.store.load_reader_work(open_volume(second)).reviewed == {5, 6}
    assert w.confirm_quit()


def test_work_whose_save_failed_survives_other_series_and_a_reopened_folder(
    make_window, fixture_patient, scripted_models, qtbot, messages, monkeypatch, tmp_path, flair_series_pick
) -> None:
    from brainseg_core.io import open_volume
    from brainseg_core.result_store import ResultStore
    from tests.dicom_support import AXIAL, make_geometry, write_study

    tiff = open_volume(fixture_patient)
    built = write_study(tmp_path / "study", tiff.images, make_geometry(tiff.images.shape[:3], AXIAL))
    w = make_window(scripted_models)
    _open(qtbot, w, built.folder)
    first_series = w.volume
    w.set_slice(3)
    w.toggle_reviewed()
    w.save_reader_work()
    assert w.analyser.store.load_reader_work(first_series).reviewed == {3}

    save = ResultStore.save_reader_work

    def full_disc(self, volume, work):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultStore, "save_reader_work", full_disc)
    w.set_slice(4)
    w.toggle_reviewed()  # not saved: the disc is full
    flair_series_pick[0] = built.series_uids["AX T1 POST GAD"]
    assert w.series_dialog()  # other series: the first series' unsaved work is kept aside
    qtbot.waitUntil(lambda: _analysed(w) and w.volume is not first_series, timeout=20_000)
    assert w.current.reviewed == set()
    w.set_slice(7)
    w.toggle_reviewed()  # work on the new series does not replace the first series' unsaved work
    w.save_reader_work()
    assert len(w.reader_work.unsaved) == 2

    flair_series_pick[0] = None
    w.open_path(built.folder)  # the folder again: new records, the series chosen last remembered
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    # read with its unsaved work rather than the older copy on the disc (none here)
    assert w.current.reviewed == {7}

    monkeypatch.setattr(ResultStore, "save_reader_work", save)  # the disc has room again
    w.save_reader_work()
    assert w.reader_work.unsaved == []
    assert w.analyser.store.load_reader_work(first_series).reviewed == {3, 4}
    assert w.analyser.store.load_reader_work(w.volume).reviewed == {7}
